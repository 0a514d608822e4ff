"""Basic subcommands: ``envs`` (list the registry), ``play`` (play an env turn by turn) and
``quickstart`` (the main job on the embedded default)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register_envs(sub: Any) -> None:
    p = sub.add_parser("envs", help="list the registered envs")
    p.add_argument("--json", action="store_true", help="print the specs as JSON lines")
    p.set_defaults(func=_cmd_envs)


def _cmd_envs(args: argparse.Namespace) -> int:
    import agentsd

    if args.json:
        for s in agentsd.list_envs().values():
            print(json.dumps({"id": s.id, "entry_point": str(s.entry_point), "kwargs": dict(s.kwargs),
                              "max_turns": s.max_turns, "tags": list(s.tags),
                              "splits": {k: list(v.seeds) for k, v in s.splits.items()},
                              "description": s.description}))
    else:
        agentsd.pprint_registry()
    return 0


def register_play(sub: Any) -> None:
    p = sub.add_parser("play", help="play one episode of an env and print it turn by turn")
    p.add_argument("--env", default="Sokoban-Easy-v0", help="registered env id")
    p.add_argument("--seed", type=int, default=0, help="episode seed")
    p.add_argument("--policy", choices=["oracle", "human", "random"], default="oracle",
                   help="oracle: follow the env's privileged plan (the built-in solver for "
                        "Sokoban); human: type actions; random: the env's example actions")
    p.add_argument("--max-turns", type=int, default=None, help="override the turn limit")
    p.set_defaults(func=_cmd_play)


def play_episode(env_id: str, seed: int, policy: str = "oracle", max_turns: int | None = None,
                 out: Any = sys.stdout) -> dict[str, Any]:
    """Play one episode, printing every observation and action; return a summary."""
    import numpy as np

    import agentsd

    kwargs = {"max_turns": max_turns} if max_turns else {}
    env = agentsd.make(env_id, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    obs, info = env.reset()
    _print_obs(obs, out)
    total, turns, info = 0.0, 0, {}
    while True:
        if policy == "oracle":
            action = env.oracle_action()
            if action is None:
                print(f"[{env_id} has no oracle for this state; stopping]", file=out)
                break
        elif policy == "human":
            action = input("action> ")
        else:
            ex = env.example_actions() or ["<answer></answer>"]
            action = ex[int(rng.integers(len(ex)))]
        turns += 1
        print(f"\n--- turn {turns}: action ---\n{action if isinstance(action, str) else json.dumps(action)}",
              file=out)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        print(f"--- reward {reward:+.2f} {info.get('reward_terms', {})} parse={info.get('parse')}",
              file=out)
        _print_obs(obs, out)
        if terminated or truncated:
            break
    env.close()
    summary = {"env": env_id, "seed": seed, "turns": turns, "return": round(total, 4),
               "success": bool(info.get("success", False))}
    print(f"\nepisode: {json.dumps(summary)}", file=out)
    return summary


def _print_obs(obs: list[dict], out: Any) -> None:
    for m in obs:
        print(f"[{m.get('role')}] {m.get('content', '')}", file=out)


def _cmd_play(args: argparse.Namespace) -> int:
    play_episode(args.env, args.seed, args.policy, args.max_turns)
    return 0


def register_quickstart(sub: Any) -> None:
    p = sub.add_parser("quickstart", help="the main job on the embedded default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/quickstart", help="run folder")
    p.add_argument("--steps", type=int, default=3, help="OPD training steps (default: 3)")
    p.add_argument("--warm-steps", type=int, default=10,
                   help="SFT warm-start steps of 8 oracle demos (default: 10; 0 skips it)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0 = auto: 1 on a busy machine)")
    p.set_defaults(func=_cmd_quickstart)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    """The whole pipeline on the embedded default (SmolLM2-135M on CPU, Sokoban-Easy-v0):
    skills -> SFT warm start -> OPD training -> held-out evaluation -> run folder with a report."""
    import sys

    import agentsd
    from agentsd.threads import apply_threads, pick_threads

    agentsd.pprint_registry()
    print()
    from agentsd.distill.pipeline import quickstart_config, run_pipeline

    try:
        cfg = quickstart_config(out_dir=getattr(args, "out", "runs/quickstart"), seed=args.seed,
                                steps=getattr(args, "steps", 3),
                                warm_steps=getattr(args, "warm_steps", 10))
    except ValueError as e:
        print(f"agentsd quickstart: {e}", file=sys.stderr)
        return 2
    print(f"torch CPU threads: {apply_threads(pick_threads(getattr(args, 'threads', 0) or None))}")
    summary = run_pipeline(cfg)
    print(json.dumps(summary, indent=1))
    return 0
