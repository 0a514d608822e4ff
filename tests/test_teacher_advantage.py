"""The teacher's advantage, measured before training: each teacher view (skills only, hints only,
both) acts on the held-out tasks next to the student at step 0, logged as
``teacher/advantage/<view>`` with one printed line, and a plain sentence when the skills alone
give the teacher no advantage. Plus the step-0 warning: it fires on success only and points at
the trainer."""

from __future__ import annotations

import warnings

import pytest

from agentsd.distill.config import ModelConfig, RolloutSettings, TeacherConfig, TrainConfig
from agentsd.distill.episodes import (
    advantage_contexts,
    check_teacher,
    fmt_advantage,
    no_advantage_message,
    teacher_advantage,
)
from agentsd.hints import TeacherContextConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = ("skills", "hints", "both")


def _ctx(*views):
    return TeacherContextConfig(views=views)


# ---- which views, as far as the context allows ----------------------------------------------

@pytest.mark.parametrize("views, want", [
    (("skills", "reference"), {"skills": ("skills",), "hints": ("reference",),
                               "both": ("skills", "reference")}),
    (("skills", "plan", "reference"), {"skills": ("skills",), "hints": ("plan", "reference"),
                                       "both": ("skills", "plan", "reference")}),
    (("reference",), {"hints": ("reference",)}),  # opsd: no skills, so no skills-only or both
    (("skills",), {"skills": ("skills",)}),
])
def test_advantage_contexts_follow_the_configured_views(views, want):
    got = advantage_contexts(_ctx(*views), ALL)
    assert {k: v.views for k, v in got.items()} == want
    assert list(advantage_contexts(_ctx(*views), ())) == []


def test_teacher_advantage_is_teacher_minus_student_and_reuses_the_configured_view():
    ctx = _ctx("skills", "reference")
    success = {("skills",): 0.25, ("reference",): 0.875}
    asked = []

    def acting(c):
        asked.append(c.views)
        return {"teacher/eval_success": success[c.views], "teacher/eval_parse_rate": 1.0}

    ev = {"eval/success": 0.125, "eval/parse_rate": 0.5, "teacher/eval_success": 0.75,
          "teacher/eval_parse_rate": 0.9}
    out = teacher_advantage(ev, acting, ctx, ALL)
    assert asked == [("skills",), ("reference",)]  # "both" is the measurement already made
    assert out == {
        "teacher/eval_success/skills": 0.25, "teacher/eval_parse_rate/skills": 1.0,
        "teacher/advantage/skills": 0.125,
        "teacher/eval_success/hints": 0.875, "teacher/eval_parse_rate/hints": 1.0,
        "teacher/advantage/hints": 0.75,
        "teacher/eval_success/both": 0.75, "teacher/eval_parse_rate/both": 0.9,
        "teacher/advantage/both": 0.625}
    line = fmt_advantage({**ev, **out}, 8)
    assert line == ("teacher advantage at step 0 (held-out success, 8 tasks, greedy): student "
                    "12.5%; skills 25.0% (+12.5 pts); hints 87.5% (+75.0 pts); both 75.0% "
                    "(+62.5 pts)")
    assert no_advantage_message({**ev, **out}) is None  # the skills do help here



def test_first_tool_advantage_is_logged_where_the_env_has_a_tool_call_reference():
    """On ToolWorld the evaluation also has the right-first-tool rate: what a workflow rule
    moves first, logged per view next to success."""
    def acting(c):
        return {"teacher/eval_success": 0.0, "teacher/eval_parse_rate": 1.0,
                "teacher/eval_first_tool": 0.75}

    ev = {"eval/success": 0.0, "eval/parse_rate": 0.5, "eval/first_tool": 0.5}
    out = teacher_advantage(ev, acting, _ctx("skills"), ALL)
    assert out["teacher/eval_first_tool/skills"] == 0.75
    assert out["teacher/advantage_first_tool/skills"] == 0.25
    assert out["teacher/advantage/skills"] == 0.0
    del ev["eval/first_tool"]  # Sokoban: no such rate, no such key
    assert not any("first_tool" in k for k in teacher_advantage(ev, acting, _ctx("skills"), ALL))


def test_first_call_rates_compare_the_first_call_with_the_reference():
    from agentsd.distill.episodes import first_call_rates
    from agentsd.trajectory import Trajectory, Turn

    gold = '<tool_call>{"name": "contacts__search_contacts", "arguments": {"query": "Ada Lee"}}</tool_call>'

    def ep(action, ref=gold):
        return Trajectory(env_id="ToolWorld-Lite-v0", turns=[Turn(action_text=action, privileged={"reference": ref})])

    trajs = [ep(gold), ep(gold.replace("Ada Lee", "Ada")), ep(gold.replace("search", "show")), ep("no call")]
    assert first_call_rates(trajs, "eval/") == {"eval/first_tool": 0.5, "eval/first_call": 0.25}
    assert first_call_rates([ep("x", ref="LEFT")]) == {}  # a text reference (Sokoban): no rates

def test_no_advantage_is_said_plainly():
    ev = {"eval/success": 0.25, "teacher/eval_success/skills": 0.25,
          "teacher/advantage/skills": 0.0, "teacher/eval_success/hints": 0.9,
          "teacher/advantage/hints": 0.65}
    msg = no_advantage_message(ev)
    assert msg == ("the skills alone give the teacher no advantage: skills-only 25.0% vs student "
                   "25.0% held-out success; whatever the teacher teaches comes from the hints "
                   "view. Training goes on.")
    worse = {"eval/success": 0.5, "teacher/eval_success/skills": 0.0,
             "teacher/advantage/skills": -0.5}
    assert "no measured view acts better than the student either" in no_advantage_message(worse)
    assert no_advantage_message({"eval/success": 0.0}) is None  # skills-only not measured


# ---- the step-0 warning ---------------------------------------------------------------------

def test_worse_teacher_warning_fires_on_success_only():
    same = {"eval/success": 0.5, "eval/parse_rate": 1.0, "teacher/eval_success": 0.5,
            "teacher/eval_parse_rate": 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_teacher(same) is None  # a lower parse rate alone is no reason to warn
    worse = {**same, "teacher/eval_success": 0.25}
    with pytest.warns(UserWarning, match=r"held-out success 25\.0% vs 50\.0%; parse rate 30% vs "
                                         r"100%"):
        assert check_teacher(worse)


def _tiny(tmp_path, **kw):
    base = dict(algo="opd", steps=1, out_dir=str(tmp_path / "run"), eval_every=0,
                eval_at_start=True, eval_at_end=False, checkpoint_every=1, progress=False,
                tensorboard=False, samples_to_keep=0,
                model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                rollout=RolloutSettings(tasks_per_step=1, samples_per_task=2, max_turns=1,
                                        max_tokens=6, eval_tasks=2, eval_sampled=False))
    base.update(kw)
    return TrainConfig(**base)


def test_worse_teacher_warning_points_at_the_trainer(tmp_path, monkeypatch):
    import agentsd.distill.trainer as T

    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"eval/success": 0.5, "eval/parse_rate": 1.0})
    monkeypatch.setattr(T, "evaluate_teacher", lambda *a, **k: {
        "teacher/eval_success": 0.0, "teacher/eval_parse_rate": 1.0})
    with pytest.warns(UserWarning, match="teacher context acts worse") as got:
        res = T.train(_tiny(tmp_path))
    w = next(w for w in got if "acts worse" in str(w.message))
    assert w.filename.endswith("trainer.py"), w.filename
    assert res.history[0]["teacher/advantage/skills"] == -0.5  # the run goes on


# ---- in a run -------------------------------------------------------------------------------

def test_opd_run_logs_each_views_advantage_and_says_so(tmp_path, capsys):
    res = train_quiet(_tiny(tmp_path, progress=True))
    first = res.history[0]
    for v in ALL:
        assert first[f"teacher/advantage/{v}"] == (first[f"teacher/eval_success/{v}"]
                                                   - first["eval/success"])
        assert f"teacher/eval_parse_rate/{v}" in first
    assert first["teacher/eval_success/both"] == first["teacher/eval_success"]
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "teacher advantage at step 0" in ln]
    assert len(lines) == 1 and "student 0.0%; skills 0.0% (+0.0 pts); hints" in lines[0]
    # the tiny random model acts no better with skills: the run says so and goes on
    assert "the skills alone give the teacher no advantage" in err and "Training goes on." in err
    assert res.steps_done == 1 and res.history[-1]["step"] == 1


def train_quiet(cfg):
    from agentsd.distill.trainer import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(cfg)


def test_opsd_measures_hints_only_and_the_field_turns_it_off(tmp_path):
    opsd = train_quiet(_tiny(tmp_path / "a", algo="opsd", teacher=TeacherConfig(
        context=TeacherContextConfig(views=("reference",)))))
    keys = {k for k in opsd.history[0] if k.startswith("teacher/advantage/")}
    assert keys == {"teacher/advantage/hints"}
    off = train_quiet(_tiny(tmp_path / "b", teacher_eval_views=()))
    assert not [k for k in off.history[0] if "/advantage/" in k or "eval_success/" in k]
    assert "teacher/eval_success" in off.history[0]  # the configured context still acts


def test_teacher_eval_views_flag():
    from agentsd.distill.flags import parse_config

    cfg, _ = parse_config(["--teacher-eval-views", "skills", "both"])
    assert cfg.teacher_eval_views == ("skills", "both")
    assert TrainConfig().teacher_eval_views == ALL
    with pytest.raises(ValueError, match=r"TrainConfig\.teacher_eval_views must list distinct"):
        parse_config(["--teacher-eval-views", "skills", "skills"])
