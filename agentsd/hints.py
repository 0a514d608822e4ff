"""The teacher's view configuration and the pure text pieces of its context: what may be shown
(:class:`TeacherContextConfig`), how much of a gold reference (:func:`reveal`), and the
episode-mode guidance block built from skills and ``env.privileged()``. How those become the
teacher's token rows, its per-turn hints and the env the teacher acts in lives in
:mod:`agentsd.teacher_context` (its names are importable from here too).

The student sees only the task (the env's observations). The teacher is the same model prompted
with the same task *plus* a guidance block built here from retrieved skills and the views of
``env.privileged()`` (answer, solution, plan, next_step, hidden_tests, notes, and ``extra``
entries such as a failed attempt's ``feedback``). Nothing built here may reach the student;
:func:`leaks` finds it if it does, and ``tests/test_hints.py`` proves it for every env.

The API (pure functions; the trainer calls them)::

    from agentsd.hints import TeacherContextConfig, build_teacher_messages, per_turn_hint

    cfg = TeacherContextConfig(views=("skills", "plan", "notes"), exposure=0.5)
    teacher_msgs = build_teacher_messages(task_messages, privileged, skills, cfg)
    # task_messages: the student's first observation (``trajectory.turns[0].observation``)
    # privileged:    env.privileged() at reset (``replay_privileged(traj)[0]``)
    # skills:        Skill objects (or plain strings), already retrieved; the first
    #                ``cfg.max_skills`` are used (``select_skills`` does retrieval)

- **Placement.** ``placement="system"`` appends the guidance block to the task's system message
  (or prepends a system message when the task has none); ``"before_task"`` inserts it as a user
  message before the first user message. Every other message is returned unchanged, so the task
  text is identical to the student's.
- **Episode mode** (``exposure_mode="episode"``, the default): one teacher prefix per trajectory.
  Teacher tokens = ``render(teacher_msgs, add_generation_prompt=True)`` followed by
  ``trajectory.response_ids()``; score the action tokens (one teacher forward).
- **Step mode** (``exposure_mode="step"``): the context changes turn by turn. For turn ``t``,
  call ``build_teacher_messages(task_messages, privileged_t, skills, cfg, turn=t)`` with
  ``privileged_t = replay_privileged(traj)[t]``: its block also holds
  ``per_turn_hint(privileged_t, t, cfg)`` (the gold continuation from the state reached). Score
  only turn ``t``'s action tokens in that context. ``per_turn_hint`` alone gives the hint text
  for callers that place it elsewhere (e.g. as a message right before turn ``t``).
- **Exposure** (0..1, ATESD's reveal ratio) is how much of a gold reference is shown: the first
  ``ceil(exposure * n)`` items of a list (plan), of the lines of a multi-line text (a code
  solution) or of the words of a one-line text (a move sequence); 0 hides the view. In episode
  mode it applies to ``solution`` and ``plan``; in step mode also to the per-turn continuation.
  ``answer``, ``hidden_tests``, ``notes`` and ``extra`` views are shown whole (or not at all).

>>> from agentsd.types import Privileged
>>> task = [{"role": "system", "content": "Play."}, {"role": "user", "content": "Board"}]
>>> p = Privileged(plan=["Up", "Up", "Left", "Down"], notes="4 moves")
>>> msgs = build_teacher_messages(task, p, [], TeacherContextConfig(views=("plan",), exposure=0.5))
>>> msgs[1] == task[1], "Up Up" in msgs[0]["content"], "Left" in msgs[0]["content"]
(True, True, False)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentsd.distill.config_fields import _f, check_fields
from agentsd.types import Message, Privileged

if TYPE_CHECKING:
    from agentsd.skills.library import Skill
    from agentsd.trajectory import Trajectory

__all__ = [
    "VIEW_NAMES", "TeacherContextConfig", "TeacherContext", "build_teacher_messages",
    "per_turn_hint", "render_views", "render_skills", "reveal", "leaks", "replay_privileged",
    "compose_teacher_context", "task_query", "with_feedback", "action_text", "SKILLS_AT",
]

#: views the builder knows; ``extra:<key>`` names an entry of ``Privileged.extra``
VIEW_NAMES = ("skills", "reference", "answer", "solution", "plan", "next_step", "hidden_tests",
              "notes", "feedback", "construction")
_EXPOSED = ("solution", "plan")
_TITLES = {
    "skills": "Skills learned from earlier episodes",
    "answer": "The correct final answer",
    "solution": "A reference solution",
    "plan": "A gold plan (the steps that solve it)",
    "next_step": "The next gold step from the current state",
    "hidden_tests": "Tests the solution will be graded on",
    "notes": "Notes about this task",
    "feedback": "Feedback from an earlier attempt at this task",
    "reference": "Reference reply",
    "construction": "How this task was built (its construction path)",
}
#: where the skills section goes: the task's system message, or the end of the latest
#: user/observation message (next to where the teacher generates; a probe found a rule acts
#: best there for tool use)
SKILLS_AT = ("system", "user")
DEFAULT_HEADER = ("Privileged guidance for this task. Use it to act well; the task itself "
                  "follows unchanged.")


@dataclass(frozen=True)
class TeacherContextConfig:
    """What the teacher sees beyond the task. Validated on construction.

    ``views`` lists view names in prompt order (see :data:`VIEW_NAMES`; ``extra:<key>`` for an
    entry of ``Privileged.extra``); missing views are skipped silently (not every env has every
    view). ``exposure`` and ``exposure_mode`` are described in the module docstring.
    ``max_skills`` caps the skills shown; ``retrieval`` picks them (``bm25``, ``embedding`` or
    ``none`` = library order) and ``usefulness`` weights the bandit's UCB term in the ranking.
    """

    #: view names in prompt order: skills, reference, answer, solution, plan, next_step,
    #: hidden_tests, notes, feedback or extra:<key> (views an env lacks are skipped)
    views: tuple[str, ...] = ("skills", "reference")
    #: share of a gold reference shown, 0..1 (first items of a plan, lines of a solution)
    exposure: float = _f(1.0, ge=0, le=1)
    #: step (the context follows the episode turn by turn) or episode (one prefix per episode)
    exposure_mode: str = _f("step", choices=("episode", "step"))
    #: most skills shown
    max_skills: int = _f(3, kind=int, ge=0)
    #: the skills section is cut to this many characters in all (skills are shared rules, not
    #: a second task description; 800 characters is about 200 tokens)
    max_skill_chars: int = _f(800, kind=int, ge=50)
    #: how skills are picked: bm25, embedding or none (library order)
    retrieval: str = _f("bm25", choices=("bm25", "embedding", "none"))
    #: weight of the skill-usefulness bandit's UCB term in the ranking
    usefulness: float = _f(0.0, ge=0)
    #: where the guidance block goes: system (the task's system message) or before_task
    placement: str = _f("system", choices=("system", "before_task"))
    #: where the skills section goes: system (the task's system message) or user (the end of the
    #: latest user/observation message of every turn, before that turn's hint)
    skills_at: str = _f("system", choices=SKILLS_AT)
    #: first line of the guidance block
    header: str = DEFAULT_HEADER
    #: each rendered view is cut to this many characters (a long hidden-test file or solution
    #: must not crowd the task out of the context)
    max_view_chars: int = _f(3000, kind=int, ge=100)

    def __post_init__(self) -> None:
        check_fields(self)
        views = tuple(self.views) if not isinstance(self.views, str) else (self.views,)
        object.__setattr__(self, "views", views)
        for v in views:
            if v not in VIEW_NAMES and not (v.startswith("extra:") and len(v) > 6):
                raise ValueError(f"TeacherContextConfig.views: unknown view {v!r}; allowed: "
                                 f"{', '.join(VIEW_NAMES)} or 'extra:<key>'")
        if len(set(views)) != len(views):
            raise ValueError(f"TeacherContextConfig.views lists a view twice: {views}")


@dataclass
class TeacherContext:
    """A built teacher prompt and the names of the skills it shows (record them in
    ``Trajectory.skills``)."""

    messages: list[Message]
    skills: list[str]


# ---------------------------------------------------------------------------------------------
# pure pieces

def reveal(value: Any, exposure: float) -> Any:
    """The first ``ceil(exposure * n)`` items of a list, lines of a multi-line text or words of
    a one-line text (``None`` at exposure 0 or for an empty value).

    >>> reveal(["a", "b", "c"], 0.5), reveal("Up Down Left Right", 0.25), reveal("x", 0.0)
    (['a', 'b'], 'Up', None)
    """
    if exposure <= 0 or value in (None, "", [], ()):
        return None
    if isinstance(value, list | tuple):
        return list(value[: math.ceil(exposure * len(value))])
    if not isinstance(value, str):
        return value
    lines = value.splitlines()
    if len(lines) > 1:
        return "\n".join(lines[: math.ceil(exposure * len(lines))])
    words = value.split()
    return " ".join(words[: math.ceil(exposure * len(words))])


def _fmt(value: Any, limit: int) -> str:
    if isinstance(value, list | tuple):
        short = all(isinstance(v, str) and len(v) < 30 and "\n" not in v for v in value)
        text = " ".join(value) if short else "\n".join(f"{i + 1}. {v}" for i, v in enumerate(value))
    elif isinstance(value, dict):
        import json

        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 20].rstrip() + "\n[... cut ...]"


def render_skills(skills: Sequence[Skill | str]) -> str:
    """Skills as the teacher reads them: a heading per skill, when it applies, its body."""
    parts = []
    for s in skills:
        if isinstance(s, str):
            parts.append(f"- {s.strip()}")
        else:
            parts.append(f"### {s.name} ({s.kind})\nWhen: {s.description}\n{s.body}")
    return "\n\n".join(parts)


def _view_value(privileged: Privileged, name: str) -> Any:
    if name.startswith("extra:"):
        return privileged.extra.get(name[6:])
    if name in ("feedback", "reference"):
        return privileged.extra.get(name)
    return getattr(privileged, name)


def per_turn_hint(privileged: Privileged, turn: int, config: TeacherContextConfig) -> str | None:
    """The step-wise hint for turn ``turn`` (0-based): the gold continuation from the state
    reached, revealed at ``config.exposure``. ``privileged`` must be the one observed *at*
    that turn (``replay_privileged(traj)[turn]``). Uses ``next_step`` when the env fills it,
    else the gold plan from item ``turn`` on. ``None`` in episode mode, at exposure 0, or when
    the env has no such view.

    >>> cfg = TeacherContextConfig(exposure_mode="step", exposure=0.5)
    >>> per_turn_hint(Privileged(next_step="Up Up Left Down"), 3, cfg)
    'Next gold step from the current state: Up Up'
    """
    if turn < 0:
        raise ValueError(f"turn must be >= 0, got {turn}")
    if config.exposure_mode != "step":
        return None
    cont: Any = privileged.next_step
    if cont in (None, "") and privileged.plan:
        cont = list(privileged.plan[turn:]) or None
    shown = reveal(cont, config.exposure)
    if shown in (None, "", []):
        return None
    return f"Next gold step from the current state: {_fmt(shown, config.max_view_chars)}"


def render_views(privileged: Privileged, skills: Sequence[Skill | str], config: TeacherContextConfig,
                 turn: int | None = None) -> str:
    """The guidance block (header + one titled section per present view), or ``""`` when there
    is nothing to show."""
    sections = []
    for name in config.views:
        if name == "skills":
            chosen = list(skills)[: config.max_skills]
            if chosen:
                sections.append(f"## {_TITLES['skills']}\n{render_skills(chosen)}")
            continue
        if name == "next_step" and config.exposure_mode == "step":
            continue  # the per-turn hint below carries it, revealed at the exposure ratio
        value = _view_value(privileged, name)
        if name in _EXPOSED:
            value = reveal(value, config.exposure)
        if value in (None, "", [], {}):
            continue
        title = _TITLES.get(name, name.split(":", 1)[-1].replace("_", " ").capitalize())
        if name in _EXPOSED and config.exposure < 1:
            title += f" (first {round(100 * config.exposure)}% shown)"
        sections.append(f"## {title}\n{_fmt(value, config.max_view_chars)}")
    if turn is not None:
        hint = per_turn_hint(privileged, turn, config)
        if hint:
            sections.append(f"## Turn {turn + 1}\n{hint}")
    if not sections:
        return ""
    return config.header.strip() + "\n\n" + "\n\n".join(sections)


def build_teacher_messages(task_messages: Sequence[Message], privileged: Privileged | None,
                           skills: Sequence[Skill | str], config: TeacherContextConfig,
                           turn: int | None = None) -> list[Message]:
    """The teacher's chat messages: ``task_messages`` with the guidance block placed per
    ``config.placement`` (see the module docstring). Pure: the inputs are not modified. With
    nothing to show, the result equals ``task_messages``. ``turn`` (step mode) adds the
    per-turn hint for that turn."""
    if not task_messages:
        raise ValueError("task_messages is empty; pass the student's first observation "
                         "(trajectory.turns[0].observation)")
    msgs = [dict(m) for m in task_messages]
    block = render_views(privileged or Privileged(), skills, config, turn)
    if not block:
        return msgs  # type: ignore[return-value]
    if config.placement == "system":
        if msgs[0].get("role") == "system":
            msgs[0]["content"] = (msgs[0].get("content") or "").rstrip() + "\n\n" + block
        else:
            msgs.insert(0, {"role": "system", "content": block})
    else:
        first_user = next((i for i, m in enumerate(msgs) if m.get("role") == "user"), len(msgs))
        msgs.insert(first_user, {"role": "user", "content": block})
    return msgs  # type: ignore[return-value]


def task_query(task_messages: Sequence[Message]) -> str:
    """The text retrieval matches skills against: the task's user content (the system message
    only when there is none). An env's system prompt is shared by all its tasks, so it cannot
    tell their skills apart; left in, its tool listing outweighed the task (ToolWorld-Lite's
    ``count_relationship`` tasks retrieved another template's workflow in 10 of 10 tasks; with
    the user content alone, every train template retrieves its own in 64 of 64)."""
    user = [str(m.get("content") or "") for m in task_messages if m.get("role") == "user"]
    if any(u.strip() for u in user):
        return "\n".join(user)
    return "\n".join(str(m.get("content") or "") for m in task_messages if m.get("role") == "system")


_NORM_RE = re.compile(r"\s+")


def leaks(student_messages: Sequence[Message], privileged: Privileged | None = None,
          skills: Sequence[Skill | str] = (), min_len: int = 8) -> list[str]:
    """Teacher-only strings found in the student's messages: privileged secrets
    (``Privileged.secrets``), skill bodies and descriptions, and the guidance header. Empty
    when the student context is clean."""
    text = _NORM_RE.sub(" ", "\n".join(str(m.get("content") or "") for m in student_messages))
    needles = list(privileged.secrets(min_len)) if privileged is not None else []
    for s in skills:
        if isinstance(s, str):
            needles.append(s.strip())
        else:
            needles += [s.description, s.body]
    needles.append(DEFAULT_HEADER)
    found = []
    for n in needles:
        n = _NORM_RE.sub(" ", n).strip()
        if len(n) >= min_len and n in text:
            found.append(n[:80])
    return found


# ---------------------------------------------------------------------------------------------
# helpers that touch envs or the library (not pure)

def replay_privileged(traj: Trajectory, env: Any = None, check: bool = True) -> list[Privileged]:
    """``env.privileged()`` before each turn of ``traj``, by replaying its actions on a fresh env
    made from ``traj.env_id`` / ``spec_kwargs`` / ``seed`` (envs are deterministic per seed;
    the first observation is checked against the recorded one when ``check``). Index ``t`` is
    the privileged view the teacher may use for turn ``t``."""
    import agentsd

    if traj.seed is None:
        raise ValueError(f"trajectory {traj.id} has no seed; cannot replay it to recover the "
                         "privileged views (record the seed in the rollout)")
    own = env is None
    if own:
        kw = {k: v for k, v in (traj.spec_kwargs or {}).items() if k != "max_turns"}
        env = agentsd.make(traj.env_id, max_turns=max(1, len(traj.turns) + 1), **kw)
    try:
        obs, _ = env.reset(seed=traj.seed)
        if check and traj.turns and traj.turns[0].observation and \
                _contents(obs) != _contents(traj.turns[0].observation):
            raise ValueError(f"replaying {traj.env_id} seed {traj.seed} gives another first "
                             f"observation than trajectory {traj.id} recorded; were spec_kwargs "
                             "recorded correctly?")
        out = []
        for i, turn in enumerate(traj.turns):
            out.append(env.privileged())
            if i + 1 < len(traj.turns):
                _, _, term, trunc, _ = env.step(turn.action_text)
                if term or trunc:
                    raise ValueError(f"replay of trajectory {traj.id} ended at turn {i + 1} of "
                                     f"{len(traj.turns)}")
        return out
    finally:
        if own:
            env.close()


def _contents(msgs: Sequence[Message]) -> list[tuple[str, str]]:
    return [(str(m.get("role")), str(m.get("content") or "")) for m in msgs]


def with_feedback(privileged: Privileged, feedback: str) -> Privileged:
    """A copy of ``privileged`` with ``extra["feedback"]`` set (the ``feedback`` view)."""
    return dataclasses.replace(privileged, extra={**privileged.extra, "feedback": feedback})


def compose_teacher_context(task_messages: Sequence[Message], privileged: Privileged | None,
                            library: Any, env_id: str, config: TeacherContextConfig,
                            bandit: Any = None, turn: int | None = None) -> TeacherContext:
    """Retrieve skills for this task from ``library`` (a :class:`SkillLibrary`) per ``config``
    and build the teacher messages; returns the names shown (for ``Trajectory.skills``)."""
    chosen: list[Any] = []
    if "skills" in config.views and config.max_skills > 0 and library is not None:
        from agentsd.skills.retrieve import select_skills

        chosen = select_skills(library.for_env(env_id), task_query(task_messages),
                               k=config.max_skills, mode=config.retrieval, bandit=bandit,
                               usefulness=config.usefulness)
    msgs = build_teacher_messages(task_messages, privileged, chosen, config, turn)
    return TeacherContext(msgs, [s.name for s in chosen])


def action_text(action: Any) -> str | None:
    """An action written as the model would write it: text stays text; an assistant message with
    OpenAI ``tool_calls`` becomes Hermes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
    blocks (the format every agentsd env parses), after any text content.

    >>> action_text({"role": "assistant", "content": "", "tool_calls": [{"type": "function",
    ...     "function": {"name": "submit", "arguments": '{"code": "x = 1"}'}}]})
    '<tool_call>{"name": "submit", "arguments": {"code": "x = 1"}}</tool_call>'
    """
    import json

    if action is None or isinstance(action, str):
        return action
    if not isinstance(action, dict):
        raise TypeError(f"an action is text or an assistant message dict, got {type(action).__name__}")
    parts = [str(action.get("content") or "").strip()]
    for call in action.get("tool_calls") or []:
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        parts.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": args},
                                                ensure_ascii=False) + "</tool_call>")
    return "\n".join(p for p in parts if p) or None


#: names that moved to :mod:`agentsd.teacher_context` (the teacher context in one module),
#: importable from here as before; resolved on first use, as that module imports this one
_MOVED = ("turn_views", "hint_text", "with_hint", "with_skills", "skills_section", "select_for",
          "TeacherViewEnv", "failure_feedback", "REFERENCE_LEAD", "SKILLS_TITLE")


def __getattr__(name: str) -> Any:
    if name in _MOVED or name == "_views_privileged":
        from agentsd import teacher_context

        return getattr(teacher_context, name.lstrip("_"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
