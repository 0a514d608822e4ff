"""The few wrappers that earn their place: turn limit, reset-before-step, recording.

``make`` applies :class:`OrderEnforcing` and :class:`TurnLimit`; :class:`Recording` is opt-in.
Every wrapper forwards public attributes (``privileged``, ``tools``, ``task_id``, …) to the
wrapped env, so code holding a wrapped env never needs ``.unwrapped``.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium

__all__ = ["TextWrapper", "TurnLimit", "OrderEnforcing", "Recording", "ResetNeeded"]


class ResetNeeded(RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""


class TextWrapper(gymnasium.Wrapper):
    """A wrapper that forwards public attribute access to the wrapped env."""

    @property
    def spec(self) -> Any:
        """The agentsd :class:`~agentsd.registry.EnvSpec` of the wrapped env (gymnasium's own
        wrapper-stack bookkeeping does not apply to it)."""
        return self.env.spec

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class TurnLimit(TextWrapper):
    """Truncate the episode after ``max_turns`` steps (``info["truncated_by"] = "turn_limit"``)."""

    def __init__(self, env: gymnasium.Env, max_turns: int) -> None:
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, got {max_turns!r}")
        super().__init__(env)
        self.max_turns = max_turns
        self._turn = 0

    def reset(self, **kwargs):
        self._turn = 0
        obs, info = self.env.reset(**kwargs)
        info.setdefault("max_turns", self.max_turns)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._turn += 1
        info["turn"] = self._turn
        if self._turn >= self.max_turns and not terminated:
            if not truncated:
                info["truncated_by"] = "turn_limit"
            truncated = True
            info.setdefault("success", False)
        return obs, reward, terminated, truncated, info


class OrderEnforcing(TextWrapper):
    """Raise :class:`ResetNeeded` on ``step`` before ``reset`` or after the episode ended."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._needs_reset = True

    def reset(self, **kwargs):
        self._needs_reset = False
        return self.env.reset(**kwargs)

    def step(self, action):
        if self._needs_reset:
            raise ResetNeeded(
                "step() called before reset() or after the episode ended; call env.reset() first"
            )
        out = self.env.step(action)
        if out[2] or out[3]:
            self._needs_reset = True
        return out


class Recording(TextWrapper):
    """Record every transition of the current episode in ``self.episode`` (a list of dicts) and
    keep finished episodes in ``self.episodes``."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.episode: list[dict[str, Any]] = []
        self.episodes: list[list[dict[str, Any]]] = []

    def reset(self, **kwargs):
        if self.episode:
            self.episodes.append(self.episode)
        obs, info = self.env.reset(**kwargs)
        self.episode = [{"observation": copy.deepcopy(obs), "info": copy.deepcopy(info)}]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode.append({
            "action": copy.deepcopy(action), "observation": copy.deepcopy(obs),
            "reward": reward, "terminated": terminated, "truncated": truncated,
            "info": copy.deepcopy(info),
        })
        return obs, reward, terminated, truncated, info
