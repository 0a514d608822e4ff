"""Dynamic skills (Skill-SD) on the tiny random model: a refresh summarizes the run's own
rollouts into a new saved library version the teacher reads, the version rides in checkpoints
and a resume across a refresh is exact, the metrics say which skills each teacher row saw, and
bad input (an unreachable summarizer, nothing new, an invalid skill file) costs the run
neither its library nor its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path

import pytest

from agentsd.distill.config import (
    ModelConfig,
    RolloutSettings,
    SkillsConfig,
    TeacherConfig,
    TrainConfig,
)
from agentsd.distill.metrics import read_metrics
from agentsd.distill.skill_refresh import SkillVersions, refresh_once, shown_metrics
from agentsd.distill.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = "Sokoban-Easy-v0"
# the same small library the golden runs read
from test_step_golden import SKILLS, _library  # noqa: E402


def _cfg(tmp_path: Path, name: str = "run", steps: int = 3, **skills) -> TrainConfig:
    return TrainConfig(
        algo="opd", steps=steps, seed=3, out_dir=str(tmp_path / name), eval_every=0,
        eval_at_start=False, eval_at_end=False, checkpoint_every=1, keep_checkpoints=4,
        progress=False, tensorboard=False, samples_to_keep=0,
        model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
        rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=2, max_tokens=6,
                                eval_tasks=2, eval_sampled=False),
        teacher=TeacherConfig(mode="ema", ema_decay=0.5,
                              skills_dir=_library(tmp_path / "skills_src")),
        skills=SkillsConfig(**{"refresh_every": 2, "window": 2, **skills}))


def _det(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _texts(run: Path) -> list[list[tuple]]:
    """Every version's skills as the teacher reads them (timestamps dropped)."""
    versions = SkillVersions(run, ENV)
    return [[(s.name, s.kind, s.description, s.body, s.keywords, s.stats,
              s.provenance.source_trajectories) for s in versions.load(e["version"])]
            for e in versions.index()]


# ---- a refresh ------------------------------------------------------------------------------

def test_refresh_adds_skills_from_the_runs_own_rollouts(tmp_path):
    res = train(_cfg(tmp_path, steps=3))
    run = tmp_path / "run"
    index = SkillVersions(run).index()
    assert [e["version"] for e in index] == [0, 1] and index[1]["step"] == 2
    assert sorted(index[0]["added"]) == sorted(SKILLS)  # v000: the library the run started with
    new = index[1]["added"]
    assert new and not set(new) & set(SKILLS) and index[1]["summarized"] == 8  # steps 1-2: 2x4
    lib = SkillVersions(run, ENV).load(1)
    assert {s.name for s in lib} == set(SKILLS) | set(new)
    for name in new:  # summarized from this run's own rollouts (ids: step and index)
        sources = lib.get(ENV, name).provenance.source_trajectories
        assert sources and all(s.startswith(("s000001-", "s000002-")) for s in sources)
    assert (run / "skills_versions" / "v000" / ENV / "avoid-corners" / "SKILL.md").is_file()
    # the teacher reads the new version from the next step on
    h = {r["step"]: r for r in res.history}
    assert h[1]["skills/library_size"] == h[2]["skills/library_size"] == len(SKILLS)
    assert h[3]["skills/library_size"] == len(SKILLS) + len(new)
    assert h[2]["skills/added"] == len(new) and "skills/added" not in h[1]
    assert [h[s]["skills/version"] for s in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert all(h[1][f"skills/shown/{n}"] == 4 for n in SKILLS)  # every row of the step saw them
    assert any(f"skills/shown/{n}" in h[3] for n in new)
    # each step's rollouts are kept with the skills their teacher rows saw (the refresh's input)
    rec = json.loads((run / "skills_versions" / "rollouts" / "step_000003.jsonl").read_text()
                     .splitlines()[0])
    assert set(rec["skills"]) <= set(SKILLS) | set(new) and rec["skills"]
    state = json.loads((run / "checkpoints" / "step_000003" / "state.json").read_text())
    assert state["skills_version"] == 1


def test_shown_metrics_count_rows_and_successes():
    m = shown_metrics([(["a", "b"], 1.0), (["a"], 0.0), ([], 1.0)], 7)
    assert m == {"skills/library_size": 7.0, "skills/shown/a": 2.0, "skills/solved/a": 1.0,
                 "skills/shown/b": 1.0, "skills/solved/b": 1.0}


def test_max_new_caps_the_skills_one_refresh_adds(tmp_path):
    from agentsd.skills import SkillLibrary
    from agentsd.skills.scripted import scripted_episode
    from agentsd.skills.summarize import DeterministicSummarizer

    trajs = [scripted_episode(ENV, seed=s, policy=p) for s in range(4) for p in ("oracle", "noisy")]
    full, rep = refresh_once(SkillLibrary(), trajs, (), DeterministicSummarizer(), ENV)
    assert len(rep.added) >= 2
    one, rep1 = refresh_once(SkillLibrary(), trajs, (), DeterministicSummarizer(), ENV, max_new=1)
    assert len(one) == 1 and rep1.added == rep.added[:1] and "skills.max_new" in rep1.message


def test_llm_summarizer_on_the_trainers_own_model(tmp_path):
    """The plumbing of ``--skills.summarizer llm``: the tiny model writes no valid skill (its
    answers are rejected with reasons), the refresh still counts the episodes into the
    library's statistics and saves the version."""
    run = tmp_path / "run"
    train(_cfg(tmp_path, steps=2, summarizer="llm", llm_max_tokens=8))
    index = SkillVersions(run).index()
    assert index[-1]["version"] == 1 and index[-1]["summarizer"].startswith("summarize-v")
    assert index[-1]["summarized"] == 8
    stats = SkillVersions(run, ENV).load(1).get(ENV, "avoid-corners").stats
    assert stats.episodes_with == 8  # every row of steps 1-2 saw it


# ---- resume ---------------------------------------------------------------------------------

class _Killed(Exception):
    pass


def test_resume_across_a_refresh_is_exact(tmp_path, monkeypatch):
    """Killed after step 2's refresh wrote v001 but before step 2's checkpoint: the resumed run
    (from step 1) drops that v001, writes it again, and ends with the metrics and library
    versions of a run that was never interrupted."""
    import agentsd.distill.trainer as T

    ref = train(_cfg(tmp_path, "ref", steps=4))
    assert ref.history[-1]["skills/version"] == 2.0

    real = T._checkpoint

    def die_at_two(run, step):
        if step == 2:
            raise _Killed
        real(run, step)

    monkeypatch.setattr(T, "_checkpoint", die_at_two)
    with pytest.raises(_Killed):
        train(_cfg(tmp_path, steps=4))
    run = tmp_path / "run"
    assert SkillVersions(run).current() == 1  # written after the last checkpoint (step 1)
    monkeypatch.setattr(T, "_checkpoint", real)
    res = train(_cfg(tmp_path, steps=4))
    assert res.resumed_from == 1
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    assert _det(read_metrics(tmp_path / "ref")) == _det(read_metrics(run))
    assert _texts(tmp_path / "ref") == _texts(run)
    assert [e["step"] for e in SkillVersions(run).index()] == [0, 2, 4]


def test_resume_loads_the_checkpoints_version(tmp_path):
    """A resume from a checkpoint taken after a refresh reads that version (not v000)."""
    train(_cfg(tmp_path, steps=2))
    res = train(_cfg(tmp_path, steps=3))
    assert res.resumed_from == 2
    assert res.history[0]["skills/library_size"] > len(SKILLS)


# ---- bad input ------------------------------------------------------------------------------

def test_unreachable_summarizer_warns_and_the_run_goes_on(tmp_path):
    cfg = _cfg(tmp_path, steps=2, summarizer="openai", base_url="http://127.0.0.1:9/v1",
               model="smollm2")
    with pytest.warns(UserWarning, match=r"skill refresh at step 2 skipped: .*cannot be reached"
                                         r".*goes on with skill library v000") as got:
        res = train(cfg)
    msg = next(str(w.message) for w in got if "skill refresh" in str(w.message))
    assert "\n" not in msg and "--skills.base-url" in msg
    assert res.steps_done == 2 and res.history[-1]["skills/added"] == 0.0
    assert [e["version"] for e in SkillVersions(tmp_path / "run").index()] == [0]
    assert (tmp_path / "run" / "checkpoints" / "step_000002").is_dir()


def test_refresh_with_nothing_new_is_a_logged_noop(tmp_path, monkeypatch, caplog):
    from agentsd.distill.skill_refresh import SkillRefresh

    monkeypatch.setattr(SkillRefresh, "_record", lambda self, step, rows: None)  # no inputs
    with caplog.at_level(logging.INFO, logger="agentsd.train"):
        res = train(_cfg(tmp_path, steps=2))
    assert any("no new trajectories" in r.message and "no-op" in r.message for r in caplog.records)
    assert res.history[-1]["skills/added"] == 0.0
    assert [e["version"] for e in SkillVersions(tmp_path / "run").index()] == [0]


def test_refresh_once_without_new_trajectories_changes_nothing():
    from agentsd.skills import SkillLibrary
    from agentsd.skills.scripted import scripted_episode
    from agentsd.skills.summarize import DeterministicSummarizer

    trajs = [scripted_episode(ENV, seed=s) for s in range(2)]
    lib = SkillLibrary()
    new, rep = refresh_once(lib, trajs, [t.id for t in trajs], DeterministicSummarizer(), ENV)
    assert new is None and "no new trajectories" in rep.message and len(lib) == 0


def test_invalid_skill_file_in_the_source_library_is_skipped_by_name(tmp_path):
    cfg = _cfg(tmp_path, steps=1)
    bad = Path(cfg.teacher.skills_dir) / ENV / "broken" / "SKILL.md"
    bad.parent.mkdir(parents=True)
    bad.write_text("---\nname: broken\n---\n\nno description\n")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        train(cfg)
    assert any("broken" in str(w.message) and "fix or delete" in str(w.message) for w in got)
    assert sorted(SkillVersions(tmp_path / "run").index()[0]["added"]) == sorted(SKILLS)


def test_invalid_skill_file_in_a_version_stops_the_resume_in_one_line(tmp_path):
    from agentsd.skills import SkillError

    train(_cfg(tmp_path, steps=2))
    run = tmp_path / "run"
    name = SkillVersions(run).index()[1]["added"][0]
    path = run / "skills_versions" / "v001" / ENV / name / "SKILL.md"
    path.write_text("---\nname: other-name\n---\n")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(SkillError) as e:
        train(_cfg(tmp_path, steps=3))
    msg = str(e.value)
    assert "\n" not in msg and "v001" in msg and str(path) in msg and "Restore the file" in msg
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert [v["version"] for v in SkillVersions(run).index()] == [0, 1]


def test_a_version_that_does_not_load_back_is_discarded(tmp_path, monkeypatch):
    import agentsd.distill.skill_refresh as R

    real = R._save_version

    def corrupt(library, folder):
        real(library, folder)
        if folder.name.endswith(".tmp"):
            for p in folder.glob("*/*/SKILL.md"):
                p.write_text("not a skill")

    monkeypatch.setattr(R, "_save_version", corrupt)
    with pytest.warns(UserWarning, match="does not load back.*discarded.*v000"):
        train(_cfg(tmp_path, steps=2))
    run = tmp_path / "run"
    assert [e["version"] for e in SkillVersions(run).index()] == [0]
    assert not list((run / "skills_versions").glob("v001*"))


# ---- the bandit over a changing library -----------------------------------------------------

def test_bandit_keeps_its_statistics_and_new_skills_start_at_the_prior(tmp_path):
    from agentsd.policy.models import load_tokenizer
    from agentsd.skills import Skill, SkillLibrary
    from agentsd.teacher_context import TeacherContexts

    cfg = _cfg(tmp_path)
    ctx = TeacherContexts(cfg, load_tokenizer("smollm2"))
    ctx.learn([(["avoid-corners"], 1.0), (["avoid-corners", "push-toward-targets"], 0.0)])
    old = ctx.bandit.ucb("avoid-corners")
    fresh = Skill("check-the-walls", "Use before a push.", ENV, "pitfall", "Look for a wall first.")
    ctx.set_library(SkillLibrary([*ctx.library, fresh]))
    assert len(ctx.library.for_env(ENV)) == 3
    assert ctx.bandit.ucb("avoid-corners") == old and ctx.bandit.mean("avoid-corners") == 0.5
    assert ctx.bandit.counts.get("check-the-walls") is None
    prior = ctx.bandit.prior + ctx.bandit.c * (2 * __import__("math").log(ctx.bandit.rounds + 1)
                                               + 1e-12) ** 0.5
    assert ctx.bandit.ucb("check-the-walls") == pytest.approx(prior)


# ---- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, match", [
    (["--skills.refresh-every", "-1"], r"SkillsConfig\.refresh_every must be an int >= 0"),
    (["--skills.window", "0"], r"SkillsConfig\.window must be a positive int"),
    (["--skills.summarizer", "gpt"], r"SkillsConfig\.summarizer must be one of"),
    (["--skills.summarizer", "openai"], r"needs --skills\.base-url and --skills\.model"),
    (["--skills.refresh-every", "2", "--algo", "opsd"], r"needs a teacher that reads skills"),
])
def test_bad_skills_config_is_one_line(flags, match):
    from agentsd.distill.flags import parse_config

    with pytest.raises(ValueError, match=match) as e:
        parse_config(flags)
    assert "\n" not in str(e.value)


def test_defaults_leave_dynamic_skills_off():
    cfg = TrainConfig()
    assert cfg.skills.refresh_every == 0 and cfg.skills.summarizer == "deterministic"
    assert dataclasses.asdict(cfg)["skills"]["window"] == 4
