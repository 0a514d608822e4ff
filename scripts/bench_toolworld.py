"""Benchmark ToolWorld: reset time, API calls per second through ``env.step`` and grading time.

Replays gold call sequences (real, successful API calls of every template) per difficulty and
reports:

- ``reset_ms``: world generation + task setup + gold solving, per episode;
- ``step_calls_per_s``: API calls per second through ``env.step`` (parsing, dispatch, JSON
  results, progress tracking), one call per step as OpenAI ``tool_calls`` messages;
- ``raw_calls_per_s``: the same calls straight into :func:`call_api` on a copy of the world —
  the baseline, measured in the same run; ``step_overhead`` is raw / step;
- ``grade_ms``: the state diff and checks at ``complete_task``.

    python scripts/bench_toolworld.py --episodes 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def bench(difficulty: str, episodes: int) -> dict:
    """Run ``episodes`` gold replays at one difficulty; return the timings."""
    from agentsd.envs.toolworld.api import call_api
    from agentsd.envs.toolworld.env import ToolWorldEnv

    env = ToolWorldEnv(difficulty=difficulty, task_split="all")
    reset_s = step_s = raw_s = grade_s = 0.0
    calls = 0
    for seed in range(episodes):
        t = time.perf_counter()
        env.reset(seed=seed)
        reset_s += time.perf_counter() - t
        world = env.before.copy()
        app_calls = [g for g in env.gold if g.name != "complete_task"]
        t = time.perf_counter()
        for g in app_calls:  # baseline: dispatch only
            call_api(world, g.name, g.arguments)
        raw_s += time.perf_counter() - t
        msgs = [{"role": "assistant", "content": "", "tool_calls": [{"id": "b", "type": "function", "function": {
            "name": g.name, "arguments": json.dumps(g.arguments)}}]} for g in env.gold]
        t = time.perf_counter()
        for m in msgs[:-1]:
            env.step(m)
        step_s += time.perf_counter() - t
        t = time.perf_counter()
        _, _, terminated, _, info = env.step(msgs[-1])
        grade_s += time.perf_counter() - t
        if not (terminated and info["success"]):
            raise RuntimeError(f"gold replay failed for {env.task_id}: {info.get('grade')}")
        calls += len(app_calls)
    return {"difficulty": difficulty, "episodes": episodes, "api_calls": calls,
            "reset_ms": round(1000 * reset_s / episodes, 2),
            "step_calls_per_s": round(calls / step_s),
            "raw_calls_per_s": round(calls / raw_s),
            "step_overhead": round((step_s / calls) / (raw_s / calls), 2),
            "grade_ms": round(1000 * grade_s / episodes, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ToolWorld throughput: resets, API calls/s through env.step "
                                            "(vs. raw dispatch in the same run), grading time.")
    p.add_argument("--episodes", type=int, default=100, help="gold-replay episodes per difficulty")
    p.add_argument("--difficulty", choices=["easy", "medium", "hard", "all"], default="all",
                   help="which difficulty preset(s) to measure")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeat each measurement and keep the best (shared machines are noisy)")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.repeats < 1:
        p.error("--episodes and --repeats must be >= 1")
    diffs = ["easy", "medium", "hard"] if args.difficulty == "all" else [args.difficulty]
    print(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                      "repeats": args.repeats}))
    for d in diffs:
        runs = [bench(d, args.episodes) for _ in range(args.repeats)]
        best = dict(runs[0])
        for k in ("reset_ms", "grade_ms"):
            best[k] = min(r[k] for r in runs)
        for k in ("step_calls_per_s", "raw_calls_per_s"):
            best[k] = max(r[k] for r in runs)
        best["step_overhead"] = round(best["raw_calls_per_s"] / best["step_calls_per_s"], 2)
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
