"""The teacher context (agentsd.teacher_context): where the skills go (``skills_at``), for the
scoring rows and for the acting teacher alike, and feedback views that leave the student's
trajectories untouched."""

from __future__ import annotations

import difflib

import pytest

import agentsd
from agentsd.demos import oracle_demos
from agentsd.distill.config import TeacherConfig, TrainConfig
from agentsd.hints import TeacherContextConfig
from agentsd.teacher_context import (
    REFERENCE_LEAD,
    SKILLS_TITLE,
    TeacherViewEnv,
    feedback_for,
    teacher_row,
    turn_messages,
    with_feedback_view,
)
from agentsd.trajectory import Trajectory, Turn

SKILL = "Call the lookup tool before you answer; copy ids from its reply."


def _insertions(student: list[int], teacher: list[int]) -> list[tuple[int, int]]:
    """Spans of ``teacher`` inserted into ``student``; fails if anything else differs."""
    sm = difflib.SequenceMatcher(a=student, b=teacher, autojunk=False)
    ops = [op for op in sm.get_opcodes() if op[0] != "equal"]
    assert all(op[0] == "insert" for op in ops), ops
    return [(op[3], op[4]) for op in ops]


@pytest.mark.parametrize("skills_at", ["system", "user"])
@pytest.mark.parametrize("env_id", ["ToolWorld-Easy-v0", "Sokoban-Easy-v0"])
def test_teacher_row_is_the_students_plus_the_added_text(tok, env_id, skills_at):
    demo = oracle_demos(env_id, [3], tok, max_turns=4)[0]
    cfg = TeacherContextConfig(views=("skills", "reference"), skills_at=skills_at)
    row = teacher_row(demo, tok, cfg, [SKILL])
    student = demo.token_ids()
    added = "".join(tok.decode(row.input_ids[a:b]) for a, b in _insertions(student, row.input_ids))
    assert added.count(REFERENCE_LEAD) == len(demo.turns) and SKILLS_TITLE in added
    assert [row.input_ids[i] for i in row.row_pos] == [student[j] for j in row.student_pos]
    text = tok.decode(row.input_ids)
    # system: the skills once, in the system message; user: once per turn, after the observation
    assert SKILL[:-1] not in tok.decode(student)
    assert text.count(SKILL[:-1]) == (1 if skills_at == "system" else len(demo.turns))
    first_user = text.index("<|im_start|>user")
    if skills_at == "system":
        assert text.index(SKILL) < first_user
    else:
        assert text.index(SKILL) > first_user
        for t in demo.turns:  # every hint still ends the observation, right before the action
            end = text.index(REFERENCE_LEAD + t.privileged["reference"])
            assert text.rfind(SKILLS_TITLE, 0, end) > text.rfind("<|im_start|>", 0, end)


def test_default_placement_is_the_system_message():
    assert TeacherContextConfig().skills_at == "system"
    obs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    views = {"reference": "<answer>Up</answer>"}
    sys_msgs = turn_messages(obs, [SKILL], views, TeacherContextConfig())
    user_msgs = turn_messages(obs, [SKILL], views, TeacherContextConfig(skills_at="user"))
    assert SKILL in sys_msgs[0]["content"] and SKILL not in sys_msgs[1]["content"]
    assert user_msgs[0] == obs[0] and user_msgs[1]["content"].startswith("U\n\n## ")
    assert user_msgs[1]["content"].endswith(REFERENCE_LEAD + "<answer>Up</answer>")
    with pytest.raises(ValueError, match=r"TeacherContextConfig\.skills_at"):
        TeacherContextConfig(skills_at="assistant")


@pytest.mark.parametrize("skills_at", ["system", "user"])
def test_acting_teacher_reads_what_the_rows_score(skills_at):
    cfg = TeacherContextConfig(views=("skills", "reference"), skills_at=skills_at)
    env = TeacherViewEnv(agentsd.make("Sokoban-Easy-v0"), cfg, skills=[SKILL])
    obs, _ = env.reset(seed=1_000_002)
    base = agentsd.make("Sokoban-Easy-v0")
    plain, _ = base.reset(seed=1_000_002)
    assert obs == turn_messages(plain, [SKILL], agentsd.teacher_context.turn_views(base), cfg)
    assert (SKILL in obs[-1]["content"]) == (skills_at == "user")
    ref = obs[-1]["content"].rsplit(REFERENCE_LEAD, 1)[1]
    _, _, term, _, info = env.step(ref)
    assert term and info["success"]


def test_teacher_skills_at_flag_reaches_the_context():
    cfg = TrainConfig(teacher=TeacherConfig(skills_at="user"))
    assert cfg.teacher_views().skills_at == "user" and cfg.teacher.context.skills_at == "user"
    assert TrainConfig().teacher_views().skills_at == "system"
    with pytest.raises(ValueError, match=r"TeacherConfig\.skills_at"):
        TeacherConfig(skills_at="nowhere")


def _episode(success: bool) -> Trajectory:
    turn = Turn(observation=[{"role": "user", "content": "go"}], prompt_ids=[1], action_ids=[2],
                action_text="<answer>Up</answer>", privileged={"reference": "<answer>Up</answer>"})
    return Trajectory(turns=[turn], success=success, total_reward=float(success),
                      final_observation=[{"role": "user", "content": "done"}])


def test_feedback_views_leave_the_trajectories_untouched():
    trajs = [_episode(True), _episode(False)]
    texts, keep = feedback_for(trajs, "sibling", 2)
    assert keep == [False, True] and texts[0] is None and "succeeded" in texts[1]
    seen = with_feedback_view(trajs[1], texts[1])
    assert seen.turns[0].privileged["extra"]["feedback"] == texts[1]
    assert seen.turns[0].privileged["reference"] == "<answer>Up</answer>"
    assert "extra" not in trajs[1].turns[0].privileged  # the student's copy is unchanged
    assert with_feedback_view(trajs[0], None) is trajs[0]
