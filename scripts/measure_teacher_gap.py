"""The teacher's advantage: what each teacher context does when it *acts*, next to the student.

For each env, on held-out tasks (the test split's seeds *and* kwargs), with one model:

1. the student acts on the plain task -> success and parse rate (share of turns whose action
   parsed);
2. for each teacher view (``skills``: retrieved skills in the system message; ``reference``: the
   per-turn reference reply in the env's action format at the end of the latest observation;
   ``skills+reference``; ``notes``: the env's notes), the same model acts with that context
   (:class:`agentsd.hints.TeacherViewEnv`, the context the trainer's teacher scores in) ->
   success and parse rate;
3. on the student's own trajectories, the mean per-token log-prob gap
   ``log pi_T(y | teacher context) - log pi_S(y | task)`` of each view (the signal OPD
   distills; it estimates ``-KL(pi_S || pi_T)`` per token).

``--init-from RUN`` measures a warm-started model (an SFT run from ``agentsd train --algo sft``):
a teacher must be on-format before it can teach. Prints a Markdown table and writes JSON::

    python scripts/measure_teacher_gap.py --envs Sokoban-Easy-v0 --tasks 32
    python scripts/measure_teacher_gap.py --envs Sokoban-Easy-v0 --init-from runs/compare/warm_start

Numbers depend on the model and sampling; this script only measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: teacher views measured: name -> TeacherContextConfig views
VIEWS: dict[str, tuple[str, ...]] = {
    "skills": ("skills",),
    "reference": ("reference",),
    "skills+reference": ("skills", "reference"),
    "notes": ("notes",),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["Sokoban-Easy-v0"], help="env ids")
    p.add_argument("--tasks", type=int, default=32, help="held-out tasks per env")
    p.add_argument("--model", default="smollm2", help="model name")
    p.add_argument("--init-from", default="", help="merge this run's adapter first (a warm start)")
    p.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS),
                   help="teacher views to measure")
    p.add_argument("--max-turns", type=int, default=2, help="turn cap per episode")
    p.add_argument("--max-tokens", type=int, default=24, help="tokens per action")
    p.add_argument("--max-skills", type=int, default=2, help="skills shown")
    p.add_argument("--no-gap", action="store_true", help="skip the log-prob gap (acting only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = auto)")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.max_turns < 1 or args.max_tokens < 1:
        p.error("--tasks, --max-turns and --max-tokens must be >= 1")
    return args


def _cfg(args: argparse.Namespace, env_id: str, views: tuple[str, ...]) -> Any:
    from agentsd.distill.config import (
        ModelConfig,
        RolloutSettings,
        TeacherConfig,
        TrainConfig,
    )
    from agentsd.hints import TeacherContextConfig

    return TrainConfig(
        algo="opd", out_dir=str(Path("/tmp") / "agentsd-measure" / env_id.replace("/", "_")),
        progress=False, model=ModelConfig(name=args.model, init_from=args.init_from),
        rollout=RolloutSettings(env=env_id, max_turns=args.max_turns, max_tokens=args.max_tokens,
                                eval_tasks=args.tasks, eval_sampled=False),
        teacher=TeacherConfig(context=TeacherContextConfig(views=views, max_skills=args.max_skills,
                                                           max_skill_chars=500)))


def measure_env(args: argparse.Namespace, env_id: str, model: Any, tok: Any) -> list[dict]:
    import torch

    from agentsd.distill.teacher import Teacher, forward_logprobs, pad_rows, score_rows
    from agentsd.distill.trainer import _rollouts, _TeacherContexts, eval_tasks, evaluate_teacher
    from agentsd.policy.hf import HFPolicy

    policy = HFPolicy(model, tok)
    base = _cfg(args, env_id, ("reference",))
    t = time.perf_counter()
    trajs, _ = _rollouts(policy, base, None, 1, 0.0, 0, False, tasks=eval_tasks(base),
                         record_privileged=True)
    rows = [_row("student (plain task)", env_id, trajs, time.perf_counter() - t)]
    student_lp = []  # the student's log-probs of its own action tokens: the same for every view
    if not args.no_gap:
        for tr in trajs:
            mask = torch.tensor(tr.action_mask(), dtype=torch.bool)
            ids, attn = pad_rows([tr.token_ids()], policy.pad_token_id)
            with torch.no_grad():
                student_lp.append((forward_logprobs(model, ids, attn)["logp_BT"][0][mask], mask))
    teacher = Teacher(model, "live")  # the same weights acting with another context
    for name in args.views:
        cfg = _cfg(args, env_id, VIEWS[name])
        ctx = _TeacherContexts(cfg, tok)
        t = time.perf_counter()
        ev = evaluate_teacher(policy, teacher, ctx, cfg)
        row = {"policy": f"teacher context: {name}", "env": env_id, "tasks": args.tasks,
               "success": ev["teacher/eval_success"], "parse_rate": ev["teacher/eval_parse_rate"],
               "wall_s": round(time.perf_counter() - t, 1)}
        if not args.no_gap:
            gaps = []
            for tr, (s_lp, mask) in zip(trajs, student_lp):
                with torch.no_grad():
                    t_lp = score_rows(model, ctx.rows(tr, 0), [len(mask)], policy.pad_token_id)
                gaps += (t_lp["teacher_logp_BT"][0][mask] - s_lp).tolist()
            row["gap_mean"] = statistics.mean(gaps) if gaps else float("nan")
        rows.append(row)
    return rows


def _row(name: str, env_id: str, trajs: list, wall: float) -> dict:
    turns = [t for tr in trajs for t in tr.turns]
    return {"policy": name, "env": env_id, "tasks": len(trajs),
            "success": sum(t.success for t in trajs) / max(len(trajs), 1),
            "parse_rate": sum(t.parse == "ok" for t in turns) / max(len(turns), 1),
            "wall_s": round(wall, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| env | who acts | held-out success (greedy) | parse rate | teacher-student log-prob "
             "gap on the student's tokens |", "|---|---|---|---|---|"]
    for r in rows:
        gap = f"{r['gap_mean']:.3f}" if "gap_mean" in r else "-"
        lines.append(f"| {r['env']} | {r['policy']} | {r['success']:.3f} ({r['tasks']} tasks) | "
                     f"{r['parse_rate']:.2f} | {gap} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from agentsd.distill.trainer import build_student
    from agentsd.threads import apply_threads, pick_threads

    apply_threads(pick_threads(args.threads or None))
    try:
        cfg0 = _cfg(args, args.envs[0], ("reference",))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, tok = build_student(dataclasses.replace(cfg0, model=dataclasses.replace(cfg0.model, lora=False)))
    model.eval()
    rows = []
    for env_id in args.envs:
        rows += measure_env(args, env_id, model, tok)
        print(table(rows), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
