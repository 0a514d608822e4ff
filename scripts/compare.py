"""Compare GRPO, plain OPSD (teacher sees privileged hints) and skill-conditioned OPD (teacher sees
skills + hints) on one env: same model, same episode budget, same code path, several seeds.

Each (algo, seed) run starts from the same base weights (a fresh LoRA adapter), trains for
``--steps`` steps of ``--tasks x --samples`` episodes, and is evaluated on the same held-out
test-split tasks. The base model is evaluated once. Prints a Markdown table (mean and spread of
held-out success over seeds) and writes every run folder plus ``results.json`` under ``--out``.

    python scripts/compare.py --env Sokoban-Easy-v0 --seeds 0 1 2 --steps 4
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="Sokoban-Easy-v0", help="registered env id")
    p.add_argument("--model", default="smollm2", help="model name ('tiny-random' for a smoke run)")
    p.add_argument("--algos", nargs="+", default=["grpo", "opsd", "opd"],
                   choices=["grpo", "opsd", "opd", "rft"], help="algorithms to compare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds")
    p.add_argument("--steps", type=int, default=4, help="training steps per run")
    p.add_argument("--tasks", type=int, default=2, help="tasks per step")
    p.add_argument("--samples", type=int, default=4, help="samples per task (GRPO group size)")
    p.add_argument("--max-turns", type=int, default=2, help="turns per episode")
    p.add_argument("--max-tokens", type=int, default=24, help="tokens per action")
    p.add_argument("--eval-tasks", type=int, default=16, help="held-out test tasks")
    p.add_argument("--temperature", type=float, default=0.7, help="training sampling temperature")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (all algorithms)")
    p.add_argument("--teacher-mode", default="frozen", help="teacher mode for opd / opsd")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table from <out>/results.json and the run folders")
    args = p.parse_args(argv)
    for n in ("steps", "tasks", "samples", "max_turns", "max_tokens", "eval_tasks"):
        if getattr(args, n) < 1:
            p.error(f"--{n.replace('_', '-')} must be >= 1")
    return args


def base_config(args: argparse.Namespace, algo: str, seed: int):
    from agentsd.distill.config import (
        ModelConfig,
        OptimConfig,
        RolloutSettings,
        TeacherConfig,
        TrainConfig,
    )
    from agentsd.hints import TeacherContextConfig

    return TrainConfig(
        algo=algo, steps=args.steps, seed=seed, out_dir=str(Path(args.out) / f"{algo}_seed{seed}"),
        eval_every=0, eval_at_start=False, checkpoint_every=args.steps, resume=False,
        progress=False, samples_to_keep=4,
        model=ModelConfig(name=args.model, lora=True, lora_rank=8, lora_alpha=16.0, tiny_hidden=16),
        rollout=RolloutSettings(env=args.env, tasks_per_step=args.tasks, samples_per_task=args.samples,
                                max_turns=args.max_turns, max_tokens=args.max_tokens,
                                eval_tasks=args.eval_tasks, temperature=args.temperature),
        teacher=TeacherConfig(mode=args.teacher_mode, context=TeacherContextConfig(
            views=("skills", "plan", "notes"), max_skills=2)),
        optim=OptimConfig(lr=args.lr),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        table = markdown_table(results, Path(args.out))
        (Path(args.out) / "results.md").write_text(table + "\n")
        print(table)
        return 0
    import torch

    from agentsd.distill.models import with_lora
    from agentsd.distill.trainer import build_student, evaluate, train
    from agentsd.policy.hf import HFPolicy

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg0 = base_config(args, "opd", args.seeds[0])
    # the base weights, loaded once; every run trains a fresh adapter on a copy of them
    base_model, tok = build_student(dataclasses.replace(
        cfg0, model=dataclasses.replace(cfg0.model, lora=False)))
    base_model.requires_grad_(False).eval()
    t0 = time.perf_counter()
    base_eval = evaluate(HFPolicy(base_model, tok), cfg0)
    print(f"base model: held-out success {base_eval['eval/success']:.3f} "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    results = {"args": vars(args), "base": base_eval, "runs": []}
    for algo in args.algos:
        for seed in args.seeds:
            cfg = base_config(args, algo, seed)
            torch.manual_seed(seed)
            model = with_lora(copy.deepcopy(base_model), rank=cfg.model.lora_rank,
                              alpha=cfg.model.lora_alpha).train()
            t = time.perf_counter()
            res = train(cfg, model=model, tokenizer=tok)
            episodes = sum(args.tasks * args.samples for _ in range(args.steps))
            row = {"algo": algo, "seed": seed, **res.final_eval, "episodes": episodes,
                   "train_success_last": res.history[-1].get("rollout/success"),
                   "updated_steps": sum(h.get("optim/updated", 0) for h in res.history),
                   "wall_s": round(time.perf_counter() - t, 1)}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
            del model
    table = markdown_table(results, out)
    (out / "results.md").write_text(table + "\n")
    print("\n" + table)
    return 0


def _updated_steps(run_dir: Path) -> int:
    """Optimizer steps whose gradient was non-zero (GRPO with equal rewards in a group has none)."""
    from agentsd.distill.metrics import read_metrics

    return sum(1 for r in read_metrics(run_dir) if (r.get("optim/grad_norm") or 0) > 0)


def markdown_table(results: dict, out: Path) -> str:
    """Held-out success per algorithm: mean, std over seeds, and the per-seed values."""
    lines = ["| algo | held-out success, mean ± std over seeds | per seed | held-out reward, mean |"
             " steps with a non-zero gradient |",
             "|---|---|---|---|---|",
             f"| base model (no training) | {results['base']['eval/success']:.3f} | - | "
             f"{results['base']['eval/reward']:.2f} | - |"]
    algos = list(dict.fromkeys(r["algo"] for r in results["runs"]))
    for a in algos:
        rs = [r for r in results["runs"] if r["algo"] == a]
        s = [r["eval/success"] for r in rs]
        sd = statistics.pstdev(s) if len(s) > 1 else 0.0
        upd = sum(_updated_steps(out / f"{a}_seed{r['seed']}") for r in rs)
        lines.append(f"| {a} | {statistics.mean(s):.3f} ± {sd:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in s)} | "
                     f"{statistics.mean(r['eval/reward'] for r in rs):.2f} | "
                     f"{upd}/{len(rs) * results['args']['steps']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
