"""Rollout throughput of the ``hf`` backend: batch 1 vs batch N, and where the wall time goes.

For each env and each batch size (``--batches``, default ``1,8``) the same episodes (same seeds,
same sampling seed) are played with at most that many episodes in flight; the report gives
sampled tokens/s, episodes/min, the share of wall time spent in ``policy.generate`` and waiting
for env steps, and the speed-up of each batch size over the first one (measured in the same run).

    python scripts/bench_rollout.py                                   # SmolLM2 on CPU, Sokoban
    python scripts/bench_rollout.py --env Sokoban-Easy-v0 --env Code-Gen-v0 --episodes 8
    python scripts/bench_rollout.py --random qwen3-0.6b --device cuda  # real-size random weights

Note the batch-1 run and the batch-N run sample different token streams (sampling is seeded per
call, and calls differ), so their token counts differ a little; rates are per sampled token.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

#: Qwen3-0.6B's architecture (from its config.json); the vocabulary is the tokenizer's
QWEN3_0_6B = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
              "max_position_embeddings": 40960, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True}


def build_policy(args: argparse.Namespace) -> Any:
    """The policy under test: the named model, or random weights of a named architecture."""
    import torch

    from agentsd.policy import HFPolicy
    from agentsd.policy.models import load_tokenizer, random_model

    if not args.random:
        return HFPolicy.from_pretrained(args.model, device=args.device)
    tok = load_tokenizer(args.model)
    if args.random == "tiny":
        model = random_model(tok)
    elif args.random == "qwen3-0.6b":
        from transformers import Qwen3Config

        cfg = Qwen3Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id, **QWEN3_0_6B)
        model = random_model(tok, config=cfg)
    else:
        raise SystemExit(f"--random must be 'tiny' or 'qwen3-0.6b', got {args.random!r}")
    dtype = torch.bfloat16 if args.device and args.device.startswith("cuda") else torch.float32
    model.to(device=args.device or "cpu", dtype=dtype)
    return HFPolicy(model, tok, model_id=f"hf:random-{args.random}")


def bench(policy: Any, env: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    from agentsd.policy import SamplingParams
    from agentsd.rollout import run_rollouts

    params = SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=0)
    res = run_rollouts(policy, env, seeds=list(range(args.episodes)), params=params,
                       max_turns=args.max_turns, max_concurrent=batch, env_workers=args.env_workers)
    s = res.summary
    return {"env": env, "batch": batch, "episodes": s.episodes, "wall_s": s.wall_s,
            "action_tokens": s.action_tokens, "tokens_per_s": s.action_tokens_per_s,
            "episodes_per_min": s.episodes_per_min, "generate_share": s.generate_s / s.wall_s,
            "env_wait_share": s.env_wait_s / s.wall_s, "env_busy_s": s.env_busy_s,
            "mean_batch": s.mean_batch, "success_rate": s.success_rate,
            "stop_reasons": s.stop_reasons}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="model (or, with --random, its tokenizer)")
    p.add_argument("--random", default=None, help="random weights instead: 'tiny' or 'qwen3-0.6b'")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--env", action="append", default=None, help="env id (repeatable; default Sokoban-Easy-v0)")
    p.add_argument("--episodes", type=int, default=8, help="episodes per run (seeds 0..n-1)")
    p.add_argument("--batches", default="1,8", help="comma-separated max episodes in flight")
    p.add_argument("--max-tokens", type=int, default=48, help="sampled tokens per turn")
    p.add_argument("--max-turns", type=int, default=3, help="turns per episode")
    p.add_argument("--env-workers", type=int, default=8, help="env threads")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    envs = args.env or ["Sokoban-Easy-v0"]
    batches = [int(b) for b in args.batches.split(",")]

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    policy = build_policy(args)
    print(f"policy {policy.model_id} on {policy.device} loaded in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    bench(policy, envs[0], 1, argparse.Namespace(**{**vars(args), "episodes": 1, "max_turns": 1,
                                                    "max_tokens": 4}))  # warm-up
    rows = []
    for env in envs:
        for b in batches:
            r = bench(policy, env, b, args)
            rows.append(r)
            print(f"{env:20s} batch {b:3d}: {r['tokens_per_s']:8.1f} tok/s  "
                  f"{r['episodes_per_min']:7.2f} ep/min  wall {r['wall_s']:6.1f}s  "
                  f"generate {r['generate_share']:5.1%}  env wait {r['env_wait_share']:5.1%}  "
                  f"env busy {r['env_busy_s']:.2f}s  mean batch {r['mean_batch']:.1f}", flush=True)
        base = next(r for r in rows if r["env"] == env and r["batch"] == batches[0])
        for r in rows:
            if r["env"] == env and r is not base:
                print(f"{env:20s} batch {r['batch']} vs {batches[0]}: "
                      f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x tok/s, "
                      f"{r['episodes_per_min'] / base['episodes_per_min']:.2f}x episodes/min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": policy.model_id, "device": str(policy.device), "args": vars(args),
                       "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
