"""Scripted episodes: an env played by its own oracle and example actions, recorded as a
text-only :class:`~agentsd.trajectory.Trajectory` (no token ids: no model was involved).

They give the skill summarizer successes (the oracle follows the privileged plan) and realistic
failures and recoveries (``noise`` swaps oracle moves for the env's example actions) when no
model rollouts exist yet, and they drive the tests. This is not a rollout engine: model rollouts
come from :mod:`agentsd.rollout`.

>>> t = scripted_episode("Sokoban-Easy-v0", seed=1, policy="oracle")
>>> t.success, t.policy
(True, 'scripted:oracle')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentsd.trajectory import Trajectory, Turn
from agentsd.types import StopReason

__all__ = ["scripted_episode", "POLICIES"]

POLICIES = ("oracle", "noisy", "examples")


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    import json

    out = {}
    for k, v in info.items():
        if k in ("reward_terms", "parse"):
            continue
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            out[k] = repr(v)
    return out


def scripted_episode(env_id: str, seed: int, policy: str = "oracle", noise: float = 0.3,
                     max_turns: int | None = None, split: str | None = None,
                     env: Any = None, options: dict[str, Any] | None = None) -> Trajectory:
    """Play one episode of ``env_id`` with a scripted policy and record it.

    ``oracle`` follows ``env.oracle_action()``; ``noisy`` does so but takes a random example
    action with probability ``noise``; ``examples`` plays example actions only. An env without
    an oracle falls back to example actions. ``options`` go to ``reset`` (e.g. ToolWorld's
    ``{"template": name}``); the template the env reports is kept in ``meta["template"]``."""
    import agentsd

    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    own = env is None
    if own:
        env = agentsd.make(env_id, **({"max_turns": max_turns} if max_turns else {}))
    rng = np.random.default_rng([seed, 7])
    obs, info = env.reset(seed=seed, options=options)
    meta = {"scripted": True, "noise": noise if policy == "noisy" else 0.0}
    if info.get("template"):
        meta["template"] = str(info["template"])
    if options:
        meta["reset_options"] = dict(options)
    traj = Trajectory(env_id=env_id, seed=seed, split=split, policy=f"scripted:{policy}",
                      task_id=info.get("task_id") or getattr(env, "task_id", None), meta=meta)
    examples = list(env.example_actions()) or ["<answer></answer>"]
    stop = StopReason.MAX_TURNS
    limit = max_turns or getattr(getattr(env, "spec", None), "max_turns", None) or 50
    for _ in range(limit):
        action = env.oracle_action() if policy != "examples" else None
        if action is None or (policy == "noisy" and rng.random() < noise):
            action = examples[int(rng.integers(len(examples)))]
        text = action if isinstance(action, str) else _action_as_text(action)
        nxt, reward, terminated, truncated, info = env.step(action)
        traj.turns.append(Turn(observation=list(obs), action_text=text, reward=float(reward),
                               reward_terms=dict(info.get("reward_terms", {})),
                               parse=str(info.get("parse", "")), info=_jsonable(info)))
        traj.total_reward += float(reward)
        obs = nxt
        if terminated or truncated:
            stop = StopReason.TERMINATED if terminated else StopReason.MAX_TURNS
            break
    traj.final_observation = list(obs)
    traj.success = bool(info.get("success", False))
    traj.stop_reason = stop.value
    if own:
        env.close()
    return traj


def _action_as_text(action: dict) -> str:
    """An assistant tool-call message as the text a model would write (Hermes tags)."""
    from agentsd.hints import action_text

    return action_text(action) or ""
