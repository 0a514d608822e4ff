"""The generic battery, run over every registered env id: ``check_env`` plus action fuzzing.

A new env registered in ``envs/__init__.py`` gets all of this for free.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentsd

ALL_IDS = sorted(agentsd.list_envs())


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env(env_id):
    agentsd.check_env(env_id)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_check_env(env_id, recwarn):
    """gymnasium's own checker passes on what ``agentsd.make`` returns (and its only complaint
    is that the env is wrapped)."""
    from gymnasium.utils.env_checker import check_env as gym_check_env

    env = agentsd.make(env_id)
    gym_check_env(env)
    gym_check_env(env.unwrapped)
    complaints = [str(w.message) for w in recwarn if "different from the unwrapped" not in str(w.message)]
    assert not complaints
    assert all(env.action_space.contains(a) for a in env.example_actions())


_actions = st.one_of(
    st.text(max_size=400),
    st.builds(lambda s: f"<answer>{s}</answer>", st.text(max_size=80)),
    st.builds(lambda n, a: f'<tool_call>{{"name": {json.dumps(n)}, "arguments": {a}}}</tool_call>',
              st.text(max_size=20),
              st.sampled_from(["{}", "[]", "null", '{"x": 1}', "{", '{"a": "' + "z" * 300 + '"}'])),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(st.none(), st.text(max_size=50)),
                           "tool_calls": st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries({
                               "name": st.text(max_size=10),
                               "arguments": st.one_of(st.text(max_size=30), st.dictionaries(
                                   st.text(max_size=5), st.integers(), max_size=3))})}), max_size=2)}),
)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_fuzzed_actions_never_raise(env_id):
    env = agentsd.make(env_id)
    examples = list(env.example_actions())

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(_actions, st.sampled_from(examples or ["x"])), min_size=1, max_size=6),
           st.integers(0, 50))
    def run(actions, seed):
        env.reset(seed=seed)
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            assert isinstance(obs, list) and math.isfinite(reward)
            assert isinstance(info["parse"], str)
            json.dumps(obs)
            if terminated or truncated:
                break

    run()
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_oracle_reaches_success(env_id):
    """Where an env has an oracle, following it from reset ends in success (proves the
    privileged plan is right, through the same step() a model uses)."""
    env = agentsd.make(env_id, seed=0)
    env.reset()
    if env.oracle_action() is None:
        pytest.skip(f"{env_id} has no oracle")
    info = {}
    for _ in range(env.spec.max_turns or 100):
        action = env.oracle_action()
        assert action is not None, "the oracle gave up before the episode ended"
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info.get("success") is True
