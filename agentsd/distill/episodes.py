"""Episodes for the trainer: the step's train tasks (:func:`train_seeds`), its on-policy rollouts
and demonstrations, and held-out evaluation of the student and of the teacher context acting
(:func:`evaluate`, :func:`evaluate_teacher`). All of it is importable from
:mod:`agentsd.distill.trainer` as before.

Every episode's randomness derives from ``(seed, step)``: the tasks are a pure function of them,
sampling is seeded, and the rollout engine batches deterministically, so a resumed run samples
what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from agentsd.distill.config import TrainConfig
from agentsd.trajectory import Trajectory

__all__ = ["train_seeds", "split_seeds_at", "rollouts", "demos", "eval_tasks", "evaluate",
           "evaluate_teacher", "advantage_contexts", "teacher_advantage", "fmt_advantage",
           "no_advantage_message", "check_teacher", "fmt_eval"]


def train_seeds(cfg: TrainConfig, step: int, n: int | None = None) -> list[int]:
    """The train-split task seeds of ``step``: a pure function of (run seed, step)."""
    import numpy as np

    import agentsd

    rng = np.random.default_rng([cfg.seed, step, 7])
    pool = agentsd.split_seeds(cfg.rollout.env, "train", 1, offset=0)[0]
    picks = rng.choice(100_000, size=n or cfg.rollout.tasks_per_step, replace=False)
    return [pool + int(p) for p in picks]


def split_seeds_at(cfg: TrainConfig, step: int, n: int, split: str) -> list[int]:
    """``n`` task seeds of ``split`` for ``step``, a pure function of (run seed, step): the
    train split's are :func:`train_seeds`; another split's are drawn the same way from its own
    seed range (at most its first 100,000 seeds)."""
    import numpy as np

    import agentsd

    if split == "train":
        return train_seeds(cfg, step, n)
    lo, hi = agentsd.spec(cfg.rollout.env).splits[split].seeds
    size = min(hi - lo, 100_000)
    if n > size:
        raise ValueError(f"split {split!r} of {cfg.rollout.env} has {hi - lo} seeds; a step asks "
                         f"for {n} demos (lower --rollout.tasks-per-step)")
    picks = np.random.default_rng([cfg.seed, step, 7]).choice(size, size=n, replace=False)
    return [lo + int(p) for p in picks]


def rollouts(policy: Any, cfg: TrainConfig, seeds: Sequence[int] | None, samples: int,
              temperature: float, sample_seed: int, progress: bool, tasks: Sequence[Any] = (),
              record_privileged: bool = False) -> tuple[list[Trajectory], Any]:
    """``samples`` episodes of each of ``tasks`` (or of the train-split ``seeds``) by ``policy``
    at ``temperature``, and the engine's summary; ``record_privileged`` records each turn's
    views for the teacher."""
    from agentsd.distill.fsdp import full_weights
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import RolloutConfig, Task, run_rollouts, split_kwargs

    rc = cfg.rollout
    if not tasks:
        kw = split_kwargs(rc.env, "train")
        tasks = [Task(rc.env, s, kw) for s in seeds or []]
    params = SamplingParams(temperature=temperature, top_p=rc.top_p if temperature > 0 else 1.0,
                            max_tokens=rc.max_tokens, seed=sample_seed)
    # batch_wait_s: wait for every pending env step before generating, so the batches (and
    # hence the samples) do not depend on thread timing; exact resume relies on it
    # FSDP: the full weights gathered once, as the ranks run different numbers of forwards
    with full_weights(getattr(policy, "model", None)):
        res = run_rollouts(policy, tasks=list(tasks), samples_per_task=samples, params=params,
                           config=RolloutConfig(max_turns=rc.max_turns,
                                                max_episode_tokens=rc.max_episode_tokens,
                                                batch_wait_s=3600.0, progress=progress,
                                                max_concurrent=max(64, len(tasks) * samples),
                                                record_privileged=record_privileged))
    return res.trajectories, res.summary


def demos(cfg: TrainConfig, step: int, tokenizer: Any, library: Any,
           pool: list[Trajectory] | None = None) -> list[Trajectory]:
    """The step's demonstrations: ``tasks_per_step * samples_per_task`` of them (the episode
    budget of a rollout step), drawn from ``pool`` (a demo file's, loaded once a run) or played
    by the oracle on ``demos.split``'s seeds *and* kwargs (ToolWorld-Lite's ``warm``: templates
    never trained or evaluated), a ``demos.teacher_frac`` share in the teacher's context."""
    import numpy as np

    from agentsd.demos import oracle_demos
    from agentsd.rollout import split_kwargs

    n = cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
    rng = np.random.default_rng([cfg.seed, step, 11])
    in_teacher = rng.random(n) < cfg.demos.teacher_frac
    if pool is not None:
        return [pool[int(i)] for i in rng.integers(0, len(pool), size=n)]
    split = cfg.demos.split
    seeds = split_seeds_at(cfg, step, n, split)
    kw = dict(kwargs=split_kwargs(cfg.rollout.env, split), max_turns=cfg.rollout.max_turns)
    ctx = cfg.teacher_views()
    out = []
    for seed, t in zip(seeds, in_teacher):
        out += oracle_demos(cfg.rollout.env, [seed], tokenizer, teacher=ctx if t else None,
                            library=library, **kw)
    return out


# ---------------------------------------------------------------------------------------------
# evaluation

class _ActingTeacher:
    """The student's policy run with the teacher's weights (for the teacher's own acting)."""

    def __init__(self, policy: Any, teacher: Any) -> None:
        self.policy, self.teacher = policy, teacher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def generate(self, prompts: Any, params: Any, **kw: Any) -> Any:
        # kw: e.g. KV-reuse cache keys; the kept caches hold the teacher's keys/values, and the
        # rollout engine releases them when its episodes end
        with self.teacher.scoring():
            return self.policy.generate(prompts, params, **kw)


def eval_tasks(cfg: TrainConfig) -> list[Any]:
    """The held-out tasks: the first ``eval_tasks`` test-split seeds *with the split's kwargs*."""
    from agentsd.rollout import split_tasks

    return split_tasks(cfg.rollout.env, "test", cfg.rollout.eval_tasks)


def _rates(trajs: list[Trajectory], prefix: str) -> dict[str, float]:
    n = max(len(trajs), 1)
    turns = [t for tr in trajs for t in tr.turns]
    return {f"{prefix}success": sum(t.success for t in trajs) / n,
            f"{prefix}reward": sum(t.total_reward for t in trajs) / n,
            f"{prefix}turns": len(turns) / n,
            f"{prefix}parse_rate": sum(t.parse == "ok" for t in turns) / max(len(turns), 1),
            **first_call_rates(trajs, prefix)}


def first_call_rates(trajs: list[Trajectory], prefix: str = "") -> dict[str, float]:
    """``first_tool`` / ``first_call``: the share of episodes whose first action's first tool
    call names the reference's first tool / equals it, arguments included. What a workflow rule
    changes first, where success is too rare to show it. Only for episodes that recorded a
    per-turn reference that is a tool call (ToolWorld); ``{}`` otherwise (Sokoban, code).

    >>> from agentsd.trajectory import Trajectory, Turn
    >>> call = '<tool_call>{"name": "a__b", "arguments": {"x": 1}}</tool_call>'
    >>> t = Trajectory(env_id="e", turns=[Turn(action_text=call.replace("1", "2"),
    ...                                        privileged={"reference": call})])
    >>> first_call_rates([t])
    {'first_tool': 1.0, 'first_call': 0.0}
    """
    from agentsd.skills.guidance import parse_calls

    golds = [parse_calls((tr.turns[0].privileged or {}).get("reference") or "") if tr.turns else []
             for tr in trajs]
    if not any(golds):
        return {}
    acted = [parse_calls(tr.turns[0].action_text or "") if tr.turns else [] for tr in trajs]
    n = max(len(trajs), 1)
    return {f"{prefix}first_tool": sum(bool(a and g) and a[0][0] == g[0][0] for a, g in zip(acted, golds)) / n,
            f"{prefix}first_call": sum(bool(a and g) and a[0] == g[0] for a, g in zip(acted, golds)) / n}


def evaluate(policy: Any, cfg: TrainConfig, progress: bool = False, tasks: Sequence[Any] = (),
             prefix: str = "eval/") -> dict[str, float]:
    """Held-out success, reward, turns, parse rate (share of turns whose action parsed) and,
    on ToolWorld, :func:`first_call_rates`, greedy (``eval_temperature``) and, with
    ``rollout.eval_sampled``, at temperature 1 (``…_t1``), on :func:`eval_tasks` (or ``tasks``)."""
    tasks = list(tasks) or eval_tasks(cfg)
    refs = cfg.rollout.env.startswith("ToolWorld")  # a tool-call reference: first-call rates
    trajs, _ = rollouts(policy, cfg, None, 1, cfg.rollout.eval_temperature,
                         sample_seed=cfg.seed * 7919 + 17, progress=progress, tasks=tasks,
                         record_privileged=refs)
    out = _rates(trajs, prefix)
    if cfg.rollout.eval_sampled:
        trajs, _ = rollouts(policy, cfg, None, 1, 1.0, sample_seed=cfg.seed * 7919 + 29,
                             progress=progress, tasks=tasks, record_privileged=refs)
        out.update({k + "_t1": v for k, v in _rates(trajs, prefix).items()})
    return out


def evaluate_teacher(policy: Any, teacher: Any, contexts: Any, cfg: TrainConfig,
                     progress: bool = False, context: Any = None,
                     prefix: str = "teacher/eval_") -> dict[str, float]:
    """The teacher context *acting* (teacher weights, skills and per-turn hints in its prompt)
    on the held-out tasks: ``teacher/eval_success``, ``teacher/eval_parse_rate`` ...;
    ``context`` (a :class:`~agentsd.hints.TeacherContextConfig`) replaces the run's views."""
    from agentsd.distill.fsdp import sharded
    from agentsd.rollout import Task

    tasks = [Task(contexts.env_factory(t, cfg.rollout.max_turns, context), t.seed)
             for t in eval_tasks(cfg)]
    greedy = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, eval_sampled=False))
    if sharded(policy.model):  # FSDP: the teacher's shards swapped in once, then gathered
        with teacher.scoring():
            return evaluate(policy, greedy, progress, tasks=tasks, prefix=prefix)
    return evaluate(_ActingTeacher(policy, teacher), greedy, progress, tasks=tasks, prefix=prefix)


# ---------------------------------------------------------------------------------------------
# the teacher's advantage at step 0

def advantage_contexts(ctx: Any, wanted: Sequence[str]) -> dict[str, Any]:
    """The teacher contexts behind each wanted view name, as far as ``ctx``'s views allow:
    ``skills`` (skills only), ``hints`` (the configured non-skill views), ``both`` (skills and
    hints: the configured context). A name the context cannot form is left out.

    >>> from agentsd.hints import TeacherContextConfig
    >>> out = advantage_contexts(TeacherContextConfig(views=("skills", "reference")), ("skills", "hints", "both"))
    >>> {k: v.views for k, v in out.items()}
    {'skills': ('skills',), 'hints': ('reference',), 'both': ('skills', 'reference')}
    >>> list(advantage_contexts(TeacherContextConfig(views=("reference",)), ("skills", "hints", "both")))
    ['hints']
    """
    hints = tuple(v for v in ctx.views if v != "skills")
    has_skills = "skills" in ctx.views
    views = {"skills": ("skills",) if has_skills else (), "hints": hints,
             "both": ctx.views if has_skills and hints else ()}
    return {name: dataclasses.replace(ctx, views=views[name]) for name in wanted if views[name]}


def teacher_advantage(ev: dict[str, float], acting: Any, ctx: Any,
                      wanted: Sequence[str]) -> dict[str, float]:
    """``teacher/eval_success/<view>``, ``teacher/eval_parse_rate/<view>`` and
    ``teacher/advantage/<view>`` (teacher success minus the student's ``eval/success``) for each
    view of :func:`advantage_contexts`. ``ev`` holds the student's step-0 numbers and, when
    measured, the configured context's (``teacher/eval_*``), reused for the view equal to it;
    ``acting(context)`` measures any other view (its ``teacher/eval_*`` numbers)."""
    out: dict[str, float] = {}
    for name, view_ctx in advantage_contexts(ctx, wanted).items():
        got = (ev if view_ctx.views == ctx.views and "teacher/eval_success" in ev
               else acting(view_ctx))
        out[f"teacher/eval_success/{name}"] = got["teacher/eval_success"]
        out[f"teacher/eval_parse_rate/{name}"] = got["teacher/eval_parse_rate"]
        out[f"teacher/advantage/{name}"] = got["teacher/eval_success"] - ev["eval/success"]
        if "teacher/eval_first_tool" in got and "eval/first_tool" in ev:  # what a workflow rule moves first
            out[f"teacher/eval_first_tool/{name}"] = got["teacher/eval_first_tool"]
            out[f"teacher/advantage_first_tool/{name}"] = got["teacher/eval_first_tool"] - ev["eval/first_tool"]
    return out


def fmt_advantage(ev: dict[str, float], n_tasks: int) -> str:
    """The one line a run prints at step 0: the student's held-out success and each teacher
    view's, with its advantage in points."""
    names = [k.rsplit("/", 1)[1] for k in ev if k.startswith("teacher/advantage/")]
    parts = [f"{n} {ev[f'teacher/eval_success/{n}']:.1%} "
             f"({100 * ev[f'teacher/advantage/{n}']:+.1f} pts)" for n in names]
    return (f"teacher advantage at step 0 (held-out success, {n_tasks} tasks, greedy): student "
            f"{ev['eval/success']:.1%}; " + "; ".join(parts))


def no_advantage_message(ev: dict[str, float]) -> str | None:
    """The plain sentence for a run whose skills alone give the teacher no advantage (``None``
    when they do, or when skills-only was not measured)."""
    adv = ev.get("teacher/advantage/skills")
    if adv is None or adv > 0:
        return None
    rest = [n for n in ("hints", "both") if ev.get(f"teacher/advantage/{n}", 0.0) > 0]
    where = (f"whatever the teacher teaches comes from the {' and '.join(rest)} view"
             if rest else "no measured view acts better than the student either")
    return (f"the skills alone give the teacher no advantage: skills-only "
            f"{ev['teacher/eval_success/skills']:.1%} vs student {ev['eval/success']:.1%} held-out "
            f"success; {where}. Training goes on.")


def fmt_eval(e: dict[str, float]) -> str:
    parts = [f"held-out success {e['eval/success']:.1%} (parse {e['eval/parse_rate']:.0%})"]
    if "eval/success_t1" in e:
        parts.append(f"T=1 {e['eval/success_t1']:.1%} (parse {e['eval/parse_rate_t1']:.0%})")
    if "teacher/eval_success" in e:
        parts.append(f"teacher acting {e['teacher/eval_success']:.1%} "
                     f"(parse {e['teacher/eval_parse_rate']:.0%})")
    return "; ".join(parts)


def check_teacher(e: dict[str, float], stacklevel: int = 2) -> str | None:
    """Distilling from a teacher that succeeds less often than the student pulls the student
    down: say so loudly (the fix is a warm start that covers the teacher's context,
    ``--algo sft``). Success decides; the parse rates are context. The warning is attributed
    ``stacklevel`` frames up (2: the caller, the trainer). Returns the message, or ``None``."""
    import warnings

    if not e["teacher/eval_success"] < e["eval/success"]:
        return None
    msg = (f"the teacher context acts worse than the student (held-out success "
           f"{e['teacher/eval_success']:.1%} vs {e['eval/success']:.1%}; parse rate "
           f"{e['teacher/eval_parse_rate']:.0%} vs {e['eval/parse_rate']:.0%}); distilling from it "
           "can make the student worse. Warm-start first: agentsd train --algo sft "
           "(demos.teacher_frac > 0), then --model.init-from that run")
    warnings.warn(msg, stacklevel=stacklevel)
    return msg
