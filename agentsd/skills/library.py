"""The skill library: ``<root>/<env>/<skill-name>/SKILL.md`` files, loaded, validated, merged, saved.

A skill is a short piece of natural-language guidance for one env that conditions the *teacher*
only. On disk it follows the Agent Skills specification (https://agentskills.io/specification):
one folder per skill holding ``SKILL.md``, YAML front matter with the spec's ``name`` and
``description`` and agentsd's own data under ``metadata`` (string values, dotted keys for the
provenance and statistics), then a Markdown body people can read and edit::

    ---
    name: push-box-from-behind
    description: Use when a box must move; stand on the far side of it first.
    metadata:
      env: Sokoban-v0
      kind: pitfall
      keywords: box, push
      provenance.method: deterministic
      provenance.summarizer: deterministic-v1
      provenance.source_trajectories: 0a1b..., 2c3d...
      stats.support: '40'
      ...
    ---
    To push a box Up, stand directly below it and move Up.

Files written before this layout (``env``, ``kind``, ``keywords``, ``provenance`` and ``stats`` at
the top level) still load; saving rewrites them in the spec's layout.

In code::

    >>> s = Skill(name="answer-format", description="Use on every turn.", env="Sokoban-v0",
    ...           kind="workflow", body="Reply with <answer>Up Left</answer>.")
    >>> parse_skill_md(render_skill_md(s)) == s
    True

:func:`load_library` / :meth:`SkillLibrary.save` read and write folders; every validation error
names the file and the field and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KINDS", "LEGACY_KINDS", "Skill", "SkillStats", "Provenance", "SkillError", "SkillLibrary",
    "parse_skill_md", "render_skill_md", "skill_metadata", "load_skill", "load_library", "env_dir_name",
    "similarity", "merge_skills", "default_root",
]

#: what a skill is about: the calls that solve a kind of task, in order, and where each argument
#: comes from (workflow); an error the env returns and the call that avoids or fixes it (pitfall);
#: a rule every task of the env follows: answer formats, id types, login first (convention)
KINDS = ("workflow", "pitfall", "convention")
#: kinds that older files carry: they still load, and summarizers no longer write them
LEGACY_KINDS = ("strategy",)
_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_BODY = 4000
#: provenance keeps at most this many trajectory ids (the count is kept in full)
MAX_SOURCE_IDS = 20
_WORD_RE = re.compile(r"[a-z0-9_]+")
#: workflows fold into each other only at this word overlap or above
WORKFLOW_DEDUPE = 0.95


class SkillError(ValueError):
    """A skill file or skill object is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class SkillStats:
    """Evidence and usefulness counts. ``support`` is how many trajectories the skill was
    derived from; the ``*_with`` / ``*_without`` counts come from episodes in which the teacher
    was / was not shown the skill (``Trajectory.skills``), updated by :func:`update_stats`."""

    support: int = 0
    episodes_with: int = 0
    successes_with: int = 0
    episodes_without: int = 0
    successes_without: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise SkillError(f"stats.{f.name} must be a non-negative int, got {v!r}")
        if self.successes_with > self.episodes_with or self.successes_without > self.episodes_without:
            raise SkillError("stats: successes cannot exceed episodes")

    @property
    def success_rate_with(self) -> float | None:
        return self.successes_with / self.episodes_with if self.episodes_with else None

    @property
    def success_rate_without(self) -> float | None:
        return self.successes_without / self.episodes_without if self.episodes_without else None

    def __add__(self, other: SkillStats) -> SkillStats:
        return SkillStats(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                             for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class Provenance:
    """Where a skill came from: the method (``deterministic`` or ``llm``), the summarizer and
    prompt version, the model (for ``llm``), source trajectory ids (capped at
    :data:`MAX_SOURCE_IDS`; ``n_sources`` is the full count), timestamps and the command."""

    method: str = "manual"
    summarizer: str = ""
    model: str = ""
    source_trajectories: tuple[str, ...] = ()
    n_sources: int = 0
    created: str = ""
    updated: str = ""
    command: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("deterministic", "llm", "manual", "merged"):
            raise SkillError(f"provenance.method must be deterministic, llm, manual or merged, "
                             f"got {self.method!r}")
        if not isinstance(self.n_sources, int) or self.n_sources < 0:
            raise SkillError(f"provenance.n_sources must be a non-negative int, got {self.n_sources!r}")
        object.__setattr__(self, "source_trajectories", tuple(str(s) for s in self.source_trajectories))
        if any("," in s for s in self.source_trajectories):
            raise SkillError("provenance.source_trajectories: an id cannot hold a comma")


@dataclass(frozen=True)
class Skill:
    """One skill (see the module docstring). Validated on construction."""

    name: str
    description: str
    env: str
    kind: str
    body: str
    keywords: tuple[str, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    stats: SkillStats = field(default_factory=SkillStats)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or len(self.name) > MAX_NAME:
            raise SkillError(f"name must be lowercase letters, digits and single hyphens, at most "
                             f"{MAX_NAME} chars (e.g. 'push-box-from-behind'), got {self.name!r}")
        if not isinstance(self.description, str) or not self.description.strip():
            raise SkillError("description must be a non-empty string saying when the skill applies")
        if "\n" in self.description.strip() or len(self.description) > MAX_DESCRIPTION:
            raise SkillError(f"description must be one line of at most {MAX_DESCRIPTION} chars")
        if not isinstance(self.env, str) or not self.env:
            raise SkillError("env must be a registered env id such as 'Sokoban-v0'")
        if self.kind not in KINDS + LEGACY_KINDS:
            raise SkillError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.body, str) or not self.body.strip():
            raise SkillError("body must be non-empty Markdown (the guidance the teacher reads)")
        if len(self.body) > MAX_BODY:
            raise SkillError(f"body is {len(self.body)} chars; keep it under {MAX_BODY} (skills "
                             "share the teacher's context window)")
        if isinstance(self.keywords, str) or not all(isinstance(k, str) for k in self.keywords):
            raise SkillError("keywords must be a list of strings")
        object.__setattr__(self, "description", self.description.strip())
        object.__setattr__(self, "body", self.body.strip())
        # commas separate keywords on disk, so a keyword never holds one
        object.__setattr__(self, "keywords", tuple(
            k for k in (" ".join(k.replace(",", " ").split()) for k in self.keywords) if k))
        if not isinstance(self.provenance, Provenance):
            raise SkillError("provenance must be a Provenance")
        if not isinstance(self.stats, SkillStats):
            raise SkillError("stats must be a SkillStats")

    def text(self) -> str:
        """Everything retrieval matches against (name, description, keywords, body)."""
        return " ".join([self.name.replace("-", " "), self.description, " ".join(self.keywords),
                         self.body])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keywords"] = list(self.keywords)
        d["provenance"]["source_trajectories"] = list(self.provenance.source_trajectories)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Skill:
        d = dict(d)
        prov, stats = d.pop("provenance", None) or {}, d.pop("stats", None) or {}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SkillError(f"unknown field(s) {sorted(unknown)}; allowed: name, description, env, "
                             "kind, body, keywords, provenance, stats")
        missing = [k for k in ("name", "description", "env", "kind", "body") if k not in d]
        if missing:
            raise SkillError(f"missing required field(s): {', '.join(missing)}")
        if not isinstance(prov, dict) or not isinstance(stats, dict):
            raise SkillError("provenance and stats must be mappings")
        bad = set(prov) - {f.name for f in dataclasses.fields(Provenance)}
        if bad:
            raise SkillError(f"unknown provenance field(s) {sorted(bad)}")
        bad = set(stats) - {f.name for f in dataclasses.fields(SkillStats)}
        if bad:
            raise SkillError(f"unknown stats field(s) {sorted(bad)}")
        keywords = d.pop("keywords", None) or ()
        if isinstance(keywords, str) or not isinstance(keywords, list | tuple):
            raise SkillError(f"keywords must be a list of strings, got {keywords!r}")
        try:
            return cls(**d, keywords=tuple(keywords), provenance=Provenance(**prov),
                       stats=SkillStats(**stats))
        except TypeError as e:
            raise SkillError(f"bad field types: {e}") from None


def default_root() -> Path:
    """The shipped library: ``agentsd/shipped_skills`` in an installed wheel (the repository's
    ``skills/`` folder is packaged there), else ``skills/`` of the checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "shipped_skills"
    return installed if installed.is_dir() else package.parent / "skills"


def env_dir_name(env: str) -> str:
    """Folder name of an env id (``/`` in namespaced ids becomes ``__``)."""
    return env.replace("/", "__")


#: list-valued fields, written as one comma-separated string (the spec's metadata values are strings)
_LIST_KEYS = ("keywords", "provenance.source_trajectories")


def skill_metadata(skill: Skill) -> dict[str, str]:
    """agentsd's data of a skill as the spec's ``metadata`` map of strings: ``env``, ``kind``,
    ``keywords`` and dotted ``provenance.*`` / ``stats.*`` keys."""
    d = skill.to_dict()
    flat: dict[str, Any] = {"env": d["env"], "kind": d["kind"], "keywords": d["keywords"]}
    for group in ("provenance", "stats"):
        flat.update({f"{group}.{k}": v for k, v in d[group].items()})
    return {k: ", ".join(v) if isinstance(v, list) else str(v) for k, v in flat.items()}


def _fields_from_metadata(meta: Any) -> dict[str, Any]:
    """The inverse of :func:`skill_metadata` (values typed back by the dataclasses)."""
    if not isinstance(meta, dict):
        raise SkillError("'metadata' must be a mapping of string keys to string values")
    out: dict[str, Any] = {"provenance": {}, "stats": {}}
    ints = {f.name for f in dataclasses.fields(SkillStats)} | {"n_sources"}
    for key, value in meta.items():
        group, _, name = str(key).partition(".")
        value = "" if value is None else str(value)
        if key in _LIST_KEYS:
            parsed: Any = [x.strip() for x in value.split(",") if x.strip()]
        elif name in ints:
            try:
                parsed = int(value)
            except ValueError:
                raise SkillError(f"metadata {key!r} must be a whole number, got {value!r}") from None
        else:
            parsed = value
        if group in ("provenance", "stats") and name:
            out[group][name] = parsed
        elif key in ("env", "kind", "keywords"):
            out[key] = parsed
        else:
            raise SkillError(f"unknown metadata key {key!r}; allowed: env, kind, keywords, "
                             "provenance.<field>, stats.<field>")
    return out


def render_skill_md(skill: Skill) -> str:
    """The ``SKILL.md`` text of a skill (spec front matter + body)."""
    front = {"name": skill.name, "description": skill.description, "metadata": skill_metadata(skill)}
    text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
    return f"---\n{text}---\n\n{skill.body}\n"


def parse_skill_md(text: str, path: str | Path = "<string>") -> Skill:
    """Parse ``SKILL.md`` text; :class:`SkillError` names ``path`` and the bad field."""
    if not text.startswith("---"):
        raise SkillError(f"{path}: SKILL.md must start with '---' YAML front matter")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise SkillError(f"{path}: front matter is not closed by a '---' line")
    head, body = parts[0][3:], parts[1].lstrip("-").lstrip("\n")
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as e:
        raise SkillError(f"{path}: front matter is not valid YAML: {e}") from None
    if not isinstance(meta, dict):
        raise SkillError(f"{path}: front matter must be a mapping of fields")
    if "body" in meta:
        raise SkillError(f"{path}: 'body' is not a front-matter field; write it below the '---'")
    try:
        if "metadata" in meta:  # the spec's layout; without it, the older top-level fields
            meta = {**{k: v for k, v in meta.items() if k != "metadata"},
                    **_fields_from_metadata(meta["metadata"])}
        return Skill.from_dict({**meta, "body": body})
    except SkillError as e:
        raise SkillError(f"{path}: {e}") from None


def load_skill(path: str | Path) -> Skill:
    """Load one ``SKILL.md`` (or a folder holding one); its folder must be named after it."""
    p = Path(path)
    if p.is_dir():
        p = p / "SKILL.md"
    if not p.is_file():
        raise SkillError(f"{p}: no such SKILL.md")
    skill = parse_skill_md(p.read_text(encoding="utf-8"), p)
    if p.parent.name != skill.name:
        raise SkillError(f"{p}: field 'name' is {skill.name!r} but the folder is "
                         f"{p.parent.name!r}; rename one so they match")
    return skill


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower()))


def similarity(a: Skill, b: Skill) -> float:
    """Jaccard overlap of the words of two skills (0..1); near-duplicates score high."""
    wa, wb = _words(a.description + " " + a.body), _words(b.description + " " + b.body)
    return len(wa & wb) / max(1, len(wa | wb))


def merge_skills(keep: Skill, other: Skill, now: str = "") -> Skill:
    """Fold ``other`` into ``keep``: keep's text, the union of sources and summed statistics."""
    sources = list(dict.fromkeys(keep.provenance.source_trajectories
                                 + other.provenance.source_trajectories))
    prov = dataclasses.replace(
        keep.provenance, source_trajectories=tuple(sources[:MAX_SOURCE_IDS]),
        n_sources=max(len(sources), keep.provenance.n_sources + other.provenance.n_sources),
        updated=now or keep.provenance.updated,
        notes=(keep.provenance.notes + f" merged:{other.name}").strip()[:500])
    keywords = tuple(dict.fromkeys(keep.keywords + other.keywords))[:20]
    return dataclasses.replace(keep, provenance=prov, stats=keep.stats + other.stats,
                               keywords=keywords)


class SkillLibrary:
    """Skills of any number of envs, unique by ``(env, name)``.

    >>> lib = SkillLibrary()
    >>> lib.add(Skill("a", "Use always.", "Sokoban-v0", "workflow", "Do x."))
    'added'
    >>> [s.name for s in lib.for_env("Sokoban-v0")]
    ['a']
    """

    def __init__(self, skills: Iterable[Skill] = ()) -> None:
        self._skills: dict[tuple[str, str], Skill] = {}
        for s in skills:
            self.add(s)

    def __len__(self) -> int:
        return len(self._skills)

    def __iter__(self) -> Iterator[Skill]:
        return iter(sorted(self._skills.values(), key=lambda s: (s.env, s.name)))

    def envs(self) -> list[str]:
        return sorted({s.env for s in self._skills.values()})

    def for_env(self, env: str) -> list[Skill]:
        return [s for s in self if s.env == env]

    def get(self, env: str, name: str) -> Skill:
        try:
            return self._skills[(env, name)]
        except KeyError:
            names = [s.name for s in self.for_env(env)]
            raise KeyError(f"no skill {name!r} for {env!r}; it has: {names or 'none'}") from None

    def find(self, name: str) -> list[Skill]:
        """Skills of any env with this name."""
        return [s for s in self if s.name == name]

    def replace(self, skill: Skill) -> None:
        self._skills[(skill.env, skill.name)] = skill

    def remove(self, env: str, name: str) -> None:
        del self._skills[(env, name)]

    def add(self, skill: Skill, dedupe_threshold: float | None = None, now: str = "") -> str:
        """Add ``skill``. With ``dedupe_threshold``, a near-duplicate of the same env and kind
        (:func:`similarity` at or above it) absorbs it instead. Returns ``"added"``,
        ``"merged:<name>"`` or ``"replaced"`` (same env and name: the newer text wins, the
        statistics and sources are merged)."""
        key = (skill.env, skill.name)
        if key in self._skills:
            old = self._skills[key]
            self._skills[key] = merge_skills(dataclasses.replace(
                skill, provenance=dataclasses.replace(skill.provenance,
                                                      created=old.provenance.created or
                                                      skill.provenance.created)), old, now)
            return "replaced"
        if dedupe_threshold is not None:
            best, score = None, 0.0
            # two workflows are two templates' call orders: fold only (near-)identical ones
            need = max(dedupe_threshold, WORKFLOW_DEDUPE) if skill.kind == "workflow" else dedupe_threshold
            for other in self.for_env(skill.env):
                if other.kind == skill.kind:
                    sim = similarity(skill, other)
                    if sim > score:
                        best, score = other, sim
            if best is not None and score >= need:
                self._skills[(best.env, best.name)] = merge_skills(best, skill, now)
                return f"merged:{best.name}"
        self._skills[key] = skill
        return "added"

    def dedupe(self, threshold: float = 0.6) -> list[tuple[str, str]]:
        """Merge near-duplicates within each (env, kind); the skill with more support survives.
        Returns the ``(kept, dropped)`` name pairs."""
        merged: list[tuple[str, str]] = []
        ordered = sorted(self._skills.values(), key=lambda s: (-s.stats.support, s.name))
        self._skills.clear()
        for s in ordered:
            res = self.add(s, dedupe_threshold=threshold)
            if res.startswith("merged:"):
                merged.append((res.split(":", 1)[1], s.name))
        return merged

    def save(self, root: str | Path, envs: Iterable[str] | None = None) -> list[Path]:
        """Write every skill (of ``envs``, or all) to ``root/<env>/<name>/SKILL.md``. Skill
        folders of those envs that are no longer in the library are left alone (a person may
        have added them); use :meth:`remove` and delete the folder to drop one."""
        root = Path(root)
        wanted = set(envs) if envs is not None else None
        out = []
        for s in self:
            if wanted is not None and s.env not in wanted:
                continue
            d = root / env_dir_name(s.env) / s.name
            d.mkdir(parents=True, exist_ok=True)
            p = d / "SKILL.md"
            tmp = p.with_suffix(".md.tmp")
            tmp.write_text(render_skill_md(s), encoding="utf-8")
            tmp.replace(p)  # atomic: a crash never leaves a half-written SKILL.md
            out.append(p)
        return out


def load_library(root: str | Path | None = None, env: str | None = None,
                 strict: bool = True, allow_empty: bool = True) -> SkillLibrary:
    """Load every ``<root>/<env>/<skill>/SKILL.md`` (the shipped ``skills/`` by default).

    ``strict`` raises on the first invalid file; otherwise each invalid file is skipped with a
    warning that names it, and the rest still load. A skill whose ``env`` field disagrees with
    its env folder is an error too. A folder that does not exist or cannot be read raises
    :class:`SkillError` with the fix; so does one holding no skill (of ``env``) unless
    ``allow_empty``. Nothing on disk is changed."""
    import warnings

    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        raise SkillError(f"{root}: skill library folder does not exist; build one with "
                         "`agentsd skills build --env ID --from FILE --out DIR` or pass another root")
    try:
        next(iter(root.iterdir()), None)  # glob() hides an unreadable folder as an empty one
        paths = sorted(root.glob("*/*/SKILL.md"))
    except OSError as e:
        raise SkillError(f"{root}: skill library folder cannot be read ({e.strerror or e}); fix its "
                         "permissions or pass another root") from None
    lib = SkillLibrary()
    for p in paths:
        try:
            try:
                s = parse_skill_md(p.read_text(encoding="utf-8"), p)
            except (OSError, UnicodeDecodeError) as e:
                raise SkillError(f"{p}: cannot be read ({e}); fix its permissions or encoding (UTF-8)") from None
            if p.parent.name != s.name:
                raise SkillError(f"{p}: field 'name' is {s.name!r} but the folder is "
                                 f"{p.parent.name!r}; rename one so they match")
            if env_dir_name(s.env) != p.parent.parent.name:
                raise SkillError(f"{p}: field 'env' is {s.env!r} but the skill lives under "
                                 f"{p.parent.parent.name!r}; move it to {env_dir_name(s.env)}/")
        except SkillError as e:
            if strict:
                raise SkillError(f"{e} (fix or delete the file; load_library(strict=False) skips it)") from None
            warnings.warn(f"skipping invalid skill file (fix or delete it): {e}", stacklevel=2)
            continue
        if env is None or s.env == env:
            if (s.env, s.name) in {(x.env, x.name) for x in lib}:
                raise SkillError(f"{p}: duplicate skill {s.name!r} for {s.env!r}")
            lib.add(s)
    if not len(lib) and not allow_empty:
        what = f"no skills for {env}" if env else "no <env>/<skill>/SKILL.md files"
        raise SkillError(f"{root}: skill library folder has {what}; build them with "
                         "`python scripts/build_skills.py` or `agentsd skills build`, or pass another root")
    return lib
