"""Rollout throughput of the ``hf`` backend: KV reuse across turns vs plain generation, same run.

Every mode plays the same episodes (same env, seeds and sampling seed) on the same weights:

- ``plain``: the sampler before this work: transformers' ``DynamicCache`` (``torch.cat`` every
  step) and no KV reuse (each turn prefills the whole episode so far);
- ``growing``: the default cache that grows in chunks (no per-step copy), no KV reuse;
- ``kv``: the default: growing cache and KV reuse across turns (each turn prefills only what
  follows the previous action);
- ``kv-dynamic``: KV reuse on transformers' ``DynamicCache`` (KV reuse's share alone);
- ``static``: a static cache, full prefill every turn (GPU);
- ``compiled``: a static cache and a ``torch.compile``-d decode step (CUDA only);
- ``llamacpp``: a local ``llama-server`` on the model's weights written as F16 into a copy of its
  GGUF file, as the ``llamacpp`` training sampler serves them (its slots keep each episode's
  prompt cache between turns), threads = torch's.
  Needs a GGUF model and a built server (``scripts/build_llama_server.sh``); its tokens differ
  from ``plain``'s (another sampler's random numbers, quantized weights).

The report gives sampled tokens/s per mode and its ratio to ``plain``, prefilled vs reused prompt
tokens, prefix mismatches (KV fallbacks), the share of rollout wall time spent in env code, and
how many episodes came out token-for-token identical to ``plain``. With ``--repeats`` the modes
alternate order (plain, kv, kv, plain, ...) so load drift on a shared machine cancels out.

    python scripts/bench_rollout.py                                  # SmolLM2 on CPU, Sokoban
    python scripts/bench_rollout.py --batches 1,16 --episodes 16 --max-tokens 32
    python scripts/bench_rollout.py --random qwen3-0.6b --device cuda --batches 64 --episodes 64
    python scripts/bench_rollout.py --modes plain,kv --json out.json --markdown out.md
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

#: mode -> (HFPolicy keyword arguments, RolloutConfig.kv_reuse)
MODES: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": ({"cache_implementation": "dynamic"}, False),
    "growing": ({"cache_implementation": "growing"}, False),
    "kv": ({"cache_implementation": "growing"}, True),
    "kv-dynamic": ({"cache_implementation": "dynamic"}, True),
    "static": ({"cache_implementation": "static"}, False),
    "compiled": ({"cache_implementation": "static", "compile": True}, False),
    "llamacpp": ({}, False),  # not an HFPolicy: see llamacpp_sampler
}


def llamacpp_sampler(args: argparse.Namespace, model: Any, tok: Any, parallel: int) -> Any:
    """The trainer's ``llamacpp`` sampler on ``model``: a fresh ``llama-server`` on its weights
    written as F16 into a copy of ``args.model``'s GGUF file; its ``policy`` is the client."""
    import tempfile
    from pathlib import Path

    from agentsd.distill.config import ModelConfig, RolloutSettings, TrainConfig
    from agentsd.distill.samplers import LlamaCppSampler

    if args.random:
        raise SystemExit("mode llamacpp needs a GGUF model (e.g. the default smollm2), not --random")
    cfg = TrainConfig(model=ModelConfig(name=args.model),
                      rollout=RolloutSettings(sampler="llamacpp", tasks_per_step=parallel,
                                              samples_per_task=1, eval_tasks=parallel, llamacpp_ctx=2048))
    sampler = LlamaCppSampler(cfg, tok, Path(tempfile.mkdtemp(prefix="bench-rollout-")))
    sampler.sync(model, 0)
    return sampler


def build_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The weights under test: the named model, or random weights of a named architecture."""
    import torch

    from agentsd.policy.models import load_model, load_tokenizer, random_model, resolve_model

    if not args.random:
        model, tok = load_model(args.model, device=args.device)
        return model, tok, f"hf:{resolve_model(args.model).model_id}"
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
    return model, tok, f"hf:random-{args.random}"


def run_mode(policy: Any, mode: str, env: str, batch: int, args: argparse.Namespace,
             episodes: int | None = None, max_turns: int | None = None,
             max_tokens: int | None = None) -> tuple[dict[str, Any], list[list[int]]]:
    """One rollout run; returns its numbers and each episode's token ids."""
    from agentsd.policy import SamplingParams
    from agentsd.rollout import RolloutConfig, Task, run_rollouts

    params = SamplingParams(temperature=args.temperature, max_tokens=max_tokens or args.max_tokens,
                            seed=0)
    tasks = [Task(env, s) for s in range(episodes or args.episodes)]
    # wait for every env step before generating: batches, and so samples, do not depend on timing
    cfg = RolloutConfig(max_turns=max_turns or args.max_turns, max_concurrent=batch,
                        env_workers=args.env_workers, batch_wait_s=3600.0,
                        kv_reuse=MODES[mode][1])
    res = run_rollouts(policy, tasks=tasks, params=params, config=cfg)
    s = res.summary
    row = {"mode": mode, "env": env, "batch": batch, "episodes": s.episodes, "wall_s": s.wall_s,
           "action_tokens": s.action_tokens, "generate_s": s.generate_s,
           "env_busy_s": s.env_busy_s, "env_wait_s": s.env_wait_s,
           "prefill_tokens": s.prefill_tokens, "kv_reused_tokens": s.kv_reused_tokens,
           "kv_prefix_mismatches": s.kv_prefix_mismatches, "generate_calls": s.generate_calls,
           "mean_batch": s.mean_batch, "mean_turns": s.mean_turns,
           "success_rate": s.success_rate}
    return row, [t.token_ids() for t in res.trajectories]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum a mode's repeats; rates are totals over totals."""
    keys = ("wall_s", "action_tokens", "generate_s", "env_busy_s", "env_wait_s", "prefill_tokens",
            "kv_reused_tokens", "kv_prefix_mismatches", "episodes")
    out: dict[str, Any] = {k: sum(r[k] for r in rows) for k in keys}
    out.update({k: rows[0][k] for k in ("mode", "env", "batch")})
    out["repeats"] = len(rows)
    out["mean_batch"] = sum(r["mean_batch"] for r in rows) / len(rows)
    out["mean_turns"] = sum(r["mean_turns"] for r in rows) / len(rows)
    out["tokens_per_s"] = out["action_tokens"] / out["wall_s"]
    out["wall_s_per_repeat"] = [r["wall_s"] for r in rows]
    out["tokens_per_s_per_repeat"] = [r["action_tokens"] / r["wall_s"] for r in rows]
    # env code's share of rollout wall time: all reset/step work (run on threads, so an upper
    # bound), and the part that actually left the generation loop idle
    out["env_busy_share"] = out["env_busy_s"] / out["wall_s"]
    out["env_wait_share"] = out["env_wait_s"] / out["wall_s"]
    out["generate_share"] = out["generate_s"] / out["wall_s"]
    return out


def default_modes(device: Any) -> list[str]:
    return (["plain", "kv", "static", "compiled"] if device.type == "cuda"
            else ["plain", "growing", "kv"])


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    a = report["args"]
    lines = [f"# bench_rollout: {report['policy']} on {report['device']}", "",
             f"`{report['command']}`", "",
             f"{a['episodes']} episodes of {', '.join(report['envs'])}, at most {a['max_turns']} "
             f"turns x {a['max_tokens']} sampled tokens, temperature {a['temperature']}, "
             f"{a['repeats']} repeat(s) per mode, torch threads {report['torch_threads']}.", "",
             "| env | batch | mode | sampled tok/s | vs plain | wall s | prefilled | reused "
             "| KV fallbacks | env busy | env idle-wait | same tokens as plain |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(
            f"| {r['env']} | {r['batch']} | {r['mode']} | {r['tokens_per_s']:.1f} | "
            f"{r.get('speedup_vs_plain', float('nan')):.2f}x | {r['wall_s']:.1f} | "
            f"{r['prefill_tokens']} | {r['kv_reused_tokens']} | {r['kv_prefix_mismatches']} | "
            f"{r['env_busy_share']:.2%} | {r['env_wait_share']:.2%} | "
            f"{r.get('same_tokens_as_plain', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="model (or, with --random, its tokenizer)")
    p.add_argument("--random", default=None, help="random weights instead: 'tiny' or 'qwen3-0.6b'")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--env", action="append", default=None,
                   help="env id (repeatable; default Sokoban-Easy-v0)")
    p.add_argument("--episodes", type=int, default=16, help="episodes per run (seeds 0..n-1)")
    p.add_argument("--batches", default="16", help="comma-separated max episodes in flight")
    p.add_argument("--modes", default=None,
                   help="comma-separated of plain, growing, kv, kv-dynamic, static, compiled, llamacpp "
                        "(default: plain,growing,kv on CPU; plain,kv,static,compiled on CUDA)")
    p.add_argument("--max-tokens", type=int, default=32, help="sampled tokens per turn")
    p.add_argument("--max-turns", type=int, default=3, help="turns per episode")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per mode, alternating the order of modes")
    p.add_argument("--env-workers", type=int, default=8, help="env threads")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    p.add_argument("--markdown", default=None, help="write the results here as a Markdown table")
    args = p.parse_args(argv)
    envs = args.env or ["Sokoban-Easy-v0"]
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    from agentsd.policy import HFPolicy

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok, model_id = build_model(args)
    device = next(model.parameters()).device
    modes = args.modes.split(",") if args.modes else default_modes(device)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {sorted(MODES)}")
    policies = {m: HFPolicy(model, tok, model_id=model_id, **MODES[m][0]) for m in modes if m != "llamacpp"}
    sampler = llamacpp_sampler(args, model, tok, max(batches)) if "llamacpp" in modes else None
    if sampler is not None:
        policies["llamacpp"] = sampler.policy
    print(f"policy {model_id} on {device} loaded in {time.perf_counter() - t0:.1f}s; modes "
          f"{', '.join(modes)}", file=sys.stderr)
    # warm-up outside the timing; on CUDA at full batch, so `compiled` compiles for that shape
    warm = batches[-1] if device.type == "cuda" else 1
    for m in modes:
        tw = time.perf_counter()
        run_mode(policies[m], m, envs[0], warm, args, episodes=warm, max_turns=2, max_tokens=4)
        print(f"warm-up {m}: {time.perf_counter() - tw:.1f}s", file=sys.stderr)

    results = []
    for env in envs:
        for b in batches:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            tokens: dict[str, list[list[int]]] = {}
            for rep in range(args.repeats):
                for m in (modes if rep % 2 == 0 else modes[::-1]):
                    row, ids = run_mode(policies[m], m, env, b, args)
                    runs[m].append(row)
                    tokens.setdefault(m, ids)
                    print(f"{env} batch {b:3d} {m:8s} run {rep}: "
                          f"{row['action_tokens'] / row['wall_s']:7.1f} tok/s  wall "
                          f"{row['wall_s']:6.1f}s  prefilled {row['prefill_tokens']}  reused "
                          f"{row['kv_reused_tokens']}  fallbacks {row['kv_prefix_mismatches']}",
                          flush=True)
            agg = {m: aggregate(runs[m]) for m in modes}
            for m in modes:
                if "plain" in agg:
                    agg[m]["speedup_vs_plain"] = agg[m]["tokens_per_s"] / agg["plain"]["tokens_per_s"]
                    same = sum(a == c for a, c in zip(tokens[m], tokens["plain"]))
                    agg[m]["same_tokens_as_plain"] = f"{same}/{len(tokens[m])}"
                results.append(agg[m])
    if sampler is not None:
        sampler.close()
    report = {"policy": model_id, "device": str(device), "envs": envs, "args": vars(args),
              "torch_threads": torch.get_num_threads(),
              "command": "python scripts/bench_rollout.py " + " ".join(sys.argv[1:] if argv is None
                                                                       else argv),
              "results": results}
    text = markdown(report)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
