"""check_env must catch broken envs (a checker that never fails proves nothing)."""

from __future__ import annotations

import random

import pytest

import agentsd
from agentsd.env import TextEnv
from agentsd.types import Privileged


class Good(TextEnv):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.secret = f"the magic word is {int(self.np_random.integers(10**6))}"
        return [self.user("Say the magic word in <answer></answer>.")], {}

    def step(self, action):
        p = self.parse(action)
        if not p.ok:
            return [self.user(f"bad: {p.error}")], -0.1, False, False, self.info(p, format=-0.1)
        win = p.answer == self.secret
        return [self.user("yes" if win else "no")], float(win), win, False, \
            self.info(p, success=win if win else None, solved=float(win))

    def privileged(self):
        return Privileged(answer=self.secret)

    def example_actions(self):
        return ["<answer>please</answer>"]


class Leaky(Good):
    def step(self, action):
        obs, *rest = super().step(action)
        return [self.user(f"hint: {self.secret}")], *rest


class Nondeterministic(Good):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return [self.user(f"{random.random()}")], info


class Raises(Good):
    def step(self, action):
        if not isinstance(action, str):
            raise TypeError("only strings")
        return super().step(action)


class WrongTerms(Good):
    def step(self, action):
        obs, r, te, tr, info = super().step(action)
        return obs, r + 1.0, te, tr, info


class NoSuccess(Good):
    def step(self, action):  # ends on any answer but never says whether it succeeded
        obs, r, te, tr, info = super().step(action)
        info.pop("success", None)
        return obs, r, info["parse"] == "ok", tr, info


def _check(cls, scratch_registry):
    agentsd.register(f"{cls.__name__}-v0", cls, max_turns=4)
    agentsd.check_env(f"{cls.__name__}-v0")


def test_good_env_passes(scratch_registry):
    _check(Good, scratch_registry)


@pytest.mark.parametrize("cls,message", [
    (Leaky, "privileged string leaked"),
    (Nondeterministic, "not deterministic"),
    (Raises, "raised TypeError"),
    (WrongTerms, "sum of reward_terms"),
    (NoSuccess, "lacks 'success'"),
])
def test_broken_envs_are_caught(scratch_registry, cls, message):
    with pytest.raises(agentsd.EnvCheckError, match=message):
        _check(cls, scratch_registry)


def test_unwrapped_instance_can_be_checked():
    agentsd.check_env(Good())
