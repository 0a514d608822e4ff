"""The teacher-context builder: views, order, exposure, placement, per-turn hints, and the proof
that the student context never holds any of it, for every registered env."""

from __future__ import annotations

import dataclasses

import pytest

import agentsd
from agentsd.hints import (
    TeacherContextConfig,
    build_teacher_messages,
    compose_teacher_context,
    failure_feedback,
    leaks,
    per_turn_hint,
    replay_privileged,
    reveal,
    with_feedback,
)
from agentsd.skills.library import Skill, SkillLibrary
from agentsd.skills.scripted import scripted_episode
from agentsd.types import Privileged

TASK = [{"role": "system", "content": "You play a game."},
        {"role": "user", "content": "Board:\n#@ $.#\nReply with <answer>moves</answer>."}]
PRIV = Privileged(answer="Right Right", solution="Right Right Up Left", plan=["Right", "Right", "Up", "Left"],
                  next_step="Right Right", notes="An optimal solution takes 4 moves.",
                  extra={"moves_remaining": 4})


def _system(priv, skills, **cfg):
    return build_teacher_messages(TASK, priv, skills, TeacherContextConfig(**cfg))[0]["content"]


SKILL = Skill("push-from-behind", "Use when a box must move toward a target.", "Sokoban-v0", "strategy",
              "Stand on the side of the box opposite to the target, then push.")


def test_config_validation_names_the_field():
    for kw, field in [({"views": ("skills", "nope")}, "views"), ({"exposure": 1.5}, "exposure"),
                      ({"exposure_mode": "turn"}, "exposure_mode"), ({"max_skills": -1}, "max_skills"),
                      ({"retrieval": "tfidf"}, "retrieval"), ({"placement": "end"}, "placement"),
                      ({"views": ("plan", "plan")}, "views")]:
        with pytest.raises(ValueError, match=field):
            TeacherContextConfig(**kw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TeacherContextConfig().exposure = 0.3  # type: ignore[misc]


def test_task_text_is_identical_and_inputs_untouched():
    before = [dict(m) for m in TASK]
    cfg = TeacherContextConfig(views=("skills", "answer", "plan", "notes"))
    msgs = build_teacher_messages(TASK, PRIV, [SKILL], cfg)
    assert TASK == before
    assert msgs[1] == TASK[1] and len(msgs) == 2
    assert msgs[0]["content"].startswith(TASK[0]["content"])
    sys = msgs[0]["content"]
    assert "Right Right Up Left" in sys and SKILL.body in sys and "4 moves" in sys


def test_view_order_follows_config():
    a = _system(PRIV, [SKILL], views=("notes", "skills"))
    b = _system(PRIV, [SKILL], views=("skills", "notes"))
    assert a.index("4 moves") < a.index(SKILL.body)
    assert b.index(SKILL.body) < b.index("4 moves")


def test_nothing_to_show_returns_task_unchanged():
    assert build_teacher_messages(TASK, Privileged(), [], TeacherContextConfig()) == TASK
    assert build_teacher_messages(TASK, PRIV, [], TeacherContextConfig(views=("plan",), exposure=0.0)) == TASK


def test_placement_before_task_and_missing_system():
    cfg = TeacherContextConfig(views=("notes",), placement="before_task")
    msgs = build_teacher_messages(TASK, PRIV, [], cfg)
    assert [m["role"] for m in msgs] == ["system", "user", "user"]
    assert msgs[0] == TASK[0] and msgs[2] == TASK[1]
    only_user = TASK[1:]
    msgs = build_teacher_messages(only_user, PRIV, [], TeacherContextConfig(views=("notes",)))
    assert msgs[0]["role"] == "system" and msgs[1:] == only_user
    with pytest.raises(ValueError, match="task_messages"):
        build_teacher_messages([], PRIV, [], TeacherContextConfig())


@pytest.mark.parametrize("exposure,shown",
                         [(0.25, "Right"), (0.5, "Right Right"), (1.0, "Right Right Up Left")])
def test_exposure_reveals_a_prefix_of_the_plan(exposure, shown):
    content = _system(PRIV, [], views=("plan",), exposure=exposure)
    body = content.split("\n", 3)[-1]
    assert body.strip().endswith(shown)
    if exposure < 1:
        assert "Up Left" not in content and f"first {round(exposure * 100)}%" in content


def test_reveal_on_lines_words_and_lists():
    code = "def f(x):\n    y = x + 1\n    return y\n"
    assert reveal(code, 0.34) == "def f(x):\n    y = x + 1"
    assert reveal("a b c d", 0.5) == "a b"
    assert reveal([1, 2, 3], 1e-9) == [1]
    assert reveal([1, 2, 3], 0) is None


def test_skills_capped_at_max_skills():
    skills = [dataclasses.replace(SKILL, name=f"s{i}", body=f"body number {i}") for i in range(5)]
    content = _system(None, skills, views=("skills",), max_skills=2)
    assert "body number 1" in content and "body number 2" not in content
    cfg = TeacherContextConfig(views=("skills",), max_skills=0)
    assert build_teacher_messages(TASK, None, skills, cfg) == TASK


def test_per_turn_hint_step_mode():
    step = TeacherContextConfig(views=("skills", "next_step"), exposure_mode="step", exposure=1.0)
    assert per_turn_hint(PRIV, 0, step).endswith("Right Right")
    assert per_turn_hint(PRIV, 0, TeacherContextConfig(exposure_mode="episode")) is None  # no per-turn hint
    # without next_step the plan from the turn index on is the continuation
    no_next = dataclasses.replace(PRIV, next_step=None)
    assert per_turn_hint(no_next, 2, step).endswith("Up Left")
    assert per_turn_hint(no_next, 9, step) is None
    half = dataclasses.replace(step, exposure=0.5)
    assert per_turn_hint(PRIV, 0, half).endswith(": Right")
    # the per-turn block appears only when a turn is given, and changes with it
    msgs0 = build_teacher_messages(TASK, no_next, [], step, turn=0)[0]["content"]
    msgs2 = build_teacher_messages(TASK, no_next, [], step, turn=2)[0]["content"]
    assert "Turn 1" in msgs0 and "Turn 3" in msgs2 and msgs0 != msgs2
    with pytest.raises(ValueError, match="turn"):
        per_turn_hint(PRIV, -1, step)


def test_extra_and_feedback_views():
    p = with_feedback(PRIV, "Last time the box got stuck in the corner.")
    content = _system(p, [], views=("feedback", "extra:moves_remaining"))
    assert "stuck in the corner" in content and "Moves remaining\n4" in content
    assert "feedback" not in PRIV.extra  # with_feedback copies


def test_leaks_detects_teacher_material():
    cfg = TeacherContextConfig(views=("skills", "solution", "notes"))
    teacher = build_teacher_messages(TASK, PRIV, [SKILL], cfg)
    assert leaks(TASK, PRIV, [SKILL]) == []
    found = leaks(teacher, PRIV, [SKILL])
    assert any("Right Right Up Left" in f for f in found) and any("Stand on the side" in f for f in found)


def test_failure_feedback_describes_the_attempt():
    t = scripted_episode("Sokoban-Easy-v0", seed=3, policy="examples", max_turns=3)
    fb = failure_feedback(t)
    assert "failed" in fb and t.turns[-1].action_text.strip()[:20] in fb


def test_compose_retrieves_and_reports_names():
    other = Skill("answer-format", "Use on every turn to format moves.", "Sokoban-v0", "workflow",
                  "Reply with <answer>Up Left</answer>.")
    lib = SkillLibrary([SKILL, other, dataclasses.replace(SKILL, env="Other-v0")])
    ctx = compose_teacher_context(TASK, PRIV, lib, "Sokoban-v0",
                                  TeacherContextConfig(views=("skills",), max_skills=1))
    assert len(ctx.skills) == 1 and ctx.skills[0] in ("push-from-behind", "answer-format")
    assert lib.get("Sokoban-v0", ctx.skills[0]).body in ctx.messages[0]["content"]


def test_replay_privileged_matches_live_play():
    t = scripted_episode("Sokoban-Easy-v0", seed=5, policy="noisy", noise=0.5)
    env = agentsd.make("Sokoban-Easy-v0")
    env.reset(seed=5)
    live = []
    for turn in t.turns:
        live.append(env.privileged())
        env.step(turn.action_text)
    assert replay_privileged(t) == live
    bad = dataclasses.replace(t, seed=6)
    with pytest.raises(ValueError, match="first observation"):
        replay_privileged(bad)


# ---- the student never sees teacher material, for every registered env ------------------------

ALL_IDS = sorted(agentsd.list_envs())
ALL_VIEWS = TeacherContextConfig(views=("skills", "answer", "solution", "plan", "next_step", "hidden_tests",
                                        "notes", "feedback"), exposure=1.0)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_student_context_never_contains_teacher_material(env_id):
    """Play each env (oracle with noise, two seeds); at every turn build the richest teacher
    context (every view, full exposure, step hints, the env's shipped skills and a probe skill)
    and check that (a) the task the student is shown holds no privileged view and no skill, (b)
    nothing the env ever shows the student holds a skill or the guidance block, while (c) the
    teacher's copy of the task is identical and does carry the material.

    Privileged values may legitimately show up in *later* env replies when the student's own
    actions uncover them (a tool result holding the answer); that is the env's doing, not the
    teacher context's, so (a) checks the task and (b) checks the teacher-only material."""
    from agentsd.hints import render_views
    from agentsd.skills.library import load_library

    try:
        lib_skills = load_library(env=env_id).for_env(env_id)
    except Exception:  # the shipped library may not cover a brand-new env yet
        lib_skills = []
    probe = Skill("probe-skill", "Use when probing for leaks in this env.", env_id, "strategy",
                  "PROBE-SKILL-BODY: teacher-only guidance that must never reach the student.")
    skills = [probe, *lib_skills]
    checked = 0
    for seed in (0, 1):
        t = scripted_episode(env_id, seed=seed, policy="noisy", noise=0.3, max_turns=6)
        student = [m for turn in t.turns for m in turn.observation] + list(t.final_observation)
        student_text = " ".join(" ".join(str(m.get("content") or "").split()) for m in student)
        task = t.turns[0].observation
        assert leaks(student, None, skills) == [], f"{env_id} seed {seed}"
        for i, priv in enumerate(replay_privileged(t)):
            priv = with_feedback(priv, "FEEDBACK-PROBE: the previous attempt failed at step two.")
            assert leaks(task, priv, skills) == [], f"{env_id} seed {seed} turn {i}"
            for cfg in (ALL_VIEWS, dataclasses.replace(ALL_VIEWS, exposure_mode="step", exposure=0.5)):
                teacher = build_teacher_messages(task, priv, skills, cfg, turn=i)
                assert [m for m in teacher if m["role"] != "system"] == \
                    [m for m in task if m["role"] != "system"]
                assert leaks(teacher, priv, skills), "the teacher context must carry the material"
                block = " ".join(render_views(priv, skills, cfg, turn=i).split())
                assert block and block not in student_text
            checked += 1
    assert checked >= 2


# ---- with the real rollout engine and chat template (random-weight model, real tokenizer) -------

@pytest.fixture(scope="module")
def tiny_policy():
    from agentsd.policy.hf import HFPolicy
    from agentsd.policy.models import ModelNotFoundError, load_tokenizer, random_model

    try:
        tok = load_tokenizer("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"needs the SmolLM2 tokenizer: {e}")
    return HFPolicy(random_model(tok, seed=0), tok, model_id="tiny-random")


@pytest.mark.parametrize("env_id", ["Sokoban-Easy-v0", "ToolWorld-Easy-v0"])
def test_rollout_tokens_carry_no_teacher_material_and_prefixes_align(tiny_policy, env_id, tmp_path):
    """Real rollouts: what the student's token stream decodes to holds no teacher material; the
    teacher prompt differs from the student's only by the guidance block (same task tokens, same
    generation prompt), so teacher prompt + response ids is a valid teacher sequence; the
    trajectories round-trip through the store and build a library with the CLI."""
    from agentsd.cli import main as cli_main
    from agentsd.distill.teacher import render_prompt
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import rollout
    from agentsd.skills.library import load_library
    from agentsd.store import write_jsonl

    if env_id not in agentsd.list_envs():
        pytest.skip(f"{env_id} is not registered")
    trajs = rollout(tiny_policy, env_id, seeds=[0, 1], max_turns=2,
                    params=SamplingParams(temperature=1.0, max_tokens=8, seed=0))
    skills = load_library(env=env_id).for_env(env_id)
    tok = tiny_policy.tokenizer
    for t in trajs[:1]:
        privs = replay_privileged(t)
        student_text = tok.decode(t.token_ids())
        env = agentsd.make(env_id)
        tools = env.openai_tools() or None
        env.close()
        for i, priv in enumerate(privs):
            assert leaks([{"role": "user", "content": student_text}], None, skills) == []
            assert leaks(t.turns[0].observation, priv, skills) == []
            teacher = build_teacher_messages(t.turns[0].observation, priv, skills, ALL_VIEWS, turn=i)
            ids = render_prompt(tok, teacher, tools)
            student_prompt = t.turns[0].prompt_ids
            # same generation prompt and same task tokens at the end of both prompts
            task_ids = tok.encode(t.turns[0].observation[-1]["content"], add_special_tokens=False)
            tail = len(task_ids) + 5
            assert ids[-tail:] == student_prompt[-tail:]
            assert len(ids) > len(student_prompt)
    path = tmp_path / "rollouts.jsonl"
    write_jsonl(trajs, path)
    assert cli_main(["skills", "build", "--env", env_id, "--from", str(path), "--out", str(tmp_path / "lib")]) == 0
    # random-weight actions fail the same way twice: at least that pitfall is learned
    built = load_library(tmp_path / "lib").for_env(env_id)
    assert any(s.kind == "pitfall" for s in built), [s.name for s in built]
