"""``check_env``: one checker every registered env passes.

It runs Gymnasium's own checker (:func:`gymnasium.utils.env_checker.check_env`: spaces,
signatures, seeding), then agentsd's checks (:data:`CHECKS`, one small function each), on a real
instance:

- seeded determinism of ``reset`` and of a fixed action sequence;
- garbage, Unicode, empty, huge and wrongly typed actions never raise and report a parse status;
- observations are chat-message lists and, with ``info``, JSON-serializable;
- rewards are finite floats and equal the sum of ``info["reward_terms"]``;
- truncation at the turn limit (when the env came from ``make`` with one);
- no privileged string appears in any observation;
- deepcopy and pickle preserve behaviour; ``close`` is idempotent;
- ``step`` before ``reset`` raises a clear error (for envs built by ``make``).

All failures are collected and raised together as :class:`EnvCheckError`.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from typing import Any

import numpy as np

__all__ = ["check_env", "EnvCheckError", "GARBAGE_ACTIONS", "CHECKS"]


class EnvCheckError(AssertionError):
    """``check_env`` found problems; the message lists every one."""


GARBAGE_ACTIONS: list[Any] = [
    "",
    "   \n\t",
    "\x00\x01\x02",
    "🤖 ünïcødé ∑ 漢字 \u202e rtl",
    "<tool_call>{not json</tool_call>",
    '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',
    '<tool_call>{"name": 5}</tool_call>',
    "<answer></answer>",
    "<answer>" + "x" * 5000 + "</answer>",
    "A" * 200_000,
    {"role": "assistant", "content": None},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]},
    {"role": "assistant", "tool_calls": "not a list"},
    None,
    12345,
    ["list", "action"],
]


def _obs_text(obs: list[dict]) -> str:
    return "\n".join(json.dumps(m, ensure_ascii=False) + "\n" + str(m.get("content", "")) for m in obs)


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=repr)


class _Run:
    """One env under check: what the checks share (the env, its seeds and example actions) and
    what they collect (problems, observation texts, actions sent, privileged strings)."""

    def __init__(self, env: Any, errors: list[str], seeds: tuple[int, ...] = (0, 1, 2),
                 max_steps: int = 200) -> None:
        self.env, self.errors, self.seeds, self.max_steps = env, errors, seeds, max_steps
        self.base = getattr(env, "unwrapped", env)
        self.examples = list(self.base.example_actions()) if hasattr(self.base, "example_actions") else []
        self.max_turns = getattr(getattr(self.base, "spec", None), "max_turns", None)
        self.texts: list[str] = []
        self.actions_sent: list[str] = []
        self.secrets: set[str] = set()

    def fail(self, msg: str) -> None:
        self.errors.append(msg)

    def check_obs(self, obs: Any, info: Any, where: str) -> None:
        space = getattr(self.env, "observation_space", None)
        if not (isinstance(obs, list) and all(isinstance(m, dict) and "role" in m for m in obs)):
            self.fail(f"{where}: observation must be a list of message dicts, got {type(obs).__name__}")
            return
        if space is not None and hasattr(space, "contains") and not space.contains(obs):
            self.fail(f"{where}: observation not in observation_space")
        for name, val in (("observation", obs), ("info", info)):
            try:
                json.dumps(val)
            except (TypeError, ValueError) as e:
                self.fail(f"{where}: {name} is not JSON-serializable ({e})")
        if not isinstance(info, dict):
            self.fail(f"{where}: info must be a dict")
        self.texts.append(_obs_text(obs))

    def reset(self, seed: int) -> tuple[Any, Any]:
        obs, info = self.env.reset(seed=seed)
        self.check_obs(obs, info, f"reset(seed={seed})")
        self.collect_secrets()
        return obs, info

    def collect_secrets(self) -> None:
        try:
            self.secrets.update(self.env.privileged().secrets())
        except Exception as e:  # noqa: BLE001
            self.fail(f"privileged() raised {type(e).__name__}: {e}")

    def step(self, action: Any, where: str) -> tuple | None:
        try:
            out = self.env.step(action)
        except Exception as e:  # noqa: BLE001
            self.fail(f"{where}: step({_short(action)}) raised {type(e).__name__}: {e}")
            return None
        if isinstance(action, str):
            self.actions_sent.append(action)
        elif isinstance(action, dict):
            self.actions_sent.append(json.dumps(action))
        obs, reward, terminated, truncated, info = out
        self.check_obs(obs, info, f"{where}: step({_short(action)})")
        if not isinstance(reward, int | float | np.floating) or not math.isfinite(float(reward)):
            self.fail(f"{where}: reward {reward!r} is not a finite number")
        if not isinstance(terminated, bool | np.bool_) or not isinstance(truncated, bool | np.bool_):
            self.fail(f"{where}: terminated/truncated must be bools")
        if isinstance(info, dict):
            if "parse" not in info:
                self.fail(f"{where}: info lacks 'parse'")
            terms = info.get("reward_terms")
            if not isinstance(terms, dict):
                self.fail(f"{where}: info lacks 'reward_terms'")
            elif not math.isclose(sum(terms.values()), float(reward), abs_tol=1e-6):
                self.fail(f"{where}: reward {reward} != sum of reward_terms {terms}")
            if (terminated or truncated) and "success" not in info:
                self.fail(f"{where}: final info lacks 'success'")
        self.collect_secrets()
        return out


def _short(a: Any) -> str:
    r = repr(a)
    return r if len(r) < 60 else r[:57] + "..."


def _trace(env: Any, seed: int, actions: list[Any]) -> list[str]:
    obs, info = env.reset(seed=seed)
    out = [_canon((obs, info))]
    for a in actions:
        res = env.step(a)
        out.append(_canon(res))
        if res[2] or res[3]:
            break
    return out


# ---------------------------------------------------------------------------------------------
# the checks: each takes the run (env, seeds, what was seen so far) and reports through it

def _gymnasium(run: _Run) -> None:
    """Gymnasium's own checker (spaces, reset/step signatures, seeding), on the bare env."""
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check_env

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its advice on spaces does not fit chat messages
            gym_check_env(run.base, skip_render_check=True, skip_close_check=True)
    except Exception as e:  # noqa: BLE001
        run.fail(f"gymnasium's check_env: {type(e).__name__}: {e}")


def _step_before_reset(run: _Run) -> None:
    """``step`` before ``reset`` raises (envs built by ``make`` carry their spec)."""
    fresh = _fresh_wrapper(run.env) if run.env is not run.base else None
    if fresh is None:
        return
    try:
        fresh.step("x")
        run.fail("step() before reset() did not raise")
    except RuntimeError:
        pass
    finally:
        fresh.close()


def _reset_determinism(run: _Run) -> None:
    for s in run.seeds:
        a, b = run.reset(s), run.reset(s)
        if _canon(a) != _canon(b):
            run.fail(f"reset(seed={s}) is not deterministic")


def _sequence_determinism(run: _Run) -> None:
    """The same seed and a fixed action sequence give the same transitions."""
    rng = np.random.default_rng(0)
    ex = run.examples
    seq = [ex[int(i)] for i in rng.integers(len(ex), size=12)] if ex else []
    seq = seq + [g for g in GARBAGE_ACTIONS[:4]]
    try:
        if _trace(run.env, run.seeds[0], seq) != _trace(run.env, run.seeds[0], seq):
            run.fail("the same seed and action sequence gave different transitions")
    except Exception as e:  # noqa: BLE001
        run.fail(f"replaying a fixed action sequence raised {type(e).__name__}: {e}")


def _garbage(run: _Run) -> None:
    """Garbage actions never raise and report a parse status other than ok."""
    run.reset(run.seeds[0])
    for g in GARBAGE_ACTIONS:
        out = run.step(g, "garbage")
        if out is None:
            run.reset(run.seeds[0])
            continue
        answer_like = isinstance(g, str) and g.startswith("<answer>")
        if isinstance(out[4], dict) and out[4].get("parse") == "ok" and not answer_like:
            run.fail(f"garbage action {_short(g)} parsed as ok")
        if out[2] or out[3]:
            run.reset(run.seeds[0])


def _turn_limit(run: _Run, s: int, t: int, out: tuple) -> None:
    max_turns = run.max_turns
    if max_turns is None:
        return
    if t + 1 > max_turns:
        run.fail(f"episode(seed={s}) ran {t + 1} turns, past max_turns={max_turns}")
    if out[3] and not out[2] and t + 1 != max_turns and out[4].get("truncated_by") == "turn_limit":
        run.fail(f"turn-limit truncation at turn {t + 1}, max_turns={max_turns}")


def _episodes_end(run: _Run) -> None:
    """Episodes played to the end (example actions, then garbage) end by the turn limit."""
    for s in run.seeds:
        run.reset(s)
        for t in range(run.max_steps):
            pool = run.examples or GARBAGE_ACTIONS[:3]
            a = pool[t % len(pool)] if s % 2 == 0 else GARBAGE_ACTIONS[t % 3]
            out = run.step(a, f"episode(seed={s}) turn {t + 1}")
            if out is None:
                break
            if out[2] or out[3]:
                _turn_limit(run, s, t, out)
                break
        else:
            if run.max_turns is not None:
                run.fail(f"episode(seed={s}) did not end within {run.max_steps} steps "
                         f"(max_turns={run.max_turns})")


def _copies(run: _Run) -> None:
    """deepcopy and pickle preserve behaviour mid-episode."""
    env, probe = run.env, (run.examples or ["hello"])[0]
    run.reset(run.seeds[0])
    run.step(probe, "copy-probe")
    for name, clone in (("deepcopy", _try(copy.deepcopy, env, run)),
                        ("pickle", _try(lambda e: pickle.loads(pickle.dumps(e)), env, run))):
        if clone is None:
            continue
        try:
            nxt = (run.examples or ["hello"])[-1]
            if _canon(env.step(nxt)) != _canon(clone.step(nxt)):
                run.fail(f"{name}d env diverged from the original on the same action")
        except Exception as e:  # noqa: BLE001
            run.fail(f"stepping a {name}d env raised {type(e).__name__}: {e}")
        finally:
            clone.close()
        run.reset(run.seeds[0])
        run.step(probe, "copy-probe")


def _no_leaks(run: _Run) -> None:
    """No privileged string in any observation seen (the agent's own echoed text excluded)."""
    sent = "\n".join(run.actions_sent)
    all_text = "\n".join(run.texts)
    for secret in sorted(run.secrets):
        if secret in all_text and secret not in sent:
            run.fail(f"privileged string leaked into an observation: {secret[:80]!r}")


def _idempotent_close(run: _Run) -> None:
    try:
        run.env.close()
        run.env.close()
    except Exception as e:  # noqa: BLE001
        run.fail(f"close() is not idempotent: {type(e).__name__}: {e}")


#: the battery, in the order it runs (the leak check reads every observation the others saw)
CHECKS = (_gymnasium, _step_before_reset, _reset_determinism, _sequence_determinism, _garbage,
          _episodes_end, _copies, _no_leaks, _idempotent_close)


def check_env(env: Any, *, seeds: tuple[int, ...] = (0, 1, 2), max_steps: int = 200) -> None:
    """Run the battery (:data:`CHECKS`) on ``env`` (an instance or a registered id); raise
    :class:`EnvCheckError` listing every problem found."""
    if isinstance(env, str):
        from agentsd.registry import make

        env = make(env)
    run = _Run(env, [], seeds=seeds, max_steps=max_steps)
    for check in CHECKS:
        check(run)
    if run.errors:
        name = getattr(getattr(run.base, "spec", None), "id", type(run.base).__name__)
        raise EnvCheckError(f"{name}: {len(run.errors)} problem(s)\n- " + "\n- ".join(run.errors))


def _fresh_wrapper(env: Any) -> Any:
    spec = getattr(getattr(env, "unwrapped", env), "spec", None)
    if spec is None or not hasattr(spec, "make"):
        return None
    return spec.make()


def _try(fn: Any, env: Any, run: _Run) -> Any:
    try:
        return fn(env)
    except Exception as e:  # noqa: BLE001
        run.fail(f"copying the env raised {type(e).__name__}: {e}")
        return None
