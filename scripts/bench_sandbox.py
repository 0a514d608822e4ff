"""Sandbox throughput: executions per second for ``print(1)`` and for a HumanEval program under
each backend, next to plain unsandboxed ``python`` subprocesses measured in the same run, and
the time to evaluate pass@1 of the 164 canonical HumanEval solutions.

    python scripts/bench_sandbox.py --runs 40 --backends local,http,docker

Two baselines, both measured in this run: ``python -I -c 'print(1)'`` (issue 13's target: the
local backend at >= 0.75x of it, seccomp on) and ``python -E -s -S main.py`` — the sandbox's own
interpreter flags (no ``site``), the stricter comparison, whose ratio is the sandbox's overhead
alone. Numbers are ratios against a baseline of the same run (the machine is shared; absolute
numbers drift). Backends that cannot run here are reported as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _plain_runs(code: str, n: int) -> float:
    """Runs/s of an unsandboxed ``python -E -s -S main.py`` subprocess (the baseline)."""
    from agentsd.sandbox.types import PY_FLAGS

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(code)
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run([sys.executable, *PY_FLAGS, path], cwd=d, capture_output=True, check=True)
        return n / (time.perf_counter() - t0)


def _isolated_runs(n: int) -> float:
    """Runs/s of a bare ``python -I -c 'print(1)'`` (isolated mode, with ``site``)."""
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-I", "-c", "print(1)"], capture_output=True, check=True)
    return n / (time.perf_counter() - t0)


def _sandbox_runs(backend, code: str, n: int, concurrency: int) -> tuple[float, int]:
    from agentsd.sandbox import ExecRequest, Limits
    from agentsd.sandbox.pool import SandboxPool

    reqs = [ExecRequest(code=code, limits=Limits(wall_s=30)) for _ in range(n)]
    with SandboxPool(backend, size=concurrency) as pool:  # a passed-in backend stays open
        t0 = time.perf_counter()
        results = pool.map(reqs)
        rate = n / (time.perf_counter() - t0)
    return rate, sum(not r.ok for r in results)


def _make(name: str, concurrency: int):
    from agentsd.sandbox import get_backend

    if name == "local":
        return get_backend("local", slots=concurrency), None
    if name == "docker":
        return get_backend("docker", slots=concurrency), None
    if name == "http":
        from agentsd.sandbox.server import ServerConfig, serve_in_thread

        srv = serve_in_thread(ServerConfig(concurrency=concurrency, token="bench-token-1234"))
        return get_backend("http", url=srv.url, token="bench-token-1234"), srv
    raise SystemExit(f"unknown backend {name!r}; choose from local, http, docker")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40, help="executions per measurement (default 40)")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                    help="concurrent runs for the parallel measurements (default: CPU count)")
    ap.add_argument("--backends", default="local,http,docker", help="comma-separated backends")
    ap.add_argument("--canonical", default="local",
                    help="backends that also time pass@1 of the 164 canonical solutions ('' for none)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1:
        raise SystemExit("--runs and --concurrency must be >= 1")

    from agentsd.code_eval import evaluate, load_problems, load_samples, program_for
    from agentsd.sandbox import ExecRequest

    probs = load_problems("humaneval")
    he_code = program_for(probs["HumanEval/0"], {"completion": probs["HumanEval/0"].canonical_solution})
    programs = {"print(1)": "print(1)\n", "HumanEval/0": he_code}
    out: dict = {"runs": args.runs, "concurrency": args.concurrency, "cpus": os.cpu_count(),
                 "baseline": {}, "backends": {}}
    out["python -I -c print(1)"] = _isolated_runs(args.runs)
    print(f"baseline python -I -c 'print(1)'        {out['python -I -c print(1)']:7.2f} runs/s")
    for label, code in programs.items():
        out["baseline"][label] = _plain_runs(code, args.runs)
        print(f"baseline python -E -s -S main.py {label:12s} {out['baseline'][label]:7.2f} runs/s")
    for name in [b for b in args.backends.split(",") if b]:
        try:
            backend, srv = _make(name, args.concurrency)
            probe_res = backend.run(ExecRequest(code="print(1)"))  # also warms up (image build)
            if name == "local":
                row_desc = backend.describe()
                print(f"local    seccomp={'on' if backend.seccomp else 'off'} cgroups={row_desc['cgroups']} "
                      f"mode={row_desc['mode']}")
            if not probe_res.ok:
                raise RuntimeError(f"{probe_res.status.value}: {probe_res.detail}")
        except Exception as e:  # noqa: BLE001 - report and go on with the other backends
            out["backends"][name] = {"skipped": f"{type(e).__name__}: {e}"}
            print(f"{name:8s} skipped: {type(e).__name__}: {e}")
            continue
        row: dict = {}
        try:
            for label, code in programs.items():
                for conc in sorted({1, args.concurrency}):
                    rate, bad = _sandbox_runs(backend, code, args.runs, conc)
                    key = f"{label} c={conc}"
                    row[key] = {"runs_per_s": rate, "ratio_vs_baseline": rate / out["baseline"][label],
                                "not_ok": bad}
                    extra = ""
                    if label == "print(1)":
                        row[key]["ratio_vs_python_I"] = rate / out["python -I -c print(1)"]
                        extra = f", {row[key]['ratio_vs_python_I']:.2f}x of python -I -c"
                    print(f"{name:8s} {key:18s} {rate:7.2f} runs/s  "
                          f"({rate / out['baseline'][label]:.2f}x of python -E -s -S{extra})  failures={bad}")
            if name in args.canonical.split(","):
                t0 = time.perf_counter()
                summary, _ = evaluate(probs, load_samples("canonical", probs), backend=backend,
                                      workers=args.concurrency, progress=False)
                row["canonical_pass@1"] = summary["pass@1"]
                row["canonical_eval_s"] = time.perf_counter() - t0
                print(f"{name:8s} pass@1 of 164 canonical solutions = {summary['pass@1']:.3f} in "
                      f"{row['canonical_eval_s']:.1f}s (concurrency {args.concurrency})")
        finally:
            backend.close()
            if srv is not None:
                srv.stop()
        out["backends"][name] = row
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
