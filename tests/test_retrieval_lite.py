"""Skill retrieval on ToolWorld-Lite: each task's teacher reads its own template's workflow."""

import agentsd
from agentsd.hints import TeacherContextConfig, select_for, task_query
from agentsd.rollout import split_tasks
from agentsd.skills import load_library

ENV = "ToolWorld-Lite-v0"


def test_task_query_is_the_user_content_when_there_is_one():
    msgs = [{"role": "system", "content": "tools: a, b"}, {"role": "user", "content": "Task: x"}]
    assert task_query(msgs) == "Task: x"
    assert task_query(msgs[:1]) == "tools: a, b"  # no user message: the system text


def test_every_held_out_instance_retrieves_its_templates_workflow_first():
    lib = load_library(None, env=ENV)
    cfg = TeacherContextConfig(views=("skills",), max_skills=2)
    misses = []
    for t in split_tasks(ENV, "test", 48):
        env = agentsd.make(ENV, **t.kwargs)
        obs, info = env.reset(seed=t.seed)
        got = [s.name for s in select_for(obs, lib, ENV, cfg)]
        if got[0] != info["template"].replace("_", "-") + "-workflow":
            misses.append((info["template"], got))
    assert not misses, misses


def test_at_most_one_workflow_is_shown():
    lib = load_library(None, env=ENV)
    cfg = TeacherContextConfig(views=("skills",), max_skills=3)
    for t in split_tasks(ENV, "test", 16):
        env = agentsd.make(ENV, **t.kwargs)
        obs, info = env.reset(seed=t.seed)
        got = select_for(obs, lib, ENV, cfg)
        assert len(got) == 3 and [s.kind for s in got].count("workflow") == 1, [s.name for s in got]
        assert got[0].name == info["template"].replace("_", "-") + "-workflow"
