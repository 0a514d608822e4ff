"""The teacher's advantage: what each teacher context does when it *acts*, next to the student.

For each env and each held-out split, on the split's tasks (its seeds *and* kwargs), with one
model, greedy:

1. the student acts on the plain task;
2. each teacher view acts with its context added (the same model, the same task):

   - ``skills``: the skills retrieved for the task, in the system message;
   - ``skills@user``: the same skills at the end of every turn's latest observation
     (``teacher.skills_at="user"``, where a rule acted best for tool use in a probe);
   - ``skills@task``: the same skills once, at the end of the task's user message;
   - ``shuffled``: the same library, the *wrong* skills: those retrieved for a task of another
     template (control: does the right rule matter, or any rule-shaped text?);
   - ``irrelevant``: an unrelated text of the same length in the same place (control: does any
     added text move the model?);
   - ``reference``: the per-turn gold action (the instance's answer: an upper bound, not a rule);
   - ``skills+reference``, ``notes``;

3. unless ``--no-gap``, on the student's own trajectories, the mean per-token log-prob gap
   ``log pi_T(y | teacher context) - log pi_S(y | task)`` of the standard views (``skills``,
   ``reference``, ``skills+reference``, ``notes``): the signal OPD distills.

Each row reports success, parse rate (share of turns whose action parsed) and, for tool-use envs,
first-call accuracy: the share of episodes whose first action calls the gold first tool
(``first_tool``) and the share whose first call equals the gold call, arguments included
(``first_call``). The controls go where ``--controls-at`` says (default: where ``skills@user``
puts the skills). ``--init-from RUN`` measures a warm-started model. Prints a Markdown table and
writes JSON::

    python scripts/measure_teacher_gap.py --envs ToolWorld-Lite-v0 --splits test test_templates \\
        --tasks 64 --init-from runs/lite_warm --views skills skills@user shuffled irrelevant reference

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

#: teacher views measured: name -> (TeacherContextConfig views, where the skills block goes,
#: which control replaces the retrieved skills)
VIEWS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "skills": (("skills",), "system", ""),
    "skills@user": (("skills",), "user", ""),
    "skills@task": (("skills",), "task", ""),
    "shuffled": (("skills",), "controls", "shuffled"),
    "irrelevant": (("skills",), "controls", "irrelevant"),
    "reference": (("reference",), "system", ""),
    "skills+reference": (("skills", "reference"), "system", ""),
    "notes": (("notes",), "system", ""),
}
#: views whose log-prob gap ``--gap`` measures (the trainer's own teacher rows)
GAP_VIEWS = ("skills", "reference", "skills+reference", "notes")

#: the irrelevant control's source text: plain prose about nothing any env asks
FILLER = ("Bees visit many flowers in a single morning, and the colour of a meadow changes "
          "with the season. Rivers carry fine sand towards the sea, where it settles slowly. "
          "Old maps were drawn by hand and coloured with inks made from plants and minerals. ")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["Sokoban-Easy-v0"], help="env ids")
    p.add_argument("--splits", nargs="+", default=["test"],
                   help="held-out splits to measure on (each env's named splits)")
    p.add_argument("--tasks", type=int, default=32, help="held-out tasks per env and split")
    p.add_argument("--model", default="smollm2", help="model name")
    p.add_argument("--init-from", default="", help="merge this run's adapter first (a warm start)")
    p.add_argument("--views", nargs="+", default=["skills", "reference", "skills+reference", "notes"],
                   choices=list(VIEWS), help="teacher views to measure")
    p.add_argument("--skills-dir", default="", help="skill library root (default: shipped skills/)")
    p.add_argument("--controls-at", default="user", choices=["system", "user", "task"],
                   help="where the shuffled / irrelevant controls put their text")
    p.add_argument("--max-turns", type=int, default=2, help="turn cap per episode")
    p.add_argument("--max-tokens", type=int, default=24, help="tokens per action")
    p.add_argument("--max-skills", type=int, default=2, help="skills shown")
    p.add_argument("--max-skill-chars", type=int, default=500, help="skills section length cap")
    p.add_argument("--no-gap", action="store_true", help="skip the log-prob gap (acting only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = auto)")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    p.add_argument("--trajectories", default="",
                   help="also write each row's episodes here, one JSONL per env, split and row "
                        "(agentsd.store format: `agentsd show FILE` prints them)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.max_turns < 1 or args.max_tokens < 1:
        p.error("--tasks, --max-turns and --max-tokens must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# contexts: which text each task's teacher reads, and where

def context_config(args: argparse.Namespace, views: tuple[str, ...]) -> Any:
    from agentsd.hints import TeacherContextConfig

    return TeacherContextConfig(views=views, max_skills=args.max_skills,
                                max_skill_chars=args.max_skill_chars)


def _template(info: dict, obs: list) -> str:
    """What kind of task this is: the env's template, else the task text itself."""
    return str(info.get("template") or (obs[-1].get("content", "") if obs else ""))


def plan_skills(env_id: str, tasks: list, library: Any, cfg: Any) -> list[dict]:
    """Per task: its template and the skills retrieved for it (the teacher's normal context)."""
    import agentsd
    from agentsd.hints import select_for, task_query

    out = []
    for t in tasks:
        env = agentsd.make(env_id, **t.kwargs)
        try:
            obs, info = env.reset(seed=t.seed)
        finally:
            env.close()
        out.append({"template": _template(info, obs), "query": task_query(obs),
                    "skills": select_for(obs, library, env_id, cfg)})
    return out


def shuffled(plan: list[dict], library: Any, env_id: str, k: int) -> list[list[Any]]:
    """Each task gets the skills retrieved for the next task (cyclically) of *another* template
    that shares none of its skills: the same library, the wrong rule. Where no task qualifies, the task
    gets the ``k`` library skills *least* relevant to it."""
    n, out = len(plan), []
    pool = library.for_env(env_id) if library is not None else []
    for i, p in enumerate(plan):
        names = [getattr(s, "name", s) for s in p["skills"]]
        pick = next((plan[(i + j) % n]["skills"] for j in range(1, n)
                     if plan[(i + j) % n]["template"] != p["template"]
                     and not {getattr(s, "name", s) for s in plan[(i + j) % n]["skills"]} & set(names)),
                    None)
        if pick is None:
            pick = _least_relevant(pool, p["query"], names, k)
        out.append(list(pick))
    return out


def _least_relevant(pool: list, query: str, exclude: list[str], k: int) -> list:
    from agentsd.skills.retrieve import select_skills

    ranked = select_skills(pool, query, k=len(pool)) if pool else []
    return [s for s in reversed(ranked) if s.name not in exclude][:k]


def irrelevant(plan: list[dict], cfg: Any) -> list[list[str]]:
    """Each task gets unrelated prose as long as its own skills section would be."""
    from agentsd.hints import skills_section

    out = []
    for p in plan:
        n = max(len(skills_section(p["skills"], cfg)) - 80, 40)  # the section's title is kept
        out.append([(FILLER * (n // len(FILLER) + 1))[:n].rsplit(" ", 1)[0] + "."])
    return out


class UserSkillsEnv:
    """An env whose first observation ends with the skills section (the end of the task's user
    message); every later observation is the env's own. Everything else is delegated."""

    def __init__(self, env: Any, skills: list, cfg: Any) -> None:
        self.env, self.skills, self.cfg = env, skills, cfg

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kw: Any) -> Any:
        from agentsd.hints import skills_section, with_hint

        obs, info = self.env.reset(**kw)
        return with_hint(obs, skills_section(self.skills, self.cfg)), info

    def step(self, action: Any) -> Any:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


def view_tasks(env_id: str, tasks: list, view: str, plan: list[dict], library: Any,
               args: argparse.Namespace) -> list:
    """The held-out tasks as env factories that show the teacher context of ``view``."""
    import agentsd
    from agentsd.hints import TeacherViewEnv
    from agentsd.rollout import Task

    views, at, control = VIEWS[view]
    at = args.controls_at if at == "controls" else at
    cfg = dataclasses.replace(context_config(args, views), skills_at="user" if at == "user" else "system")
    chosen = (shuffled(plan, library, env_id, args.max_skills) if control == "shuffled" else
              irrelevant(plan, cfg) if control == "irrelevant" else [p["skills"] for p in plan])

    def factory(t: Any, skills: list) -> Any:
        def make() -> Any:
            env = agentsd.make(env_id, max_turns=args.max_turns, **t.kwargs)
            if at == "task":
                return UserSkillsEnv(env, skills, cfg)
            # an empty explicit list would make TeacherViewEnv retrieve; a task without skills
            # gets none (the shuffled control's rare task with no other-template neighbour)
            return TeacherViewEnv(env, cfg if skills or "skills" not in views else
                                  dataclasses.replace(cfg, views=tuple(v for v in views if v != "skills")),
                                  skills=skills, library=library, env_id=env_id)
        return make

    return [Task(factory(t, s), t.seed) for t, s in zip(tasks, chosen)]


# ---------------------------------------------------------------------------------------------
# acting and scoring

def rates(trajs: list) -> dict[str, Any]:
    """Success, parse rate and first-call accuracy of a set of episodes."""
    n = max(len(trajs), 1)
    turns = [t for tr in trajs for t in tr.turns]
    out: dict[str, Any] = {"tasks": len(trajs),
                           "success": sum(t.success for t in trajs) / n,
                           "parse_rate": sum(t.parse == "ok" for t in turns) / max(len(turns), 1)}
    from agentsd.distill.episodes import first_call_rates

    out.update(first_call_rates(trajs))  # the trainer's own first_tool / first_call
    return out


def act(policy: Any, tasks: list, args: argparse.Namespace) -> list:
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import RolloutConfig, run_rollouts

    res = run_rollouts(policy, tasks=tasks, params=SamplingParams(
        temperature=0.0, max_tokens=args.max_tokens, seed=0), config=RolloutConfig(
            max_turns=args.max_turns, batch_wait_s=3600.0, max_concurrent=max(64, len(tasks)),
            record_privileged=True))
    return res.trajectories


def log_prob_gap(args: argparse.Namespace, env_id: str, view: str, trajs: list, model: Any,
                 tok: Any, pad_id: int) -> float:
    """Mean ``log pi_T - log pi_S`` over the student's action tokens, with the trainer's own
    teacher rows for ``view``."""
    import torch

    from agentsd.distill.config import ModelConfig, RolloutSettings, TeacherConfig, TrainConfig
    from agentsd.distill.teacher import forward_logprobs, pad_rows, score_rows
    from agentsd.distill.trainer import _TeacherContexts

    cfg = TrainConfig(algo="opd", out_dir=str(Path("/tmp") / "agentsd-measure" / env_id.replace("/", "_")),
                      progress=False, model=ModelConfig(name=args.model),
                      rollout=RolloutSettings(env=env_id, max_turns=args.max_turns,
                                              max_tokens=args.max_tokens, eval_sampled=False),
                      teacher=TeacherConfig(context=context_config(args, VIEWS[view][0]),
                                            skills_dir=args.skills_dir))
    ctx = _TeacherContexts(cfg, tok)
    gaps: list[float] = []
    for tr in trajs:
        mask = torch.tensor(tr.action_mask(), dtype=torch.bool)
        ids, attn = pad_rows([tr.token_ids()], pad_id)
        with torch.no_grad():
            s_lp = forward_logprobs(model, ids, attn)["logp_BT"][0][mask]
            t_lp = score_rows(model, ctx.rows(tr, 0), [len(mask)], pad_id)
        gaps += (t_lp["teacher_logp_BT"][0][mask] - s_lp).tolist()
    return statistics.mean(gaps) if gaps else float("nan")


def measure_env(args: argparse.Namespace, env_id: str, split: str, model: Any, tok: Any,
                library: Any, done: list[dict] | None = None) -> list[dict]:
    """Every row of one env and split: the student, then each view (each row also appended to
    ``done`` and written to ``--out`` as it comes: a long run killed midway keeps its rows)."""
    done = [] if done is None else done
    from agentsd.policy.hf import HFPolicy
    from agentsd.rollout import Task, split_tasks

    policy = HFPolicy(model, tok)
    tasks = split_tasks(env_id, split, args.tasks)
    plan = plan_skills(env_id, tasks, library, context_config(args, ("skills",)))
    t = time.perf_counter()
    plain = [Task(env_id, x.seed, {**x.kwargs, "max_turns": args.max_turns}) for x in tasks]
    trajs = act(policy, plain, args)
    _save_trajectories(args, env_id, split, "student", trajs)
    rows = [_row("student (plain task)", env_id, split, rates(trajs), time.perf_counter() - t)]
    _keep(args, done, rows[-1])
    for view in args.views:
        t = time.perf_counter()
        acted = act(policy, view_tasks(env_id, tasks, view, plan, library, args), args)
        _save_trajectories(args, env_id, split, view, acted)
        r = _row(f"teacher context: {view}", env_id, split, rates(acted), time.perf_counter() - t)
        if not args.no_gap and view in GAP_VIEWS:
            r["gap_mean"] = log_prob_gap(args, env_id, view, trajs, model, tok, policy.pad_token_id)
        rows.append(r)
        _keep(args, done, r)
    return rows


def _save_trajectories(args: argparse.Namespace, env_id: str, split: str, who: str, trajs: list) -> None:
    if not args.trajectories:
        return
    from agentsd.store import write_jsonl

    name = f"{env_id}_{split}_{who}".replace("/", "_").replace("@", "-at-")
    write_jsonl(trajs, Path(args.trajectories) / f"{name}.jsonl")


def _keep(args: argparse.Namespace, done: list[dict], row: dict) -> None:
    done.append(row)
    print(table([row], header=False), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": done}, indent=1))


def _row(name: str, env_id: str, split: str, r: dict, wall: float) -> dict:
    return {"policy": name, "env": env_id, "split": split, **r, "wall_s": round(wall, 1)}


def table(rows: list[dict], header: bool = True) -> str:
    lines = ["| env | split | who acts | held-out success (greedy) | parse rate | first tool | "
             "first call | log-prob gap |", "|---|---|---|---|---|---|---|---|"] if header else []
    for r in rows:
        cell = {k: (f"{r[k]:.3f}" if k in r else "-") for k in ("first_tool", "first_call", "gap_mean")}
        lines.append(f"| {r['env']} | {r['split']} | {r['policy']} | {r['success']:.3f} "
                     f"({r['tasks']} tasks) | {r['parse_rate']:.2f} | {cell['first_tool']} | "
                     f"{cell['first_call']} | {cell['gap_mean']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from agentsd.distill.config import ModelConfig, TrainConfig
    from agentsd.distill.trainer import build_student
    from agentsd.skills import SkillLibrary, load_library
    from agentsd.threads import apply_threads, pick_threads

    apply_threads(pick_threads(args.threads or None))
    try:
        cfg0 = TrainConfig(algo="opd", model=ModelConfig(name=args.model, init_from=args.init_from,
                                                          lora=False))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, tok = build_student(cfg0)
    model.eval()
    rows = []
    for env_id in args.envs:
        try:
            library = load_library(args.skills_dir or None, env=env_id)
        except Exception as e:  # the skill views then show no skills; the run says so
            print(f"warning: no skill library for {env_id} ({e}); skill views show none",
                  file=sys.stderr)
            library = SkillLibrary()
        for split in args.splits:
            measure_env(args, env_id, split, model, tok, library, rows)
    print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
