"""The teacher's context, in one place: what the teacher sees beyond the student's task, and how
that becomes the teacher's token rows. A reader following one teacher row reads this file:

1. **step-wise views** (:func:`turn_views`): the rollout engine records, on every turn, the
   privileged views of the state the student actually reached (``Turn.privileged``), plus the
   env's next gold action written in its own action format (``reference``);
2. **feedback views** (:func:`feedback_for`): SD-Zero's reviser and SDPO's sibling teachers read
   another sample of the same group, as a ``feedback`` view of turn 0;
3. **skill selection** (:func:`select_for`, :class:`TeacherContexts`): the skills retrieved for
   a task (a usefulness bandit over them when configured), from the run's library snapshot;
4. **composition** (:func:`hint_text`, :func:`skills_section`, :func:`turn_messages`): skills as
   bounded shared rules in the system message (``skills_at="system"``) or at the end of the
   latest observation (``"user"``), and each turn's hint at the end of its observation, next to
   where the teacher generates;
5. **rendering into rows** (:func:`teacher_row`): the student's messages plus the teacher's
   additions, rendered by the rollout engine's own renderer, with the student's action tokens
   copied verbatim, so the teacher's token ids equal the student's except for the additions;
6. **the acting teacher** (:class:`TeacherViewEnv`): an env that shows the same context, for
   letting the teacher act (measuring what it can do) and for demonstrations in its context.

The view configuration and the pure text pieces it builds on (:class:`TeacherContextConfig`,
``reveal``, the episode-mode guidance block) live in :mod:`agentsd.hints`.

>>> cfg = TeacherContextConfig(views=("skills", "reference"), skills_at="user")
>>> obs = [{"role": "system", "content": "Play."}, {"role": "user", "content": "Board"}]
>>> msgs = turn_messages(obs, ["Push boxes toward targets."], {"reference": "<answer>Up</answer>"}, cfg)
>>> msgs[0] == obs[0], msgs[1]["content"].startswith("Board"), msgs[1]["content"].endswith("Up</answer>")
(True, True, True)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentsd.hints import (
    _EXPOSED,
    _TITLES,
    TeacherContextConfig,
    _fmt,
    action_text,
    build_teacher_messages,
    reveal,
    task_query,
)
from agentsd.types import Message, Privileged

if TYPE_CHECKING:
    from agentsd.skills.library import Skill
    from agentsd.trajectory import Trajectory

__all__ = ["turn_views", "views_privileged", "failure_feedback", "feedback_for",
           "with_feedback_view", "select_for", "skills_section", "hint_text", "with_hint",
           "with_skills", "turn_messages", "TeacherRow", "AlignmentError", "render_prompt",
           "build_teacher_rows", "teacher_row", "TeacherViewEnv", "TeacherContexts",
           "snapshot_library", "REFERENCE_LEAD", "SKILLS_TITLE"]

#: what the teacher is told right before it would reply (the end of the latest observation)
REFERENCE_LEAD = "The correct reply is: "
SKILLS_TITLE = ("Skills learned from earlier episodes (general rules; any example in them comes "
                "from another task)")
_FENCE_RE = re.compile(r"```.*?(```|$)", re.S)
_CONCRETE_RE = re.compile(r"<answer>|<tool_call>|\"arguments\"|^\s*(example|e\.g\.)", re.I)


# ---------------------------------------------------------------------------------------------
# 1. step-wise views

def turn_views(env: Any) -> dict[str, Any]:
    """The privileged views of the state ``env`` is in now, JSON-safe, plus ``reference``: the
    env's next gold action (``oracle_action()``) written in its own action format. The rollout
    engine records this on every turn (``Turn.privileged``) so the trainer never replays an
    episode to rebuild the teacher's context."""
    import json

    priv = env.privileged() if hasattr(env, "privileged") else Privileged()
    out = {k: v for k, v in dataclasses.asdict(priv).items() if v not in (None, "", [], {})}
    try:
        out = json.loads(json.dumps(out, default=str))
    except (TypeError, ValueError):
        out = {}
    oracle = getattr(env, "oracle_action", None)
    ref = action_text(oracle()) if callable(oracle) else None
    if ref:
        out["reference"] = ref
    return out


def views_privileged(views: dict[str, Any]) -> Privileged:
    """Recorded views (``Turn.privileged``) as a :class:`~agentsd.types.Privileged`, the
    reference reply under ``extra``."""
    names = {f.name for f in dataclasses.fields(Privileged)}
    p = Privileged(**{k: v for k, v in views.items() if k in names})
    if views.get("reference"):
        p.extra = {**p.extra, "reference": views["reference"]}
    return p


# ---------------------------------------------------------------------------------------------
# 2. feedback views

def failure_feedback(traj: Trajectory, max_chars: int = 600) -> str:
    """A short account of an attempt (its actions and the env's last replies), for the
    ``feedback`` view (SD-Zero / reviser-style teachers)."""
    lines = [f"A previous attempt {'succeeded' if traj.success else 'failed'} "
             f"(reward {traj.total_reward:.2f}, ended by {traj.stop_reason or 'unknown'})."]
    replies = [t.observation for t in traj.turns[1:]] + [traj.final_observation]
    for turn, reply in list(zip(traj.turns, replies, strict=True))[-3:]:
        said = " ".join(str(m.get("content") or "") for m in reply).strip()
        lines.append(f"Action: {turn.action_text.strip()[:150]}\nReply: {said[:150]}")
    text = "\n".join(lines)
    return text[:max_chars]


def feedback_for(trajs: Sequence[Trajectory], mode: str, G: int,
                 ) -> tuple[list[str | None], list[bool]]:
    """The ``feedback`` view of each trajectory of a step (task-major, ``G`` a task) and
    whether it has a teacher at all; nothing is written into the trajectories.

    - ``"reviser"`` (SD-Zero): the group's previous sample, an earlier attempt at the same task,
      described with its reward and the env's replies (:func:`failure_feedback`); with
      ``G == 1`` the trajectory's own attempt;
    - ``"sibling"`` (SDPO): the first *other* successful sample of the group; a trajectory
      without one is not distilled (``False``);
    - ``"none"``: no feedback, every trajectory has a teacher.
    """
    texts: list[str | None] = [None] * len(trajs)
    keep = [True] * len(trajs)
    if mode == "none":
        return texts, keep
    for s in range(0, len(trajs), G):
        group = trajs[s:s + G]
        for g in range(len(group)):
            if mode == "reviser":
                src = group[(g - 1) % len(group)]
            else:
                src = next((o for j, o in enumerate(group) if j != g and o.success), None)
            if src is None:
                keep[s + g] = False
            else:
                texts[s + g] = failure_feedback(src)
    return texts, keep


def with_feedback_view(traj: Trajectory, feedback: str | None) -> Trajectory:
    """``traj`` as the teacher reads it: a copy whose turn 0 carries ``feedback`` in its views
    (``Turn.privileged["extra"]["feedback"]``, read before every action); ``traj`` itself is
    unchanged. ``None`` (or a trajectory without turns) returns ``traj``."""
    if feedback is None or not traj.turns:
        return traj
    views = dict(traj.turns[0].privileged or {})
    views["extra"] = {**(views.get("extra") or {}), "feedback": feedback}
    first = dataclasses.replace(traj.turns[0], privileged=views)
    return dataclasses.replace(traj, turns=[first, *traj.turns[1:]])


# ---------------------------------------------------------------------------------------------
# 3. skill selection

def select_for(task_messages: Sequence[Message], library: Any, env_id: str,
               config: TeacherContextConfig, bandit: Any = None) -> list[Any]:
    """The skills retrieved for this task (empty when the config shows none): the best-ranked
    ones, at most one *workflow* among them. A second workflow is another kind of task's recipe
    (on ToolWorld-Lite, ``reschedule_event`` ranked ``delete_event``'s second), the "other
    family's rule" that a probe found acts no better than no rule; a pitfall or a convention
    takes its place."""
    if "skills" not in config.views or config.max_skills <= 0 or library is None:
        return []
    from agentsd.skills.retrieve import select_skills

    pool = library.for_env(env_id)
    ranked = select_skills(pool, task_query(task_messages), k=len(pool), mode=config.retrieval,
                           bandit=bandit, usefulness=config.usefulness)
    out: list[Any] = []
    for s in ranked:
        if getattr(s, "kind", "") == "workflow" and any(x.kind == "workflow" for x in out):
            continue
        out.append(s)
        if len(out) == config.max_skills:
            break
    return out


# ---------------------------------------------------------------------------------------------
# 4. composition

def skills_section(skills: Sequence[Skill | str], config: TeacherContextConfig) -> str:
    """The skills as bounded shared rules: at most ``max_skills``, lines that show a concrete
    action (another episode's answer or tool call) dropped, ``max_skill_chars`` in all."""
    chosen = list(skills)[: config.max_skills]
    if not chosen:
        return ""
    parts = []
    for s in chosen:
        if isinstance(s, str):
            body, head = s.strip(), ""
        else:
            body, head = s.body, f"{s.name}: {s.description}"
        body = _FENCE_RE.sub("", body)  # fenced blocks show other episodes' boards and calls
        lines = [ln for ln in body.splitlines() if ln.strip() and not _CONCRETE_RE.search(ln)]
        parts.append("\n".join(([f"- {head}"] if head else []) + lines))
    text = "\n".join(parts)
    if len(text) > config.max_skill_chars:
        text = text[: config.max_skill_chars].rsplit("\n", 1)[0]
    return f"## {SKILLS_TITLE}\n{text}"


def _hint_value(views: dict[str, Any], name: str, config: TeacherContextConfig) -> Any:
    if name in (*_EXPOSED, "next_step"):
        return reveal(views.get(name), config.exposure)
    if name.startswith("extra:"):
        return (views.get("extra") or {}).get(name[6:])
    if name == "feedback":
        return (views.get("extra") or {}).get("feedback")
    return views.get(name)


def hint_text(views: dict[str, Any] | None, config: TeacherContextConfig) -> str:
    """The per-turn hint (step mode): the configured views of the state reached on this turn, the
    reference reply last (closest to where the teacher generates). ``""`` when nothing to show.

    >>> hint_text({"reference": "<answer>Up</answer>", "notes": "2 moves"},
    ...           TeacherContextConfig(views=("notes", "reference")))
    'Notes about this task: 2 moves\\nThe correct reply is: <answer>Up</answer>'
    """
    if not views:
        return ""
    lines, ref = [], None
    for name in config.views:
        if name == "skills":
            continue
        if name == "reference":
            ref = views.get("reference") if config.exposure > 0 else None
            continue
        value = _hint_value(views, name, config)
        if value in (None, "", [], {}):
            continue
        lines.append(f"{_TITLES.get(name, name.split(':', 1)[-1])}: {_fmt(value, config.max_view_chars)}")
    if ref:
        lines.append(REFERENCE_LEAD + str(ref)[: config.max_view_chars])
    return "\n".join(lines)


def with_hint(observation: Sequence[Message], hint: str) -> list[Message]:
    """``observation`` with ``hint`` appended to its last message (a user or tool message: the
    end of what the model reads before it replies). Pure; ``hint == ""`` changes nothing."""
    msgs = [dict(m) for m in observation]
    if hint and msgs:
        msgs[-1]["content"] = (msgs[-1].get("content") or "") + "\n\n" + hint
    return msgs  # type: ignore[return-value]


def with_skills(task_messages: Sequence[Message], skills: Sequence[Skill | str],
                config: TeacherContextConfig) -> list[Message]:
    """The first observation with the skills section appended to its system message (one is
    prepended when there is none); unchanged when the config places skills elsewhere
    (``skills_at="user"``, :func:`turn_messages`). Pure."""
    msgs = [dict(m) for m in task_messages]
    section = skills_section(skills, config) if "skills" in config.views else ""
    if not section or config.skills_at != "system":
        return msgs  # type: ignore[return-value]
    if msgs and msgs[0].get("role") == "system":
        msgs[0]["content"] = (msgs[0].get("content") or "").rstrip() + "\n\n" + section
    else:
        msgs.insert(0, {"role": "system", "content": section})
    return msgs  # type: ignore[return-value]


def _episode_views(msgs: list[Message], views: dict[str, Any] | None,
                   config: TeacherContextConfig) -> list[Message]:
    """Episode mode: turn 0's views (without skills) in the system message."""
    rest = tuple(v for v in config.views if v != "skills")
    if config.exposure_mode == "step" or not rest:
        return msgs
    return build_teacher_messages(msgs, views_privileged(views or {}), [],
                                  dataclasses.replace(config, views=rest))


def turn_messages(observation: Sequence[Message], skills: Sequence[Skill | str],
                  views: dict[str, Any] | None, config: TeacherContextConfig,
                  first: bool = True) -> list[Message]:
    """One turn's observation as the teacher reads it: on the first turn the skills in the
    system message (``skills_at="system"``) and, in episode mode, turn 0's views there too;
    then, at the end of the latest observation message, the skills (``skills_at="user"``, every
    turn) followed by this turn's hint (step mode, :func:`hint_text` of ``views``). Pure."""
    msgs = list(observation)
    if first:
        msgs = _episode_views(with_skills(msgs, skills, config), views, config)
    tail = []
    if config.skills_at == "user" and "skills" in config.views:
        tail.append(skills_section(skills, config))
    if config.exposure_mode == "step":
        tail.append(hint_text(views, config))
    return with_hint(msgs, "\n\n".join(t for t in tail if t))


# ---------------------------------------------------------------------------------------------
# 5. rendering into rows

class AlignmentError(ValueError):
    """The teacher row does not carry the student's tokens where the alignment says it does."""


@dataclass
class TeacherRow:
    """One teacher forward sequence and where its scored tokens sit in the student sequence."""

    traj_index: int
    input_ids: list[int]
    #: positions in ``input_ids`` whose token log-probs the teacher provides
    row_pos: list[int] = field(default_factory=list)
    #: the same tokens' positions in the student's :meth:`Trajectory.token_ids`
    student_pos: list[int] = field(default_factory=list)


def render_prompt(tokenizer: Any, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template with the generation
    prompt appended (what a model sees right before it answers). Rendered to text and encoded
    without added special tokens, exactly as the rollout engine renders a first prompt."""
    kw = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def _check_aligned(traj: Trajectory, rows: Sequence[TeacherRow], ids: list[int], why: str) -> None:
    for r in rows:
        bad = [i for i, j in zip(r.row_pos, r.student_pos, strict=True) if r.input_ids[i] != ids[j]]
        if bad or any(i < 1 for i in r.row_pos):
            raise AlignmentError(f"trajectory {traj.id}: teacher row does not carry the student's "
                                 f"action tokens at {bad[:5]}{why}")


def _action_spans(traj: Trajectory) -> list[tuple[int, int]]:
    """Student positions ``[start, end)`` of each turn's action tokens."""
    spans, pos = [], 0
    for turn in traj.turns:
        start = pos + len(turn.prompt_ids)
        spans.append((start, start + len(turn.action_ids)))
        pos = start + len(turn.action_ids)
    return spans


def build_teacher_rows(traj: Trajectory, teacher_prompt: list[int] | Sequence[list[int]],
                       traj_index: int = 0) -> list[TeacherRow]:
    """Teacher rows for one trajectory from given prompt ids (see :mod:`agentsd.distill.teacher`).

    ``teacher_prompt`` is one list of ids (one shared prefix: one row) or a list with one prompt
    per turn (step-wise: one row per turn). Raises :class:`AlignmentError` if a row does not
    reproduce the student's action tokens at the aligned positions.
    """
    if not traj.turns:
        return []
    per_turn = len(teacher_prompt) > 0 and isinstance(teacher_prompt[0], list | tuple)
    if per_turn and len(teacher_prompt) != len(traj.turns):
        raise ValueError(f"step-wise teacher prompts: got {len(teacher_prompt)} for "
                         f"{len(traj.turns)} turns (need one per turn)")
    ids, p0 = traj.token_ids(), traj.prompt_len()
    response = ids[p0:]
    spans = _action_spans(traj)
    rows: list[TeacherRow] = []
    if not per_turn:
        tp = list(teacher_prompt)
        student_pos = [i for a, b in spans for i in range(a, b)]
        rows.append(TeacherRow(traj_index, tp + response, [i - p0 + len(tp) for i in student_pos],
                               student_pos))
    else:
        for (a, b), tp in zip(spans, teacher_prompt, strict=True):
            tp = list(tp)
            rows.append(TeacherRow(traj_index, tp + response[: b - p0],
                                   [i - p0 + len(tp) for i in range(a, b)], list(range(a, b))))
    _check_aligned(traj, rows, ids, " (teacher prompt must be non-empty)")
    return rows


def teacher_row(traj: Trajectory, tokenizer: Any, config: Any, skills: Sequence[Any] = (),
                tools: list[dict] | None = None, traj_index: int = 0) -> TeacherRow:
    """The teacher's row for one trajectory, rendered by the rollout engine's own renderer
    (:class:`agentsd.rollout.ChatRenderer`, same chat template, same ``tools``) from the
    messages the student saw plus the teacher's additions only (:func:`turn_messages`):

    - the skills section, in the first system message (``skills_at="system"``) or at the end of
      every turn's latest observation (``"user"``);
    - in step mode (``config.exposure_mode == "step"``), the end of every turn's observation
      carries that turn's hint (:func:`hint_text` of ``Turn.privileged``, the views recorded at
      rollout time from the state the student actually reached), so the teacher scoring action
      ``k`` has read hints ``0..k``, exactly as when it acts itself;
    - in episode mode, turn 0's views in the system message (the whole-episode context).

    The student's action tokens are copied verbatim and every one of them is scored, with one
    forward per trajectory. Raises :class:`AlignmentError` if a scored token is not the
    student's.
    """
    from agentsd.rollout import ChatRenderer

    if not traj.turns:
        raise ValueError(f"trajectory {traj.id} has no turns to score")
    views_needed = [v for v in config.views if v != "skills"]
    if views_needed and not any(t.privileged for t in traj.turns):
        raise ValueError(f"trajectory {traj.id} has no recorded privileged views (Turn.privileged) "
                         f"but the teacher context shows {views_needed}; roll out with "
                         "RolloutConfig(record_privileged=True) (the trainer does)")
    r = ChatRenderer(tokenizer, tools)
    row: list[int] = []
    row_pos: list[int] = []
    history: list[dict] = []
    for k, turn in enumerate(traj.turns):
        hinted = turn_messages(turn.observation, skills, turn.privileged, config, first=k == 0)
        row += r.first(hinted) if k == 0 else r.next(history[:-1], hinted, traj.turns[k - 1].action_ids)
        history += [*hinted, {"role": "assistant", "content": turn.action_text}]
        row_pos += range(len(row), len(row) + len(turn.action_ids))
        row += turn.action_ids
    student_pos = [i for a, b in _action_spans(traj) for i in range(a, b)]
    out = TeacherRow(traj_index, row, row_pos, student_pos)
    _check_aligned(traj, [out], traj.token_ids(), "")
    return out


# ---------------------------------------------------------------------------------------------
# 6. the acting teacher

class TeacherViewEnv:
    """An env as the *teacher* sees it, for letting the teacher context act (measuring what it
    can do) and for demonstrations in the teacher's context: every observation is rendered by
    :func:`turn_messages` from the views of the state reached (:func:`turn_views`), the same
    function that builds the trainer's teacher rows, so acting and scoring see one context.
    Everything else is delegated to the wrapped env."""

    def __init__(self, env: Any, config: TeacherContextConfig, skills: Sequence[Skill | str] = (),
                 library: Any = None, env_id: str | None = None) -> None:
        self.env, self.config, self.library = env, config, library
        self.skills = list(skills)
        self.env_id = env_id or getattr(getattr(env, "spec", None), "id", "") or ""
        self.turn = 0
        self.shown: list[str] = []
        self._chosen: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kw: Any) -> Any:
        obs, info = self.env.reset(**kw)
        self.turn = 0
        self._chosen = self.skills or select_for(obs, self.library, self.env_id, self.config)
        self.shown = [getattr(s, "name", str(s)[:40]) for s in self._chosen]
        return turn_messages(obs, self._chosen, turn_views(self.env), self.config), info

    def step(self, action: Any) -> Any:
        obs, reward, term, trunc, info = self.env.step(action)
        self.turn += 1
        if not (term or trunc):  # (episode mode shows no per-turn views: none are computed)
            views = turn_views(self.env) if self.config.exposure_mode == "step" else None
            obs = turn_messages(obs, self._chosen, views, self.config, first=False)
        return obs, reward, term, trunc, info

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------
# the run's teacher context: library snapshot, skill bandit, exposure

class TeacherContexts:
    """A run's teacher context: its config (ATESD changes the exposure step by step through
    :meth:`with_exposure`), its skill library snapshot and the usefulness bandit over the skills.
    Builds each trajectory's teacher rows from its recorded per-turn views (no replay)."""

    def __init__(self, cfg: Any, tokenizer: Any) -> None:
        from agentsd.skills.retrieve import UsefulnessBandit

        self.cfg, self.tok = cfg, tokenizer
        self.ctx = cfg.teacher_views()
        self.bandit = UsefulnessBandit(c=cfg.teacher.bandit_c)
        self.library = snapshot_library(cfg) if "skills" in self.ctx.views else None

    def pick(self, traj: Trajectory) -> list[Any]:
        """The skills shown for ``traj``'s task (retrieved from its first observation)."""
        return select_for(traj.turns[0].observation, self.library, traj.env_id, self.ctx,
                          bandit=self.bandit)

    def rows(self, traj: Trajectory, index: int, skills: Sequence[Any] | None = None) -> list[Any]:
        """``traj``'s teacher rows (``skills``: as :meth:`pick` gives them); with
        ``teacher.score_views``, one list of rows per view (each view its own teacher, + skills)."""
        skills = self.pick(traj) if skills is None else skills
        if self.cfg.teacher.score_views:
            keep = ("skills",) if "skills" in self.ctx.views else ()
            return [[teacher_row(traj, self.tok, dataclasses.replace(self.ctx, views=keep + (v,)),
                                 skills, traj_index=index)] for v in self.cfg.teacher.score_views]
        return [teacher_row(traj, self.tok, self.ctx, skills, traj_index=index)]

    def with_exposure(self, exposure: float) -> None:
        """ATESD: this step's reveal ratio."""
        self.ctx = dataclasses.replace(self.ctx, exposure=exposure)

    def learn(self, shown: Sequence[tuple[Sequence[str], float]]) -> None:
        """Update the skill bandit with every ``(skills shown, solved)`` of a step (every rank's,
        in task order, so the ranks' bandits agree)."""
        for skills, solved in shown:
            self.bandit.update(skills, solved)

    def state_dict(self) -> dict[str, Any]:
        return self.bandit.to_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        from agentsd.skills.retrieve import UsefulnessBandit

        if state:
            self.bandit = UsefulnessBandit.from_dict(state)

    def set_library(self, library: Any) -> None:
        """A refreshed library (dynamic skills): the next :meth:`pick` and acting teacher read
        it. The bandit keeps its statistics, keyed by skill name, so a skill that stays keeps
        what it learned and a new one starts at the prior."""
        self.library = library

    def env_factory(self, task: Any, max_turns: int, context: TeacherContextConfig | None = None,
                    ) -> Any:
        """A zero-argument factory of ``task``'s env as the teacher sees it (for acting);
        ``context`` replaces the run's views (the step-0 advantage measures each view)."""
        import agentsd

        ctx, library = context or self.ctx, self.library

        def make() -> Any:
            env = agentsd.make(task.env, max_turns=max_turns, **task.kwargs)
            return TeacherViewEnv(env, ctx, library=library, env_id=task.env)

        return make


def snapshot_library(cfg: Any) -> Any:
    """The run's skill library: copied into ``<run>/skills`` on the first start and read from
    there ever after, so a resumed run (or a rerun of the report) sees the skills the run
    started with even if the source library has changed since."""
    from agentsd.distill import distributed
    from agentsd.skills import SkillLibrary, load_library

    snap = Path(cfg.out_dir) / "skills"
    if distributed.world().is_main and not (snap / ".complete").exists():
        src = cfg.teacher.skills_dir or None
        try:  # an invalid skill file is skipped with a warning naming it; the rest load
            lib = load_library(src, env=cfg.rollout.env, strict=False)
        except Exception as e:  # a missing library is allowed: the teacher then sees hints only
            import warnings

            warnings.warn(f"no skill library loaded ({e}); the teacher sees hints only", stacklevel=2)
            lib = SkillLibrary()
        lib.save(snap)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / ".complete").write_text(str(len(lib)))
    distributed.barrier()  # the other ranks read what rank 0 wrote
    return load_library(snap, env=cfg.rollout.env)
