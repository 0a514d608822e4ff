"""``agentsd rollout``: play registered envs with a policy backend and store the trajectories."""

from __future__ import annotations

import json
from typing import Any

from agentsd.policy.base import SamplingParams
from agentsd.rollout import RolloutConfig, Task, run_rollouts, split_tasks

__all__ = ["register_rollout"]


def register_rollout(sub: Any) -> None:
    p = sub.add_parser("rollout", help="play envs with a model and store the trajectories",
                       description="Play every --env on -n seeds (--samples times each) with a "
                                   "policy backend and append the trajectories to --out.")
    p.add_argument("--env", action="append", required=True,
                   help="registered env id (repeat for several; 'all' = every registered env)")
    p.add_argument("--model", default="smollm2",
                   help="short name (smollm2 = the embedded default), local path or hub id; for "
                        "--backend openai, the server's model name")
    p.add_argument("--backend", choices=["hf", "openai", "vllm"], default="hf", help="policy backend")
    p.add_argument("--base-url", default=None, help="openai backend: server URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None, help="openai backend: API key (default $OPENAI_API_KEY)")
    p.add_argument("--tokenizer", default=None,
                   help="openai backend: tokenizer to render prompts with (default: --model)")
    p.add_argument("--device", default=None, help="hf backend: cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="hf backend: torch CPU threads (1 is much faster on an oversubscribed machine)")
    p.add_argument("-n", "--num-tasks", type=int, default=4, help="seeds (tasks) per env")
    p.add_argument("--samples", type=int, default=1, help="samples per task (G)")
    p.add_argument("--split", default="test", help="seed split to draw tasks from (envs without it: 0..n-1)")
    p.add_argument("--seed-offset", type=int, default=0, help="skip this many seeds of the split")
    p.add_argument("--out", default="runs/rollouts.jsonl",
                   help="output file: .jsonl is appended to as episodes finish; .parquet is written at the end")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (0 = off)")
    p.add_argument("--max-tokens", type=int, default=64,
                   help="max sampled tokens per turn (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--max-turns", type=int, default=4,
                   help="turn limit (default: 4, so a CPU run finishes in minutes; 0 = the env's own)")
    p.add_argument("--max-episode-tokens", type=int, default=None, help="token budget per episode")
    p.add_argument("--max-parse-failures", type=int, default=None,
                   help="end an episode after this many unparseable actions in a row")
    p.add_argument("--max-concurrent", type=int, default=16, help="episodes in flight (largest batch)")
    p.add_argument("--env-workers", type=int, default=8, help="threads running env steps")
    p.add_argument("--no-kv-reuse", action="store_true",
                   help="prefill each turn's whole history instead of keeping each episode's KV "
                        "cache between its turns (hf backend)")
    p.add_argument("--cache-implementation", choices=["growing", "dynamic", "static"],
                   default="growing", help="hf backend: KV cache kind (static: fixed shapes, no "
                                           "reuse across turns)")
    p.add_argument("--render-tools", action="store_true",
                   help="pass the env's tool schemas to the chat template (tools=)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", default=None, help="also write the run summary as JSON here")
    p.set_defaults(func=_cmd_rollout)


def _cmd_rollout(args: Any) -> int:
    import sys
    from pathlib import Path

    import agentsd
    from agentsd.policy import ModelNotFoundError, load_policy
    from agentsd.store import TrajectoryWriter, write_parquet

    try:
        env_ids = sorted(agentsd.list_envs()) if "all" in args.env else list(args.env)
        tasks = []
        for env_id in env_ids:
            s = agentsd.spec(env_id)
            tasks += (split_tasks(env_id, args.split, args.num_tasks, args.seed_offset)
                      if args.split in s.splits else
                      [Task(env_id, sd) for sd in range(args.seed_offset,
                                                        args.seed_offset + args.num_tasks)])
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_tokens=args.max_tokens, seed=args.seed)
        cfg = RolloutConfig(max_turns=args.max_turns or None, max_episode_tokens=args.max_episode_tokens,
                            max_parse_failures=args.max_parse_failures,
                            max_concurrent=args.max_concurrent, env_workers=args.env_workers,
                            progress=not args.no_progress, render_tools=args.render_tools,
                            kv_reuse=not args.no_kv_reuse)
        kw: dict[str, Any] = {}
        if args.backend == "hf":
            kw["device"] = args.device
            kw["cache_implementation"] = args.cache_implementation
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
        elif args.backend == "openai":
            kw = {"base_url": args.base_url, "api_key": args.api_key, "tokenizer": args.tokenizer}
        print(f"loading {args.backend} policy {args.model!r} ...", file=sys.stderr)
        policy = load_policy(args.backend, args.model, **kw)
    except (ModelNotFoundError, ValueError, KeyError, ImportError) as e:
        print(f"agentsd rollout: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"{len(tasks)} tasks x {args.samples} samples on {', '.join(env_ids)} -> {out}",
          file=sys.stderr)
    if out.suffix == ".parquet":
        res = run_rollouts(policy, tasks=tasks, samples_per_task=args.samples, params=params, config=cfg)
        write_parquet(res.trajectories, out)
    else:
        with TrajectoryWriter(out) as w:
            res = run_rollouts(policy, tasks=tasks, samples_per_task=args.samples, params=params,
                               config=cfg, on_trajectory=w.write)
    print(res.summary.format())
    print(f"wrote {len(res.trajectories)} trajectories to {out}")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(res.summary.to_dict(), indent=2))
    return 0
