"""Trajectories to skills: one :class:`Summarizer` interface, two summarizers, incremental updates.

A summarizer turns one env's trajectories into :class:`~agentsd.skills.library.Skill` objects
whose bodies are short imperative rules (which call, in which order, where each argument comes
from; the error and the fix; the env's conventions), bounded by
:data:`~agentsd.skills.guidance.MAX_BODY_TOKENS` and free of any one episode's values::

    summarizer.summarize(trajectories, env_id) -> list[Skill]

- :class:`DeterministicSummarizer` (the default; no model): :mod:`agentsd.skills.deterministic`;
- :class:`LLMSummarizer`: any :class:`~agentsd.policy.base.Policy` — the trainer's own model in
  process (``agentsd.policy.hf.HFPolicy``) or any OpenAI-compatible server
  (``agentsd.policy.openai``) — fills a versioned prompt from ``agentsd/skills/prompts/`` and
  answers with a JSON list of skills; each item is validated (kind, the body bound, no concrete
  value of the source episodes) into a :class:`Skill`. Malformed output is retried, and what
  still fails is rejected with a logged reason — never written as a broken skill. A model or
  server that cannot be reached raises :class:`SummarizerUnavailable` (one line: cause and fix).

**Incremental** (:func:`update_library`, :func:`refresh`): new skills merge into a library
(near-duplicates fold together, provenance keeps source ids); :func:`update_stats` adds success
counts of episodes run with and without each skill (from ``Trajectory.skills``); a refresh with
no new trajectory changes nothing and says so.

>>> from agentsd.skills.scripted import scripted_episode
>>> trajs = [scripted_episode("Sokoban-Easy-v0", seed=s, policy="oracle") for s in range(2)]
>>> skills = DeterministicSummarizer(now="2026-01-01").summarize(trajs, "Sokoban-Easy-v0")
>>> sorted({s.kind for s in skills})
['convention', 'workflow']
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentsd.retrying import retrying
from agentsd.skills.deterministic import (
    DETERMINISTIC_VERSION,
    _slug,
    action_signature,
    normalize_feedback,
    now_iso,
    summarize_deterministic,
    task_template,
)
from agentsd.skills.guidance import MAX_BODY_TOKENS, body_tokens, instance_values, leaked_values
from agentsd.skills.library import (
    KINDS,
    MAX_SOURCE_IDS,
    Skill,
    SkillError,
    SkillLibrary,
    SkillStats,
)
from agentsd.trajectory import Trajectory

__all__ = [
    "Summarizer", "DeterministicSummarizer", "LLMSummarizer", "SummarizerUnavailable",
    "DETERMINISTIC_VERSION", "task_template", "action_signature", "normalize_feedback",
    "summarize_deterministic", "PromptTemplate", "load_prompt", "prompt_versions",
    "render_episodes", "parse_skills_output", "check_body", "SummaryResult", "summarize_llm",
    "UpdateReport", "RefreshReport", "update_library", "refresh", "update_stats", "read_trajectories", "now_iso",
]

log = logging.getLogger("agentsd.skills")
PROMPT_DIR = Path(__file__).parent / "prompts"


class SummarizerUnavailable(RuntimeError):
    """The summarizer's model or server cannot be reached; the message names the cause and the fix."""


@runtime_checkable
class Summarizer(Protocol):
    """Turns one env's trajectories into skills. ``name`` goes into each skill's provenance."""

    name: str

    def summarize(self, trajectories: Sequence[Trajectory], env_id: str | None = None) -> list[Skill]:
        ...


@dataclass
class DeterministicSummarizer:
    """The offline default (:func:`summarize_deterministic` with these settings)."""

    command: str = ""
    notes: str = ""
    max_pitfalls: int = 4
    min_episodes: int = 2
    use_privileged: bool = True
    now: str | None = None
    name: str = DETERMINISTIC_VERSION
    #: ``sources`` (arguments with where their values come from) or ``names`` (calls by name)
    workflow_detail: str = "sources"

    def summarize(self, trajectories: Sequence[Trajectory], env_id: str | None = None) -> list[Skill]:
        return summarize_deterministic(trajectories, env_id, command=self.command,
                                       max_pitfalls=self.max_pitfalls, min_episodes=self.min_episodes,
                                       use_privileged=self.use_privileged, now=self.now, notes=self.notes,
                                       workflow_detail=self.workflow_detail)


# ---------------------------------------------------------------------------------------------
# LLM summarizer

def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _reply_text(traj: Trajectory, i: int) -> str:
    """The env's reply to action ``i`` (the next turn's observation or the final one)."""
    msgs = traj.turns[i + 1].observation if i + 1 < len(traj.turns) else traj.final_observation
    return "\n".join(str(m.get("content") or "") for m in msgs)


def check_body(body: str, values: Iterable[str] = ()) -> str | None:
    """Why ``body`` cannot be a skill body, or None: over :data:`MAX_BODY_TOKENS` tokens, or
    holding a concrete value of the source episodes (``values``, from
    :func:`~agentsd.skills.guidance.instance_values`) instead of a placeholder."""
    n = body_tokens(body)
    if n > MAX_BODY_TOKENS:
        return f"body is {n} tokens; a rule takes at most {MAX_BODY_TOKENS}"
    leaked = leaked_values(body, values)
    if leaked:
        return (f"body holds values of the source episodes ({', '.join(repr(v) for v in leaked[:3])}); "
                "write placeholders like <id from the search result>")
    return None

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
                             max_skills=max_skills, kinds=", ".join(KINDS), max_words=MAX_BODY_TOKENS // 2,
                             n_solved=sum(t.success for t in trajs), n_total=len(trajs))
    values = instance_values(trajs)
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
    tries = itertools.count()

    def one_try() -> list[Skill]:
        """One request (a new seed each try); the skills of its answer that pass."""
        attempt = next(tries)
        skills: list[Skill] = []
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + attempt)
        try:
            gen = policy.chat([messages], params)[0] if use_chat else policy.generate([ids], params)[0]
        except Exception as e:
            if _unreachable(e):
                raise SummarizerUnavailable(_unreachable_message(policy, e)) from e
            raise
        text = gen.text
        raw.append(text)
        items, problems = parse_skills_output(text, env_id)
        for p in problems:
            rejected.append(f"attempt {attempt + 1}: {p}")
            log.warning("summarizer output rejected (%s, attempt %d): %s", prompt.id, attempt + 1, p)
        for d in items[:max_skills]:
            if d["kind"] == "strategy":  # the older prompt's kind: a general rule
                d = {**d, "kind": "convention"}
            why = check_body(d["body"], values)
            if why:
                rejected.append(f"attempt {attempt + 1}: skill {d.get('name')!r}: {why}")
                log.warning("summarizer skill rejected (%s): %s", prompt.id, why)
                continue
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
        return skills

    # no valid skill: ask again (the shared retry policy, no wait: a model is not overloaded)
    skills = retrying(retries + 1, on_result=lambda got: not got)(one_try)
    return SummaryResult(skills, rejected, raw, prompt.id)


def _unreachable(e: BaseException) -> bool:
    """Whether ``e`` says the model or server could not be reached (not a bad answer)."""
    try:
        from agentsd.policy.openai import OpenAIBackendError
    except ImportError:  # pragma: no cover - the openai backend ships with agentsd
        OpenAIBackendError = ()  # type: ignore[assignment]  # noqa: N806
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (ConnectionError, TimeoutError, OpenAIBackendError)) or bool(
        names & {"TransportError", "ConnectError", "TimeoutException", "NetworkError"})


def _unreachable_message(policy: Any, e: BaseException) -> str:
    where = getattr(policy, "base_url", None) or getattr(policy, "model_id", None) or type(policy).__name__
    cause = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return (f"the skill summarizer's model at {where} cannot be reached ({cause}); start the server "
            "or fix --base-url/--model, or use --summarizer deterministic (the library is unchanged)")


@dataclass
class LLMSummarizer:
    """A :class:`Summarizer` on ``policy``: the trainer's own model (an in-process
    ``HFPolicy``) or any OpenAI-compatible server (``OpenAIPolicy``). :attr:`last` keeps the
    latest :class:`SummaryResult` (rejections with reasons, raw outputs)."""

    policy: Any
    prompt_version: int | None = None
    max_skills: int = 4
    retries: int = 2
    max_tokens: int = 600
    temperature: float = 0.7
    seed: int = 0
    command: str = ""
    notes: str = ""
    now: str | None = None
    last: SummaryResult | None = None

    @property
    def name(self) -> str:
        return load_prompt("summarize", self.prompt_version).id

    def summarize(self, trajectories: Sequence[Trajectory], env_id: str | None = None) -> list[Skill]:
        self.last = summarize_llm(self.policy, trajectories, env_id, prompt_version=self.prompt_version,
                                  max_skills=self.max_skills, retries=self.retries,
                                  max_tokens=self.max_tokens, temperature=self.temperature,
                                  seed=self.seed, command=self.command, now=self.now, notes=self.notes)
        return self.last.skills


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


@dataclass
class RefreshReport(UpdateReport):
    """What :func:`refresh` did: the update, the ids summarized, and a one-line message."""

    summarized: list[str] = field(default_factory=list)
    message: str = ""


def refresh(library: SkillLibrary, trajectories: Iterable[Trajectory], summarizer: Summarizer,
            env_id: str, seen: Iterable[str] = (), dedupe_threshold: float = 0.6,
            now: str | None = None, count_stats: bool = True) -> RefreshReport:
    """Summarize the ``env_id`` trajectories not in ``seen`` (ids summarized before) with
    ``summarizer`` and merge the skills into ``library`` in place. No new trajectory: a no-op
    whose :attr:`RefreshReport.message` says so (not an error). A summarizer that fails
    (:class:`SummarizerUnavailable`) raises before ``library`` is touched. ``count_stats``
    adds the trajectories' outcomes to the skills' statistics (once per trajectory: pass False
    for a second summarizer over the same ones)."""
    done = set(seen)
    fresh = [t for t in trajectories if t.env_id == env_id and t.id not in done]
    if not fresh:
        return RefreshReport(message=f"{env_id}: no new trajectories to summarize (every one was "
                                     "summarized before); the library is unchanged")
    new = summarizer.summarize(fresh, env_id)
    if count_stats:
        update_stats(library, fresh)
    rep = update_library(library, new, dedupe_threshold=dedupe_threshold, now=now)
    return RefreshReport(added=rep.added, merged=rep.merged, replaced=rep.replaced,
                         summarized=[t.id for t in fresh],
                         message=f"{env_id}: {len(fresh)} new trajectories -> {len(new)} skills "
                                 f"({len(rep.added)} added, {len(rep.merged)} merged, "
                                 f"{len(rep.replaced)} replaced) by {summarizer.name}")


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
