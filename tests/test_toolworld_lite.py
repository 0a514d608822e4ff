"""ToolWorld-Lite: the template groups, the prompt bound, gold length, splits, bad input, demos.

Fast: no model, only the SmolLM2 tokenizer (the ``tok`` fixture) for the token bound and demos.
"""

from __future__ import annotations

import json
import re

import pytest

import agentsd
from agentsd.envs.toolworld.api import APIS
from agentsd.envs.toolworld.env import LEVELS
from agentsd.envs.toolworld.lite import (
    CATALOG,
    GROUPS,
    LITE_TEMPLATES,
    ToolWorldLiteEnv,
    shown_apps,
    validate_lite,
)
from agentsd.envs.toolworld.tasks import TEMPLATES, templates_for
from agentsd.rollout import split_tasks

ID = "ToolWorld-Lite-v0"
ALL = [name for names in GROUPS.values() for name in names]
SEEDS = range(12)
MAX_PROMPT_TOKENS = 400


def prompt_tokens(tok, obs: list[dict]) -> int:
    text = tok.apply_chat_template(obs, add_generation_prompt=True, tokenize=False)
    return len(tok.encode(text, add_special_tokens=False))


def listed_tools(obs: list[dict]) -> set[str]:
    return set(re.findall(r"^(\w+)\(", obs[0]["content"], re.MULTILINE))


def test_groups_are_disjoint_and_known():
    seen: set[str] = set()
    for group, names in GROUPS.items():
        assert names and len(set(names)) == len(names), group
        assert not seen & set(names), f"{group} shares {seen & set(names)}"
        seen |= set(names)
    assert seen <= set(CATALOG)


def test_warm_group_teaches_copying_answers_and_changes():
    """Most warm templates end with an answer copied out of a tool result, some with a change."""
    env = ToolWorldLiteEnv(group="warm")
    answering = changing = 0
    for name in GROUPS["warm"]:
        env.reset(seed=0, options={"template": name})
        answering += env.gold_answer is not None
        changing += env.gold_answer is None
    assert answering >= 4 and changing >= 2



def _gold_tools(group):
    env = ToolWorldLiteEnv(group=group)
    out = {}
    for name in GROUPS[group]:
        env.reset(seed=0, options={"template": name})
        out[name] = [g.name for g in env.gold if g.name != "complete_task"]
    return out


def test_warm_group_carries_values_between_calls_without_the_train_workflows():
    """The warm start must teach the whole loop: some warm templates take two calls, the second
    using a value (an id, an email, a phone) read out of the first one's result. It must not teach
    what the skills teach: no warm template logs in or calls a tool that a train template calls
    after its search (the search tools themselves are format, shared on purpose)."""
    warm, train = _gold_tools("warm"), _gold_tools("train")
    chains = [n for n, calls in warm.items() if len(calls) >= 2]
    assert len(chains) >= 3, warm
    env = ToolWorldLiteEnv(group="warm")
    assert any(env.reset(seed=0, options={"template": n}) and env.gold_answer is not None for n in chains)
    shared = {t for calls in warm.values() for t in calls} & {t for calls in train.values() for t in calls}
    assert shared <= {"contacts__search_contacts", "calendar__search_events"}, shared
    assert not any("login" in t or "passwords" in t for calls in warm.values() for t in calls)

def test_lite_only_templates_stay_out_of_toolworld():
    assert not set(LITE_TEMPLATES) & set(TEMPLATES)
    for levels in LEVELS.values():
        for split in ("train", "test", "all"):
            assert not {t.name for t in templates_for(split, levels)} & set(LITE_TEMPLATES)


@pytest.mark.parametrize("name", ALL)
def test_every_task_takes_one_to_four_gold_calls(name):
    env = ToolWorldLiteEnv(templates=[name])
    for seed in SEEDS:
        env.reset(seed=seed)
        assert env.gold[-1].name == "complete_task"
        assert 1 <= len(env.gold) - 1 <= 4, (env.task_id, [g.name for g in env.gold])


@pytest.mark.parametrize("name", ALL)
def test_oracle_solves_every_template(name):
    assert validate_lite(name, SEEDS) == []


def test_prompt_fits_the_token_bound_for_every_template(tok):
    counts = []
    for name in ALL:
        env = ToolWorldLiteEnv(templates=[name])
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            counts.append((prompt_tokens(tok, obs), env.task_id))
    worst = max(counts)
    assert worst[0] <= MAX_PROMPT_TOKENS, worst


@pytest.mark.parametrize("name", ALL)
def test_prompt_lists_only_the_task_apps_and_every_gold_tool(name):
    env = ToolWorldLiteEnv(templates=[name])
    obs, _ = env.reset(seed=0)
    apps = set(shown_apps(CATALOG[name]))
    want = {n for n, a in APIS.items() if a.app in apps} | {"api_docs", "complete_task"}
    assert listed_tools(obs) == want
    assert {g.name for g in env.gold} <= want


def test_fixed_app_listing_shows_the_same_tools_every_episode():
    env = ToolWorldLiteEnv(group="train", apps=("supervisor", "contacts", "calendar", "files", "email", "bank"))
    tools = {frozenset(listed_tools(env.reset(seed=s)[0])) for s in range(6)}
    assert len(tools) == 1


def test_splits_separate_new_instances_from_held_out_templates():
    s = agentsd.spec(ID)
    assert set(s.splits) == {"train", "test", "test_templates", "warm"}
    ranges = sorted(sp.seeds for sp in s.splits.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    for split, group in (("train", "train"), ("test", "train"), ("test_templates", "heldout"), ("warm", "warm")):
        tasks = split_tasks(ID, split, 24)
        drawn = set()
        for t in tasks:
            env = agentsd.make(ID, **t.kwargs)
            drawn.add(env.reset(seed=t.seed)[1]["template"])
            env.close()
        assert drawn <= set(GROUPS[group]) and len(drawn) >= 3, (split, drawn)
    assert not set(agentsd.split_seeds(ID, "train", 100)) & set(agentsd.split_seeds(ID, "test", 100))


def test_an_answer_needs_the_login_chain():
    """A rule, not the prompt, decides success: the bank refuses a call without a login."""
    env = ToolWorldLiteEnv(templates=["bank_balance"])
    env.reset(seed=0)
    call = {"name": "bank__show_balance", "arguments": {"access_token": "guess"}}
    obs, reward, terminated, _, _ = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert "call bank__login first" in obs[0]["content"] and reward == 0 and not terminated
    done = {"name": "complete_task", "arguments": {"answer": "0"}}
    _, reward, terminated, _, info = env.step(f"<tool_call>{json.dumps(done)}</tool_call>")
    assert terminated and reward == 0 and info["success"] is False


@pytest.mark.parametrize("kwargs,needle", [
    ({"templates": []}, "template list is empty"),
    ({"templates": ["bank_balance", "no_such_task"]}, "'no_such_task'"),
    ({"group": "nope"}, "unknown group 'nope'"),
    ({"templates": ["bank_balance"], "apps": ["bank"]}, "template 'bank_balance' needs app 'supervisor'"),
])
def test_bad_input_is_one_line_at_make(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)) as e:
        agentsd.make(ID, **kwargs)
    assert "\n" not in str(e.value)


def test_a_split_with_an_empty_template_list_fails_at_make(scratch_registry):
    from agentsd.registry import Split, register

    register("Lite-Empty-v0", "agentsd.envs.toolworld.lite:ToolWorldLiteEnv",
             splits={"test": Split((0, 10), {"templates": []})})
    with pytest.raises(ValueError, match="template list is empty"):
        agentsd.make("Lite-Empty-v0", split="test")


def test_oracle_demos_on_the_warm_split(tok):
    from agentsd.demos import oracle_demos

    tasks = split_tasks(ID, "warm", 8)
    demos = oracle_demos(ID, [t.seed for t in tasks], tok, kwargs=tasks[0].kwargs)
    assert len(demos) == 8 and all(d.success for d in demos)
    finals = [d.turns[-1].action_text for d in demos]
    assert all('"complete_task"' in f for f in finals)
    assert any('"answer"' in f for f in finals)
