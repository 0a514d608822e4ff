"""What a newcomer hits first (issue 24): the registry module, typo hints, gymnasium's make and
async vector envs. The README's own snippets are run by tests/test_readme_examples.py."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import pytest

import agentsd
from agentsd.env import ChatSpace
from agentsd.registry import UnknownEnvError


def test_agentsd_registry_is_the_module_and_list_envs_the_specs():
    assert agentsd.registry.EnvSpec is agentsd.EnvSpec
    assert agentsd.registry.make is agentsd.make
    specs = agentsd.list_envs()
    assert "Sokoban-v0" in specs and isinstance(specs["Sokoban-v0"], agentsd.registry.EnvSpec)
    assert "ToolWorld-Lite-v0" in specs
    assert "Sokoban-v0" in agentsd.pprint_registry(file=open("/dev/null", "w"))


def test_calling_the_module_still_works_but_is_deprecated():
    with pytest.warns(DeprecationWarning, match="agentsd.list_envs"):
        specs = agentsd.registry()
    assert specs == agentsd.list_envs()


@pytest.mark.parametrize("typed", ["Nope-v0", "Foo-v1", "X-v0"])
def test_an_unrelated_id_gets_no_suggestion(typed):
    with pytest.raises(UnknownEnvError) as e:
        agentsd.make(typed)
    assert "Did you mean" not in str(e.value) and "pprint_registry" in str(e.value)


@pytest.mark.parametrize("typed, suggested", [
    ("Sokobn-v0", "Sokoban-v0"),
    ("sokoban-easy-v0", "Sokoban-Easy-v0"),
    ("Code-Gn-v0", "Code-Gen-v0"),
    ("ToolWorldLite-v0", "ToolWorld-Lite-v0"),
    ("Code-v0", "Code-Gen-v0"),  # a prefix of a registered name
])
def test_a_real_typo_still_gets_its_suggestion(typed, suggested):
    with pytest.raises(UnknownEnvError, match=f"Did you mean: [^?]*{suggested}"):
        agentsd.make(typed)


def _play_until_done(env, action="<answer>Up</answer>", limit=50):
    env.reset(seed=0)
    for turn in range(1, limit + 1):
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return turn, info
    raise AssertionError("episode never ended")


def test_gymnasium_make_takes_max_turns_like_agentsd_make():
    # a box pushed Up forever never solves the level, so only the turn limit ends the episode
    gym_env = gym.make("agentsd/Sokoban-Easy-v0", max_turns=3)
    ours = agentsd.make("Sokoban-Easy-v0", max_turns=3)
    for env in (gym_env, ours):
        turn, info = _play_until_done(env)
        assert (turn, info["truncated_by"]) == (3, "turn_limit")
    assert gym.make("agentsd/Sokoban-Easy-v0").spec.max_episode_steps == 10  # gymnasium's own limit
    turn, _ = _play_until_done(gym.make("agentsd/Sokoban-Easy-v0", max_episode_steps=12))
    assert turn == 12


def test_gymnasium_make_refuses_more_turns_than_it_will_allow_and_names_the_fix():
    with pytest.raises(ValueError, match="max_episode_steps=20"):
        gym.make("agentsd/Sokoban-Easy-v0", max_turns=20)


def test_the_gymnasium_entry_point_pickles():
    ep = gym.spec("agentsd/Sokoban-Easy-v0").entry_point
    assert pickle.loads(pickle.dumps(ep)) == ep and ep.entry_point == agentsd.spec("Sokoban-Easy-v0").entry_point


def test_async_vector_env_works_with_default_shared_memory():
    venv = gym.make_vec("agentsd/Sokoban-Easy-v0", num_envs=2, vectorization_mode="async")
    try:
        obs, _ = venv.reset(seed=[0, 1])
        sync = gym.make_vec("agentsd/Sokoban-Easy-v0", num_envs=2, vectorization_mode="sync")
        sync_obs, _ = sync.reset(seed=[0, 1])
        assert isinstance(obs, tuple) and obs == sync_obs and obs[0] != obs[1]
        obs, rewards, _, _, _ = venv.step(("<answer>Up</answer>", "not an action"))
        sync_obs, sync_rewards, _, _, _ = sync.step(("<answer>Up</answer>", "not an action"))
        assert obs == sync_obs and list(rewards) == list(sync_rewards)  # the new step's observations
        sync.close()
    finally:
        venv.close()


def test_chat_space_shared_memory_round_trips_unicode_and_refuses_an_oversized_observation():
    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    space = ChatSpace()
    shm = create_shared_memory(space, n=2)
    view = read_from_shared_memory(space, shm, n=2)
    msgs = [{"role": "user", "content": "héllo ☃ <tool_call>{}</tool_call>"}]
    write_to_shared_memory(space, 1, msgs, shm)
    assert view[1] == msgs and view[0] == [] and view[-1] == msgs
    assert copy.deepcopy(view) == ([], msgs)  # a plain tuple, like the sync vector env's
    big = [{"role": "user", "content": "x" * space.shared_memory_bytes}]
    with pytest.raises(ValueError, match="shared_memory': False"):
        write_to_shared_memory(space, 0, big, shm)


def test_no_warning_from_the_registry_on_import():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agentsd.list_envs()
        agentsd.spec("Sokoban-v0")


def test_agentsd_train_writes_the_report_by_default():
    from agentsd.distill.cli import parse_train_args

    assert parse_train_args(["--steps", "1"])[1].report is True
    assert parse_train_args(["--steps", "1", "--report", "false"])[1].report is False
