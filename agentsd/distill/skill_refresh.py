"""Dynamic skills (Skill-SD): the run's skill library grows from the student's own rollouts.

Every ``skills.refresh_every`` steps the rollouts of the last ``skills.window`` steps that no
earlier refresh summarized (successes and failures, with the env's feedback and the per-turn
privileged views the trainer records) go through a summarizer
(:mod:`agentsd.skills.summarize`: the deterministic one, the trainer's own model in process,
or an OpenAI-compatible server) into the library; each refresh that summarized something is a
new saved version, and the teacher reads it from the next step on. Layout in the run folder::

    skills_versions/
      index.json             # one entry per version: step, skills added/merged/replaced, size
      v000/<env>/<skill>/SKILL.md    # the library the run started with (= <run>/skills)
      v001/...               # after the first refresh, ...
      rollouts/step_000004.jsonl     # each step's rollouts (skills shown in .skills): the input

The current version id rides in every checkpoint (``skills_version``); a resumed run loads that
version and drops the versions written after it (the steps that wrote them run again and write
them again), so it sees the same libraries and reproduces the metrics.

Bad input never costs the run its library: a summarizer that cannot be reached, a refresh with
nothing new, or a version that does not load back are each one line (cause and fix) and the
run goes on with the library it has.

>>> v = SkillVersions("/nonexistent-run")
>>> v.path(3).name
'v003'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentsd.trajectory import Trajectory

__all__ = ["SkillVersions", "SkillRefresh", "make_summarizer", "refresh_once", "shown_metrics",
           "VERSIONS_DIR"]

log = logging.getLogger("agentsd.train")
VERSIONS_DIR = "skills_versions"


class SkillVersions:
    """A run's library versions on disk (see the module docstring). Rank 0 writes; every rank
    reads."""

    def __init__(self, run_dir: str | Path, env_id: str = "") -> None:
        self.root = Path(run_dir) / VERSIONS_DIR
        self.env_id = env_id

    def path(self, version: int) -> Path:
        return self.root / f"v{version:03d}"

    def rollouts_path(self, step: int) -> Path:
        return self.root / "rollouts" / f"step_{step:06d}.jsonl"

    def index(self) -> list[dict[str, Any]]:
        p = self.root / "index.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def current(self) -> int:
        idx = self.index()
        return idx[-1]["version"] if idx else 0

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.root / "index.json.tmp"
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, self.root / "index.json")  # atomic: a kill never leaves half an index

    def start(self, library: Any, keep: int = 0) -> None:
        """Rank 0, once a run: ``v000`` from the run's starting ``library`` (written once) and
        every version after ``keep`` dropped (a resume from a checkpoint of version ``keep``;
        0 for a fresh start)."""
        self.root.mkdir(parents=True, exist_ok=True)
        entries = self.index()
        if not entries:
            _save_version(library, self.path(0))
            entries = [{"version": 0, "step": 0, "added": [s.name for s in library], "merged": [],
                        "replaced": [], "size": len(library), "summarized": 0,
                        "summarizer": "", "message": "the library the run started with"}]
        dropped = [e["version"] for e in entries if e["version"] > keep]
        entries = [e for e in entries if e["version"] <= keep]
        self._write_index(entries)
        for v in dropped:
            shutil.rmtree(self.path(v), ignore_errors=True)

    def load(self, version: int) -> Any:
        """Version ``version`` of the library; an invalid or missing file is one line naming it
        and the fix (nothing on disk changes)."""
        from agentsd.skills import SkillError, load_library

        try:
            return load_library(self.path(version), env=self.env_id or None, strict=True)
        except SkillError as e:
            raise SkillError(f"skill library version v{version:03d} of this run does not load: "
                             f"{e}. Restore the file (the index is {self.root / 'index.json'}) "
                             "or start a new --out-dir") from None

    def write(self, library: Any, entry: dict[str, Any]) -> int:
        """Rank 0: ``library`` as the next version (checked by loading it back), its entry
        appended to the index; returns the new version id. A library that does not load back
        raises :class:`~agentsd.skills.SkillError` and leaves the versions as they were."""
        from agentsd.skills import load_library

        version = self.current() + 1
        tmp = self.root / f"v{version:03d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _save_version(library, tmp)
            load_library(tmp, env=self.env_id or None, strict=True)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.path(version), ignore_errors=True)
        os.replace(tmp, self.path(version))
        self._write_index([*self.index(), {"version": version, **entry}])
        return version


def _save_version(library: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    library.save(folder)


def shown_metrics(shown: Sequence[tuple[Sequence[str], float]], size: int) -> dict[str, float]:
    """Per step: ``skills/library_size`` (the library the step's teacher rows read), and for each
    skill shown, ``skills/shown/<name>`` (episodes whose teacher rows saw it) and
    ``skills/solved/<name>`` (how many of those the student solved).

    >>> m = shown_metrics([(["a", "b"], 1.0), (["a"], 0.0)], 5)
    >>> m["skills/library_size"], m["skills/shown/a"], m["skills/solved/a"], m["skills/shown/b"]
    (5.0, 2.0, 1.0, 1.0)
    """
    out = {"skills/library_size": float(size)}
    for names, solved in shown:
        for n in names:
            out[f"skills/shown/{n}"] = out.get(f"skills/shown/{n}", 0.0) + 1.0
            out[f"skills/solved/{n}"] = out.get(f"skills/solved/{n}", 0.0) + float(solved > 0)
    return out


def make_summarizer(cfg: Any, policy: Any, step: int) -> Any:
    """The configured :class:`~agentsd.skills.summarize.Summarizer` for the refresh at ``step``:
    ``deterministic``; ``llm`` on ``policy`` (the trainer's own model, in process); ``openai``
    on ``skills.base_url`` / ``skills.model``. A server that cannot be reached raises
    :class:`~agentsd.skills.summarize.SummarizerUnavailable`."""
    from agentsd.skills.summarize import DeterministicSummarizer, LLMSummarizer

    sc = cfg.skills
    command, notes = "agentsd train", f"refreshed at step {step} of {cfg.out_dir}"
    if sc.summarizer == "deterministic":
        return DeterministicSummarizer(command=command, notes=notes)
    if sc.summarizer == "openai":
        from agentsd.skills.cli import load_policy

        policy = load_policy("openai", sc.model, sc.base_url)
    return LLMSummarizer(policy, max_skills=sc.max_new or 4, max_tokens=sc.llm_max_tokens,
                         seed=cfg.seed * 1_000_003 + step, command=command, notes=notes)


def refresh_once(library: Any, trajectories: Sequence[Trajectory], seen: Sequence[str],
                 summarizer: Any, env_id: str, max_new: int = 0) -> tuple[Any, Any]:
    """One refresh on a *copy* of ``library``: ``(new library or None, RefreshReport)``.
    ``None`` when nothing was new to summarize (the report's message says so); at most
    ``max_new`` added skills are kept (0: all). Raises what the summarizer raises
    (:class:`~agentsd.skills.summarize.SummarizerUnavailable`), ``library`` untouched."""
    from agentsd.skills import SkillLibrary
    from agentsd.skills.summarize import refresh

    work = SkillLibrary(list(library))
    rep = refresh(work, trajectories, summarizer, env_id, seen=seen)
    if not rep.summarized:
        return None, rep
    if max_new and len(rep.added) > max_new:
        for name in rep.added[max_new:]:
            work.remove(env_id, name)
        rep = dataclasses.replace(rep, added=rep.added[:max_new],
                                  message=f"{rep.message}; kept the first {max_new} new "
                                          "(skills.max_new)")
    return work, rep


class SkillRefresh:
    """The trainer's dynamic-skills stage: records each step's rollouts, refreshes the library
    every ``skills.refresh_every`` steps, and hands the teacher context the new version."""

    def __init__(self, cfg: Any, run_dir: Path, contexts: Any, policy: Any, rank: Any) -> None:
        self.cfg, self.contexts, self.policy, self.rank = cfg, contexts, policy, rank
        self.versions = SkillVersions(run_dir, cfg.rollout.env)
        self.version = 0

    # -- start / resume / checkpoint --------------------------------------------------------

    def start(self, version: int) -> None:
        """A fresh run (``version`` 0) or a resume from a checkpoint of ``version``: the
        versions after it go, and the teacher reads that version."""
        from agentsd.distill import distributed

        if self.rank.is_main:
            self.versions.start(self.contexts.library, keep=version)
        distributed.barrier()
        self.version = version
        if version:
            self.contexts.set_library(self.versions.load(version))

    def after_checkpoint(self, step: int) -> None:
        """Rank 0: drop the rollout files no later refresh reads (a resume from this
        checkpoint redoes the steps after it, and their refreshes read at most ``window``
        steps back)."""
        if not self.rank.is_main:
            return
        for p in sorted((self.versions.root / "rollouts").glob("step_*.jsonl")):
            if int(p.stem.split("_")[1]) <= step - self.cfg.skills.window:
                p.unlink(missing_ok=True)

    # -- the step ---------------------------------------------------------------------------

    def step(self, step: int, trajs: Sequence[Trajectory], skills: Sequence[Sequence[str]],
             ) -> dict[str, float]:
        """After the update: this step's rollouts recorded (every rank's), the shown-skill
        metrics, and on a refresh step the refresh. Returns the step's ``skills/*`` metrics."""
        from agentsd.distill import distributed

        rows = [dataclasses.replace(t, skills=list(s)).to_dict()
                for t, s in zip(trajs, skills, strict=True)]
        rows = distributed.gather_lists({"t": rows})["t"]
        size = len(self.contexts.library.for_env(self.cfg.rollout.env))
        m = shown_metrics([(r["skills"], float(r["success"])) for r in rows], size)
        if self.rank.is_main:
            self._record(step, rows)
        if step % self.cfg.skills.refresh_every == 0:
            m.update(self._refresh(step))
        m["skills/version"] = float(self.version)
        return m

    def _record(self, step: int, rows: list[dict[str, Any]]) -> None:
        from agentsd.store import write_jsonl

        path = self.versions.rollouts_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        # ids a function of (step, index): a resumed run's skills cite the same sources
        trajs = [Trajectory.from_dict({**r, "id": f"s{step:06d}-{i:03d}"}) for i, r in enumerate(rows)]
        tmp = path.with_suffix(".tmp")
        write_jsonl(trajs, tmp)
        os.replace(tmp, path)

    def _window(self, step: int) -> tuple[list[Trajectory], list[str]]:
        """The last ``window`` steps' recorded rollouts, and the ids of those an earlier
        refresh summarized (steps up to the current version's)."""
        from agentsd.store import read_trajectories

        last = self.versions.index()[-1]["step"] if self.versions.index() else 0
        trajs, seen = [], []
        for s in range(max(step - self.cfg.skills.window, 0) + 1, step + 1):
            p = self.versions.rollouts_path(s)
            got = read_trajectories(p) if p.is_file() else []
            trajs += got
            if s <= last:
                seen += [t.id for t in got]
        return trajs, seen

    def _refresh(self, step: int) -> dict[str, float]:
        """Rank 0 summarizes and writes the next version; then every rank reads the index and
        loads the version it names."""
        from agentsd.distill import distributed

        added = 0.0
        if self.rank.is_main:
            added = self._refresh_main(step)
        distributed.barrier()
        latest = self.versions.current()
        if latest != self.version:
            self.contexts.set_library(self.versions.load(latest))
            self.version = latest
        return {"skills/added": distributed.sum_scalar(added)}

    def _refresh_main(self, step: int) -> float:
        from agentsd.skills import SkillError
        from agentsd.skills.summarize import SummarizerUnavailable

        keep = f"the run goes on with skill library v{self.version:03d}"
        env = self.cfg.rollout.env
        trajs, seen = self._window(step)
        try:
            summarizer = make_summarizer(self.cfg, self.policy, step)
            new, rep = refresh_once(self.contexts.library, trajs, seen, summarizer, env,
                                    self.cfg.skills.max_new)
        except SummarizerUnavailable as e:
            _warn(f"skill refresh at step {step} skipped: {e} [in agentsd train: --skills.base-url, "
                  f"--skills.model, --skills.summarizer]; {keep}")
            return 0.0
        if new is None:
            _notice(self.cfg, f"skill refresh at step {step}: {rep.message} (a no-op; {keep})")
            return 0.0
        entry = {"step": step, "added": rep.added, "merged": [list(p) for p in rep.merged],
                 "replaced": rep.replaced, "size": len(new.for_env(env)),
                 "summarized": len(rep.summarized), "summarizer": summarizer.name,
                 "message": rep.message}
        try:
            version = self.versions.write(new, entry)
        except SkillError as e:
            _warn(f"skill refresh at step {step} wrote a skill that does not load back ({e}); the "
                  f"new version was discarded and {keep}; fix the summarizer's output or use "
                  "--skills.summarizer deterministic")
            return 0.0
        _notice(self.cfg, f"skill refresh at step {step}: {rep.message} -> v{version:03d}")
        return float(len(rep.added))


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)


def _notice(cfg: Any, msg: str) -> None:
    """A line for the run's own progress channel (stderr with ``progress``) and the log."""
    log.info(msg)
    if cfg.progress:
        import sys

        print(f"[{cfg.algo}] {msg}", file=sys.stderr, flush=True)
