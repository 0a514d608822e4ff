"""CurioSFT against plain SFT as the warm start: the same oracle demonstrations, the same steps,
then the student's token entropy and parse rate.

Two warm starts from one base model (``--algo sft``; the second with ``--loss.curio-sft true``).
For each: held-out greedy and temperature-1 success and parse rate (the trainer's final
evaluation), the student's mean per-token entropy on its own temperature-1 rollouts of the
held-out tasks (``entropy``, what RL later explores with) and on the demonstrations in the last
step (``demo_entropy``). The issue's target: CurioSFT's ``entropy`` at least 1.5x plain SFT's at
an equal or better parse rate. Prints a Markdown table and writes ``<out>/curio_sft.json``::

    python scripts/curio_sft_check.py --model smollm2 --steps 20 --out runs/curio_check

It measures and asserts nothing (``tests/test_family_more.py`` has the ``slow`` test that does);
the GRPO/OPD budget after the warm start is ``scripts/compare.py``'s job.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="Sokoban-Easy-v0", help="registered env id (with an oracle)")
    p.add_argument("--model", default="smollm2", help="model name ('tiny-random' for a smoke run)")
    p.add_argument("--steps", type=int, default=20, help="SFT steps of each warm start")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--tasks", type=int, default=8, help="demonstrations per step")
    p.add_argument("--eval-tasks", type=int, default=16, help="held-out tasks")
    p.add_argument("--max-turns", type=int, default=4, help="turns per episode")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per action")
    p.add_argument("--tau-max", type=float, default=2.0, help="CurioSFT: temperature at zero entropy")
    p.add_argument("--entropy-target", type=float, default=1.0,
                   help="CurioSFT: entropy at and above which tokens are left alone")
    p.add_argument("--curio-coef", type=float, default=1.0, help="CurioSFT: weight of its term")
    p.add_argument("--seed", type=int, default=0, help="run seed")
    p.add_argument("--out", default="runs/curio_check", help="output folder")
    return p.parse_args(argv)


def _config(args: argparse.Namespace, arm: str) -> Any:
    from agentsd.distill.config import (
        DemoConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        RolloutSettings,
        TrainConfig,
    )

    curio = arm == "curio"
    return TrainConfig(
        algo="sft", steps=args.steps, seed=args.seed, out_dir=str(Path(args.out) / arm),
        eval_every=0, eval_at_start=False, eval_at_end=True, checkpoint_every=args.steps,
        resume=False, progress=False, tensorboard=False, samples_to_keep=0,
        model=ModelConfig(name=args.model, tiny_hidden=16),
        rollout=RolloutSettings(env=args.env, tasks_per_step=args.tasks, samples_per_task=1,
                                max_turns=args.max_turns, max_tokens=args.max_tokens,
                                eval_tasks=args.eval_tasks),
        loss=LossConfig(curio_sft=curio, curio_tau_max=args.tau_max,
                        curio_entropy_target=args.entropy_target, curio_coef=args.curio_coef),
        optim=OptimConfig(lr=args.lr, lr_schedule="linear"),
        demos=DemoConfig(source="oracle", teacher_frac=0.0))


def rollout_entropy(model: Any, tokenizer: Any, cfg: Any) -> float:
    """Mean per-token entropy (nats) of the student on its own temperature-1 rollouts of the
    held-out tasks, over their action tokens."""
    import torch

    from agentsd.distill.episodes import eval_tasks, rollouts
    from agentsd.distill.teacher import forward_logprobs, pad_rows
    from agentsd.policy.hf import HFPolicy

    policy = HFPolicy(model, tokenizer, model_id="student")
    trajs, _ = rollouts(policy, cfg, None, 1, 1.0, sample_seed=cfg.seed * 7919 + 29,
                        progress=False, tasks=eval_tasks(cfg))
    values: list[float] = []
    model.eval()
    for t in trajs:
        ids, attn = pad_rows([t.token_ids()], policy.pad_token_id,
                             device=next(model.parameters()).device)
        mask = torch.tensor([t.action_mask()], dtype=torch.float32, device=ids.device)
        with torch.no_grad():
            ent = forward_logprobs(model, ids, attn, want_entropy=True, positions_BT=mask)["entropy_BT"]
        values += ent[mask.bool()].tolist()
    return statistics.fmean(values) if values else float("nan")


def compare(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Both warm starts and their measurements: ``{arm: {entropy, demo_entropy, parse_rate,
    parse_rate_t1, success, success_t1}}``."""
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import build_student, train

    out: dict[str, dict[str, float]] = {}
    for arm in ("sft", "curio"):
        cfg = _config(args, arm)
        model, tok = build_student(cfg)
        res = train(cfg, model=model, tokenizer=tok)
        rows = read_metrics(cfg.out_dir)
        last = [r for r in rows if "entropy/mean" in r][-1]
        ev = res.final_eval
        out[arm] = {"entropy": rollout_entropy(model, tok, cfg), "demo_entropy": last["entropy/mean"],
                    "parse_rate": ev.get("eval/parse_rate", float("nan")),
                    "parse_rate_t1": ev.get("eval/parse_rate_t1", float("nan")),
                    "success": ev.get("eval/success", float("nan")),
                    "success_t1": ev.get("eval/success_t1", float("nan"))}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "curio_sft.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    res = compare(args)
    keys = ("entropy", "demo_entropy", "parse_rate", "parse_rate_t1", "success", "success_t1")
    print("| arm | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for arm, m in res.items():
        print(f"| {arm} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |")
    ratio = res["curio"]["entropy"] / max(res["sft"]["entropy"], 1e-9)
    print(f"\nentropy ratio curio/sft = {ratio:.2f} (target >= 1.5 at an equal or better parse rate: "
          f"{res['curio']['parse_rate']:.2f} vs {res['sft']['parse_rate']:.2f})")


if __name__ == "__main__":
    main()
