"""Benchmark Sokoban: env steps per second and level generation time per preset.

Steps are timed through ``agentsd.make`` (wrappers and parsing included) with the oracle's
actions, next to a baseline of the bare move function (``step_level``) measured in the same run,
so the report is a ratio that does not depend on the machine.

    python scripts/bench_sokoban.py --levels 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def bench_preset(preset: str, levels: int) -> dict:
    import agentsd
    from agentsd.envs.sokoban import PRESETS, generate_level, step_level

    env_id = {"easy": "Sokoban-Easy-v0", "medium": "Sokoban-v0", "hard": "Sokoban-Hard-v0"}[preset]
    gen_s = []
    for s in range(levels):
        t = time.perf_counter()
        generate_level(np.random.default_rng(s), **PRESETS[preset])
        gen_s.append(time.perf_counter() - t)

    env = agentsd.make(env_id, max_turns=10_000)
    actions, n_moves = [], 0
    for s in range(levels):  # collect single-move actions from optimal plans, outside the timer
        env.reset(seed=s)
        plan = env.privileged().plan
        actions.append((s, [f"<answer>{m}</answer>" for m in plan], plan, env.unwrapped.start))
        n_moves += len(plan)
    env_s = 0.0
    for s, acts, _, _ in actions:
        env.reset(seed=s)
        t = time.perf_counter()
        for a in acts:
            env.step(a)
        env_s += time.perf_counter() - t
    t = time.perf_counter()
    for _, _, plan, start in actions:
        lv = start
        for m in plan:
            lv, _ = step_level(lv, m)
    raw_s = time.perf_counter() - t
    return {
        "preset": preset, "levels": levels,
        "gen_ms_mean": 1000 * float(np.mean(gen_s)), "gen_ms_p95": 1000 * float(np.percentile(gen_s, 95)),
        "env_steps_per_s": n_moves / env_s, "bare_moves_per_s": n_moves / raw_s,
        "env_vs_bare_ratio": (n_moves / env_s) / (n_moves / raw_s),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", type=int, default=200, help="levels per preset")
    p.add_argument("--presets", nargs="+", default=["easy", "medium", "hard"], help="presets to run")
    args = p.parse_args(argv)
    for preset in args.presets:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in bench_preset(preset, args.levels).items()}))


if __name__ == "__main__":
    main()
