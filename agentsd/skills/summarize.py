"""Trajectories to skills: a deterministic summarizer, an LLM summarizer, incremental updates.

**Deterministic** (:func:`summarize_deterministic`): no model, so the pipeline works without a
strong summarizer. From one env's trajectories (successes and failures, grouped by task
template) and their privileged views (recovered by replaying each episode) it derives:

- a *workflow* per template: the action pattern successful episodes followed (tool names for
  tool calls, the answer format otherwise), the turn and gold-plan lengths, and a real example;
  when most gold plans of a template share one abstract shape (digits and quoted values
  replaced), that shape is the workflow;
- *pitfalls*: the env feedback seen most often in failed episodes (normalized: numbers and
  quoted values abstracted, board drawings dropped), with the action that caused it and the
  action that worked next; and boolean ``info`` flags (e.g. Sokoban's ``deadlock``) that turn
  on far more often in failures than in successes;
- a *strategy*: what separates successful from failed episodes in simple statistics (turns,
  action length, unparseable actions).

**LLM** (:func:`summarize_llm`): any :class:`~agentsd.policy.base.Policy` (the local model or a
stronger one behind an OpenAI-compatible endpoint) fills a versioned prompt from
``agentsd/skills/prompts/`` and must answer with a JSON list of skills; each item is validated
into a :class:`Skill`. Malformed output is retried, and what still fails is rejected with a
logged reason — never written as a broken skill.

**Incremental** (:func:`update_library`): new skills merge into a library (near-duplicates fold
together, provenance keeps source ids), and :func:`update_stats` adds success counts of episodes
run with and without each skill (from ``Trajectory.skills``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.skills.library import (
    KINDS,
    MAX_SOURCE_IDS,
    Provenance,
    Skill,
    SkillError,
    SkillLibrary,
    SkillStats,
)
from agentsd.trajectory import Trajectory

__all__ = [
    "DETERMINISTIC_VERSION", "task_template", "action_signature", "normalize_feedback",
    "summarize_deterministic", "PromptTemplate", "load_prompt", "prompt_versions",
    "render_episodes", "parse_skills_output", "SummaryResult", "summarize_llm",
    "UpdateReport", "update_library", "update_stats", "read_trajectories", "now_iso",
]

log = logging.getLogger("agentsd.skills")
DETERMINISTIC_VERSION = "deterministic-v1"
PROMPT_DIR = Path(__file__).parent / "prompts"

#: a trailing instance number or hash (``-17``, ``/0``, ``/470473a755``) after a separator
_TRAILING_NUM_RE = re.compile(r"[-_/#:](?:\d+|(?=[0-9a-f]*\d)[0-9a-f]{6,})$")
_TOOL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_CODE_RE = re.compile(r"```(\w*)\n", re.DOTALL)
_QUOTED_RE = re.compile(r"(['\"])(?:(?!\1).){1,80}\1")
_NUM_RE = re.compile(r"\d+(?:\.\d+)?")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z_]{2,}")
_STOP = frozenset("the and for you your with that this from are was were not has have had its "
                  "into onto then than when what which will would can could should use using "
                  "reply answer tool call calls turn turns move moves".split())


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def task_template(traj: Trajectory) -> str:
    """The task template a trajectory belongs to: ``meta["template"]`` when the env or rollout
    recorded one, else the task id without its trailing number or hash (``sokoban-easy-3`` ->
    ``sokoban-easy``, ``gen/dedupe_mod/470473a755`` -> ``gen/dedupe_mod``), else the env id.

    >>> from agentsd.trajectory import Trajectory
    >>> [task_template(Trajectory(task_id=i)) for i in ("sokoban-easy-3", "HumanEval/7", "gen/a_b/47ab0c9e")]
    ['sokoban-easy', 'HumanEval', 'gen/a_b']
    """
    if traj.meta.get("template"):
        return str(traj.meta["template"])
    if traj.task_id:
        stripped = _TRAILING_NUM_RE.sub("", str(traj.task_id))
        return stripped or str(traj.task_id)
    return traj.env_id


def action_signature(text: str) -> str:
    """An action's shape, without its specifics: ``call:search`` for each tool call,
    ``code:python`` for a fenced code block, ``answer`` for ``<answer>`` tags, else ``text``.

    >>> action_signature('<tool_call>{"name": "search", "arguments": {"q": 1}}</tool_call>')
    'call:search'
    >>> action_signature("<answer>Up</answer>"), action_signature("hmm")
    ('answer', 'text')
    """
    calls = []
    for m in _TOOL_RE.finditer(text or ""):
        try:
            calls.append("call:" + str(json.loads(m.group(1)).get("name")))
        except (ValueError, AttributeError):
            calls.append("call:?")
    if calls:
        return " ".join(calls)
    code = _CODE_RE.search(text or "")
    if code:
        return f"code:{code.group(1) or 'text'}"
    if _ANSWER_RE.search(text or ""):
        return "answer"
    return "text"


def _is_drawing(line: str) -> bool:
    s = line.strip()
    return bool(s) and s.count("#") >= 2 and sum(ch in "#@$.*+ " for ch in s) >= 0.8 * len(s)


def normalize_feedback(text: str, max_len: int = 160) -> str:
    """Env feedback reduced to its reusable pattern: drawings (board lines) dropped, quoted values
    and numbers abstracted, whitespace collapsed.

    >>> normalize_feedback("2 move(s) had no effect.\\n\\n#####\\n#@$.#\\n#####")
    'N move(s) had no effect.'
    >>> normalize_feedback("'Upp' is not a move; use Up")
    "'…' is not a move; use Up"
    """
    lines = [ln for ln in (text or "").splitlines() if not _is_drawing(ln)]
    out = _QUOTED_RE.sub(lambda m: m.group(1) + "…" + m.group(1), " ".join(lines))
    out = _NUM_RE.sub("N", out)
    out = re.sub(r"\s+", " ", out).strip()
    return out[:max_len]


def _reply_text(traj: Trajectory, i: int) -> str:
    """The env's reply to action ``i`` (the next turn's observation or the final one)."""
    msgs = traj.turns[i + 1].observation if i + 1 < len(traj.turns) else traj.final_observation
    return "\n".join(str(m.get("content") or "") for m in msgs)


def _slug(*parts: str, limit: int = 64) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")
    s = re.sub(r"-+", "-", s)[:limit].strip("-")
    return s or "skill"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _keywords(texts: Iterable[str], k: int = 8) -> tuple[str, ...]:
    c: Counter[str] = Counter()
    for t in texts:
        c.update(w.lower() for w in _WORD_RE.findall(t) if w.lower() not in _STOP)
    return tuple(w for w, _ in c.most_common(k))


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "0/0"


def _provenance(trajs: Sequence[Trajectory], command: str, now: str, notes: str = "") -> Provenance:
    ids = list(dict.fromkeys(t.id for t in trajs))
    return Provenance(method="deterministic", summarizer=DETERMINISTIC_VERSION,
                      source_trajectories=tuple(ids[:MAX_SOURCE_IDS]), n_sources=len(ids),
                      created=now, updated=now, command=command, notes=notes)


def _abstract_step(step: Any) -> str:
    """One gold-plan step without its specifics: a JSON tool call becomes ``name(arg, ...)``;
    other text has quoted values and numbers abstracted."""
    text = str(step).strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
            if isinstance(d, dict) and "name" in d:
                args = d.get("arguments") or {}
                return f"{d['name']}({', '.join(args) if isinstance(args, dict) else '…'})"
        except ValueError:
            pass
    return _NUM_RE.sub("N", _QUOTED_RE.sub("…", text))


def _abstract_plan(plan: Any) -> tuple[str, ...] | None:
    if not isinstance(plan, list | tuple) or not plan:
        return None
    return tuple(_abstract_step(p) for p in plan)


def _privileged_list(traj: Trajectory) -> list[Any]:
    """Privileged views per turn: the ones the rollout recorded (``Turn.privileged``) when every
    turn has them, else by replay (empty when the env cannot replay this episode)."""
    from agentsd.hints import _views_privileged, replay_privileged

    if traj.turns and all(t.privileged for t in traj.turns):
        return [_views_privileged(t.privileged) for t in traj.turns]
    try:
        return replay_privileged(traj)
    except Exception as e:  # a trajectory from an env no longer registered, or without a seed
        log.info("no privileged views for %s: %s", traj.id, e)
        return []


def _workflow_skill(env_id: str, template: str, trajs: Sequence[Trajectory],
                    plans: dict[str, Any], command: str, now: str, multi: bool) -> Skill | None:
    wins = [t for t in trajs if t.success]
    if not wins:
        return None
    sigs = Counter(tuple(action_signature(tu.action_text) for tu in t.turns) for t in wins)
    shape, n_shape = sigs.most_common(1)[0]
    turns = [len(t.turns) for t in wins]
    words = [len(tu.action_text.split()) for t in wins for tu in t.turns]
    best = min(wins, key=lambda t: (len(t.turns), t.id))
    lines = [f"{_pct(len(wins), len(trajs))} recorded episodes of `{template}` were solved, in a "
             f"median of {statistics.median(turns):g} turns (median {statistics.median(words):g} "
             "words per action)."]
    if len(set(shape)) == 1 and len(shape) > 1:
        lines.append(f"Every turn of the most common successful pattern ({_pct(n_shape, len(wins))}"
                     f") is `{shape[0]}`, {len(shape)} turns in a row.")
    else:
        steps = " -> ".join(f"`{s}`" for s in shape)
        lines.append(f"Most common successful action pattern ({_pct(n_shape, len(wins))}): {steps}.")
    gold = [p for p in (plans.get(t.id) for t in trajs) if p]
    if gold:
        lens = [len(p) for p in gold]
        lines.append(f"Gold plans for this template take {min(lens)}–{max(lens)} steps "
                     f"(median {statistics.median(lens):g}).")
        shapes = Counter(a for a in (_abstract_plan(p) for p in gold) if a)
        if shapes:
            top, n_top = shapes.most_common(1)[0]
            if n_top >= max(2, len(gold) // 2) and len(set(top)) > 1:
                lines.append(f"Gold plan shape shared by {_pct(n_top, len(gold))} tasks: " +
                             " -> ".join(f"`{s}`" for s in top[:12]) + ".")
    lines.append("Example of a solved episode (actions in order):")
    lines += [f"{i + 1}. `{_clip(tu.action_text, 160)}`" for i, tu in enumerate(best.turns[:8])]
    if len(best.turns) > 8:
        lines.append(f"... {len(best.turns) - 8} more turns.")
    name = _slug(template, "workflow") if multi else "solved-episode-workflow"
    desc = (f"Use at the start of a `{template}` task: the action pattern that solved it before."
            if multi else f"Use at the start of any {env_id} task: the action pattern that solved it.")
    return Skill(name=name, description=desc, env=env_id, kind="workflow", body="\n".join(lines),
                 keywords=_keywords([template, *shape, *(tu.action_text for tu in best.turns)]),
                 provenance=_provenance(trajs, command, now, notes=f"template={template}"),
                 stats=SkillStats(support=len(trajs)))


@dataclass
class _Pattern:
    episodes: set[str] = field(default_factory=set)
    failed_episodes: set[str] = field(default_factory=set)
    causes: Counter = field(default_factory=Counter)
    fixes: Counter = field(default_factory=Counter)
    #: signature -> (action text, what the agent saw before it); the first seen per signature
    cause_examples: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: signature -> action text, preferring actions from solved episodes
    fix_examples: dict[str, tuple[bool, str]] = field(default_factory=dict)
    raw: str = ""


def _feedback_patterns(trajs: Sequence[Trajectory]) -> dict[str, _Pattern]:
    """Feedback patterns that followed a bad step (parse failure, negative non-step reward, or
    an error-like reply), with the actions that caused them and the next good step."""
    pats: dict[str, _Pattern] = defaultdict(_Pattern)
    for t in trajs:
        for i, tu in enumerate(t.turns):
            bad = tu.parse not in ("", "ok") or any(
                v < 0 for k, v in tu.reward_terms.items() if k not in ("step",))
            reply = _reply_text(t, i)
            pat = normalize_feedback(reply)
            if not pat or not (bad or _looks_like_error(pat)):
                continue
            p = pats[pat]
            p.raw = p.raw or _clip(reply.split("\n\n")[0], 200)
            p.episodes.add(t.id)
            if not t.success:
                p.failed_episodes.add(t.id)
            sig = action_signature(tu.action_text)
            p.causes[sig] += 1
            seen = "\n".join(str(m.get("content") or "") for m in tu.observation[-1:])
            p.cause_examples.setdefault(sig, (tu.action_text, seen))
            # what fixed it: only episodes that went on to succeed say what actually worked
            for j in range(i + 1, len(t.turns) if t.success else i + 1):
                nxt = t.turns[j]
                after = normalize_feedback(_reply_text(t, j))
                # a fix parses, does not lose reward, and is not answered by an error again
                if nxt.parse in ("", "ok") and nxt.reward >= max(tu.reward, -0.5) and \
                        after != pat and not _looks_like_error(after):
                    fsig = action_signature(nxt.action_text)
                    p.fixes[fsig] += 1
                    if not p.fix_examples.get(fsig, (False, ""))[0]:
                        p.fix_examples[fsig] = (t.success, nxt.action_text)
                    break
    return pats


_ERROR_WORDS = ("error", "invalid", "not ", "no effect", "failed", "unknown", "missing", "wrong",
                "cannot", "can't", "denied", "exception", "traceback", "timeout", "refused")


def _looks_like_error(pattern: str) -> bool:
    low = pattern.lower()
    return any(w in low for w in _ERROR_WORDS)


def _pitfall_skills(env_id: str, trajs: Sequence[Trajectory], command: str, now: str,
                    max_pitfalls: int, min_episodes: int) -> list[Skill]:
    n_fail = sum(not t.success for t in trajs)
    pats = _feedback_patterns(trajs)
    ranked = sorted(pats.items(), key=lambda kv: (-len(kv[1].failed_episodes), -len(kv[1].episodes), kv[0]))
    out = []
    for pat, p in ranked:
        if len(out) >= max_pitfalls or len(p.episodes) < min_episodes:
            continue
        cause = p.causes.most_common(1)[0][0]
        bad_action, seen = p.cause_examples[cause]
        lines = [f"The env replied \"{_clip(p.raw, 160)}\" in {len(p.episodes)} recorded episodes "
                 f"({_pct(len(p.failed_episodes), n_fail)} of the failed ones).",
                 f"It followed actions shaped like `{cause}`, e.g. `{_clip(bad_action, 120)}`"
                 + (f" after seeing:\n```\n{seen.strip()[:200]}\n```" if seen.strip() else ".")]
        if p.fixes:
            fix, n = p.fixes.most_common(1)[0]
            lines.append(f"In episodes that still succeeded, the next error-free step ({n} times) was "
                         f"shaped like `{fix}`, e.g. `{_clip(p.fix_examples[fix][1], 120)}`.")
        else:
            lines.append("No recorded episode recovered from it and succeeded; avoid the action "
                         "that causes it.")
        words = [w for w in _WORD_RE.findall(pat) if w.lower() not in _STOP][:6]
        src = [t for t in trajs if t.id in p.episodes]
        out.append(Skill(
            name=_slug("avoid", *words) if words else _slug("avoid-feedback", str(len(out))),
            description=f"Use when the env answers like \"{_clip(pat, 90)}\" or to avoid causing it.",
            env=env_id, kind="pitfall", body="\n".join(lines),
            keywords=_keywords([pat, cause]), provenance=_provenance(src, command, now),
            stats=SkillStats(support=len(p.episodes))))
    return out


def _flag_skills(env_id: str, trajs: Sequence[Trajectory], command: str, now: str,
                 min_gap: float = 0.1, min_episodes: int = 2) -> list[Skill]:
    """Boolean ``info`` flags that turn on far more often in failed than in solved episodes."""
    flags: set[str] = {k for t in trajs for tu in t.turns for k, v in tu.info.items()
                       if isinstance(v, bool)}
    fails = [t for t in trajs if not t.success]
    wins = [t for t in trajs if t.success]
    out = []
    for flag in sorted(flags):
        def on(t: Trajectory, flag: str = flag) -> int | None:
            return next((i for i, tu in enumerate(t.turns) if tu.info.get(flag) is True), None)

        f_on = [t for t in fails if on(t) is not None]
        w_on = [t for t in wins if on(t) is not None]
        rf = len(f_on) / len(fails) if fails else 0.0
        rw = len(w_on) / len(wins) if wins else 0.0
        if len(f_on) < min_episodes or rf - rw < min_gap:
            continue
        first = f_on[0]
        i = on(first)
        recovered = sum(t.success for t in trajs if on(t) is not None)
        body = (f"`{flag}` became true in {_pct(len(f_on), len(fails))} of failed episodes and "
                f"{_pct(len(w_on), len(wins))} of solved ones; episodes where it turned on were "
                f"solved {_pct(recovered, len(f_on) + len(w_on))} of the time.\n"
                f"Example: after the action `{_clip(first.turns[i].action_text, 120)}` "
                f"(turn {i + 1} of an episode) it turned on. Before each action, check that it "
                f"cannot cause `{flag}`.")
        out.append(Skill(
            name=_slug("avoid", flag), description=f"Use before every action: avoid reaching a "
            f"state where `{flag}` holds, which predicts failure.", env=env_id, kind="pitfall",
            body=body, keywords=_keywords([flag, first.turns[i].action_text]),
            provenance=_provenance(f_on + w_on, command, now), stats=SkillStats(support=len(f_on))))
    return out


def _episode_features(t: Trajectory) -> dict[str, float]:
    n = max(1, len(t.turns))
    return {"turns": float(len(t.turns)),
            "words per action": statistics.fmean(len(tu.action_text.split()) for tu in t.turns)
            if t.turns else 0.0,
            "share of unparseable actions": sum(tu.parse not in ("", "ok") for tu in t.turns) / n}


def _contrast_skill(env_id: str, trajs: Sequence[Trajectory], command: str, now: str) -> Skill | None:
    wins = [t for t in trajs if t.success]
    fails = [t for t in trajs if not t.success]
    if len(wins) < 2 or len(fails) < 2:
        return None
    fw = [_episode_features(t) for t in wins]
    ff = [_episode_features(t) for t in fails]
    lines = []
    for key in fw[0]:
        a = statistics.median(x[key] for x in fw)
        b = statistics.median(x[key] for x in ff)
        spread = statistics.pstdev([x[key] for x in fw + ff]) or 1.0
        if abs(a - b) / spread >= 0.3:
            lines.append(f"- {key}: solved episodes median {a:.2g}, failed episodes median {b:.2g}.")
    if not lines:
        return None
    body = (f"In {len(trajs)} recorded episodes ({len(wins)} solved), solved and failed episodes "
            "differ in:\n" + "\n".join(lines) +
            "\nAct like the solved episodes: short, well-formed actions that make progress each turn.")
    return Skill(name="what-solved-episodes-do", description=f"Use when planning a {env_id} "
                 "episode: how solved episodes differed from failed ones.", env=env_id,
                 kind="strategy", body=body, keywords=("solved", "failed", "progress"),
                 provenance=_provenance(trajs, command, now), stats=SkillStats(support=len(trajs)))


def summarize_deterministic(trajectories: Sequence[Trajectory], env_id: str | None = None,
                            command: str = "", max_pitfalls: int = 4, min_episodes: int = 2,
                            use_privileged: bool = True, now: str | None = None,
                            notes: str = "") -> list[Skill]:
    """Skills derived from statistics of ``trajectories`` (one env) and their privileged views
    (see the module docstring). Deterministic: the same trajectories give the same skills
    (``now`` aside)."""
    trajs = [t for t in trajectories if env_id is None or t.env_id == env_id]
    if not trajs:
        raise ValueError(f"no trajectories{' of ' + env_id if env_id else ''} to summarize")
    envs = {t.env_id for t in trajs}
    if len(envs) > 1:
        raise ValueError(f"trajectories mix envs {sorted(envs)}; summarize one env at a time")
    env_id = envs.pop()
    now = now or now_iso()
    trajs = sorted(trajs, key=lambda t: t.id)
    plans: dict[str, Any] = {}
    if use_privileged:
        for t in trajs:
            views = _privileged_list(t)
            if views and views[0].plan:
                plans[t.id] = list(views[0].plan)
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        groups[task_template(t)].append(t)
    multi = len(groups) > 1
    skills: list[Skill] = []
    for template in sorted(groups):
        s = _workflow_skill(env_id, template, groups[template], plans, command, now, multi)
        if s is not None and s.stats.support >= (min_episodes if multi else 1):
            skills.append(s)
    skills += _pitfall_skills(env_id, trajs, command, now, max_pitfalls, min_episodes)
    skills += _flag_skills(env_id, trajs, command, now, min_episodes=min_episodes)
    contrast = _contrast_skill(env_id, trajs, command, now)
    if contrast is not None:
        skills.append(contrast)
    if notes:
        skills = [dataclasses.replace(s, provenance=dataclasses.replace(
            s.provenance, notes=(notes + " " + s.provenance.notes).strip()[:500])) for s in skills]
    seen: set[str] = set()
    unique = []
    for s in skills:  # names come from data; two patterns may slug alike
        name, i = s.name, 2
        while name in seen:
            name, i = _slug(s.name[:60], str(i)), i + 1
        seen.add(name)
        unique.append(dataclasses.replace(s, name=name) if name != s.name else s)
    return unique


# ---------------------------------------------------------------------------------------------
# LLM summarizer

@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt file: ``name``, ``version``, the system text and the user template
    (``{placeholders}`` filled by :meth:`render`)."""

    name: str
    version: int
    system: str
    user: str
    path: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    def render(self, **values: Any) -> list[dict[str, str]]:
        try:
            user = self.user.format(**values)
        except KeyError as e:
            raise ValueError(f"prompt {self.id} needs the value {e.args[0]!r}") from None
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user.strip()}]


def prompt_versions(name: str = "summarize") -> list[int]:
    """Versions of a prompt shipped in ``agentsd/skills/prompts/`` (``<name>_v<N>.md``)."""
    out = []
    for p in PROMPT_DIR.glob(f"{name}_v*.md"):
        m = re.fullmatch(rf"{re.escape(name)}_v(\d+)\.md", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def load_prompt(name: str = "summarize", version: int | None = None) -> PromptTemplate:
    """Load ``prompts/<name>_v<version>.md`` (the newest when ``version`` is None). The file has
    front matter (``name``, ``version``) and two sections headed ``# system`` and ``# user``."""
    import yaml

    versions = prompt_versions(name)
    if not versions:
        raise FileNotFoundError(f"no prompt {name!r} in {PROMPT_DIR}")
    version = versions[-1] if version is None else version
    path = PROMPT_DIR / f"{name}_v{version}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt {name!r} has versions {versions}, not {version}")
    text = path.read_text(encoding="utf-8")
    _, head, rest = text.split("---", 2)
    meta = yaml.safe_load(head)
    parts = re.split(r"^# (system|user)\s*$", rest, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    ok = meta.get("name") == name and int(meta.get("version", -1)) == version
    if not ok or set(sections) != {"system", "user"}:
        raise ValueError(f"{path}: front matter must give name {name!r} and version {version}, and "
                         "the file must have '# system' and '# user' sections")
    return PromptTemplate(name, version, sections["system"], sections["user"], str(path))


def render_episodes(trajectories: Sequence[Trajectory], max_chars: int = 3500,
                    max_episodes: int = 6) -> str:
    """A compact text digest of episodes for the summarizer prompt: the task once, then per
    episode its outcome and its actions with the env's replies (cut to fit ``max_chars``).
    Successes and failures alternate so both are represented."""
    wins = [t for t in trajectories if t.success]
    fails = [t for t in trajectories if not t.success]
    order: list[Trajectory] = []
    while (wins or fails) and len(order) < max_episodes:
        for pool in (wins, fails):
            if pool and len(order) < max_episodes:
                order.append(pool.pop(0))
    per = max(200, max_chars // max(1, len(order)))
    out = []
    for k, t in enumerate(order):
        lines = [f"Episode {k + 1}: {'SOLVED' if t.success else 'FAILED'} in {len(t.turns)} turns, "
                 f"reward {t.total_reward:.1f}"]
        for i, tu in enumerate(t.turns):
            lines.append(f"  action {i + 1}: {_clip(tu.action_text, 100)}")
            fb = normalize_feedback(_reply_text(t, i), 100)
            if fb:
                lines.append(f"  env: {fb}")
        out.append(_clip_lines(lines, per))
    return "\n".join(out)


def _clip_lines(lines: list[str], limit: int) -> str:
    out, n = [], 0
    for ln in lines:
        if n + len(ln) > limit:
            out.append("  ...")
            break
        out.append(ln)
        n += len(ln) + 1
    return "\n".join(out)


_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_skills_output(text: str, env_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse a model's answer into skill dicts. Returns ``(items, problems)``: a problem is a
    reason an item (or the whole answer) was rejected."""
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)]
    lo, hi = text.find("["), text.rfind("]")
    if lo != -1 and hi > lo:
        candidates.append(text[lo:hi + 1])
    data = None
    for c in candidates:
        try:
            data = json.loads(c)
            break
        except ValueError:
            continue
    if data is None:
        return [], ["no JSON list of skills found in the output"]
    if isinstance(data, dict):
        data = data.get("skills", [data])
    if not isinstance(data, list):
        return [], [f"expected a JSON list of skills, got {type(data).__name__}"]
    items, problems = [], []
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            problems.append(f"item {i}: not an object")
            continue
        missing = [k for k in ("name", "description", "kind", "body") if not d.get(k)]
        if missing:
            problems.append(f"item {i}: missing {', '.join(missing)}")
            continue
        items.append({"name": _slug(str(d["name"])), "description": " ".join(str(d["description"]).split()),
                      "kind": str(d["kind"]).strip().lower(), "body": str(d["body"]).strip(),
                      "keywords": [str(k) for k in d.get("keywords", []) if isinstance(k, str | int)][:10],
                      "env": env_id})
    return items, problems


@dataclass
class SummaryResult:
    """What an LLM summarization produced: valid skills, rejected outputs with reasons, the raw
    outputs (for inspection) and the prompt id used."""

    skills: list[Skill]
    rejected: list[str]
    raw: list[str]
    prompt: str


def summarize_llm(policy: Any, trajectories: Sequence[Trajectory], env_id: str | None = None,
                  prompt_version: int | None = None, max_skills: int = 4, retries: int = 2,
                  max_tokens: int = 600, temperature: float = 0.7, seed: int = 0,
                  command: str = "", now: str | None = None, notes: str = "") -> SummaryResult:
    """Ask ``policy`` (any :class:`~agentsd.policy.base.Policy`) for skills. Every answer is
    parsed and each item validated; on no valid skill the request is retried (new seed) up to
    ``retries`` times. Rejections are logged and returned, never written."""
    from agentsd.policy.base import SamplingParams

    trajs = [t for t in trajectories if env_id is None or t.env_id == env_id]
    if not trajs:
        raise ValueError("no trajectories to summarize")
    env_id = env_id or trajs[0].env_id
    prompt = load_prompt("summarize", prompt_version)
    task = next((str(m.get("content") or "") for m in trajs[0].turns[0].observation
                 if m.get("role") == "user"), "") if trajs[0].turns else ""
    messages = prompt.render(env_id=env_id, task=_clip(task, 600), episodes=render_episodes(trajs),
                             max_skills=max_skills, kinds=", ".join(KINDS),
                             n_solved=sum(t.success for t in trajs), n_total=len(trajs))
    # a chat endpoint (OpenAI-compatible server) applies the served model's own template;
    # otherwise render with the policy's tokenizer and send token ids
    use_chat = callable(getattr(policy, "chat", None))
    ids: list[int] = []
    if not use_chat:
        rendered = policy.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "input_ids")
                   else rendered)
    now = now or now_iso()
    rejected: list[str] = []
    raw: list[str] = []
    skills: list[Skill] = []
    for attempt in range(retries + 1):
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + attempt)
        gen = policy.chat([messages], params)[0] if use_chat else policy.generate([ids], params)[0]
        text = gen.text
        raw.append(text)
        items, problems = parse_skills_output(text, env_id)
        for p in problems:
            rejected.append(f"attempt {attempt + 1}: {p}")
            log.warning("summarizer output rejected (%s, attempt %d): %s", prompt.id, attempt + 1, p)
        for d in items[:max_skills]:
            try:
                skills.append(Skill.from_dict({**d, "provenance": {
                    "method": "llm", "summarizer": prompt.id, "model": str(getattr(policy, "model_id", "")),
                    "source_trajectories": [t.id for t in trajs][:MAX_SOURCE_IDS],
                    "n_sources": len(trajs), "created": now, "updated": now, "command": command,
                    "notes": notes[:500]},
                    "stats": {"support": len(trajs)}}))
            except SkillError as e:
                rejected.append(f"attempt {attempt + 1}: skill {d.get('name')!r}: {e}")
                log.warning("summarizer skill rejected (%s): %s", prompt.id, e)
        if skills:
            break
    return SummaryResult(skills, rejected, raw, prompt.id)


# ---------------------------------------------------------------------------------------------
# incremental updates

@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    merged: list[tuple[str, str]] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def update_library(library: SkillLibrary, new_skills: Iterable[Skill], dedupe_threshold: float = 0.6,
                   now: str | None = None) -> UpdateReport:
    """Merge ``new_skills`` into ``library`` in place: a skill with an existing name replaces the
    text and keeps merged statistics and sources; a near-duplicate of the same env and kind is
    folded into the existing skill; anything else is added."""
    now = now or now_iso()
    rep = UpdateReport()
    for s in new_skills:
        res = library.add(s, dedupe_threshold=dedupe_threshold, now=now)
        if res == "added":
            rep.added.append(s.name)
        elif res == "replaced":
            rep.replaced.append(s.name)
        else:
            rep.merged.append((res.split(":", 1)[1], s.name))
    return rep


def update_stats(library: SkillLibrary, trajectories: Iterable[Trajectory]) -> None:
    """Add the outcomes of ``trajectories`` (not seen before) to each skill of their env: an
    episode counts *with* a skill when ``traj.skills`` names it, *without* otherwise."""
    by_env: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_env[t.env_id].append(t)
    for env, trajs in by_env.items():
        for s in library.for_env(env):
            w = [t for t in trajs if s.name in t.skills]
            wo = [t for t in trajs if s.name not in t.skills]
            delta = SkillStats(episodes_with=len(w), successes_with=sum(t.success for t in w),
                               episodes_without=len(wo), successes_without=sum(t.success for t in wo))
            library.replace(dataclasses.replace(s, stats=s.stats + delta))


def read_trajectories(paths: Iterable[str | Path]) -> list[Trajectory]:
    """Trajectories from JSONL or Parquet files written by the trajectory store
    (:mod:`agentsd.store`); a truncated last JSONL record (a writer killed mid-record) is
    skipped with a warning."""
    from agentsd.store import load

    out: list[Trajectory] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such trajectory file (write one with `agentsd rollout --out {p}`)")
        out.extend(load(p))
    return out
