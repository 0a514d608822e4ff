"""Demonstrations for the warm start: each env's oracle played on train seeds, as token-level
trajectories the trainer's ``sft`` objective reads exactly like its own rollouts.

A student that cannot write a parseable action gives GRPO no gradient (every sample earns the
same format penalty) and the teacher nothing to correct, so training starts from supervised
fine-tuning on demonstrations. Demos are rendered by the rollout engine's own renderer
(:class:`agentsd.rollout.ChatRenderer`), with the action written in the env's own format
(:func:`agentsd.hints.action_text`) and closed by the chat template's end-of-turn token, so
their token layout is the one the model samples in::

    from agentsd.demos import oracle_demos
    demos = oracle_demos("Sokoban-Easy-v0", seeds=range(8), tokenizer=tok)
    demos[0].turns[0].action_text            # '<answer>Up Up Left Up Left Down</answer>'
    demos[0].action_mask()                   # 1 on the oracle's action tokens

``teacher=TeacherContextConfig(...)`` renders the same demos in the *teacher's* context (skills
and the per-turn reference reply, through :class:`agentsd.hints.TeacherViewEnv`): warm-starting
on a mix teaches the model to use that context, so the teacher is on-format before it teaches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agentsd.trajectory import Trajectory, Turn

__all__ = ["oracle_demos", "replay_demos", "load_demos", "NoOracleError"]


class NoOracleError(ValueError):
    """The env offers no oracle action, so it cannot produce demonstrations."""


def _end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The token(s) a chat model emits to end its turn (what sampling stops on)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; cannot close a demonstrated turn")
    return [int(eos)]


def oracle_demos(env_id: str, seeds: Iterable[int], tokenizer: Any, *, kwargs: dict | None = None,
                 max_turns: int | None = None, teacher: Any = None, library: Any = None,
                 tools: list[dict] | None = None) -> list[Trajectory]:
    """One oracle episode per seed of ``env_id`` (``kwargs`` select a split's tasks), as
    trajectories with prompt/action token ids; ``teacher`` (a ``TeacherContextConfig``) renders
    them in the teacher's context (``library`` supplies its skills). Episodes the oracle does not
    finish within ``max_turns`` are kept (their actions are still gold). Raises
    :class:`NoOracleError` when the env has no oracle."""
    import agentsd
    from agentsd.hints import TeacherViewEnv

    kw = dict(kwargs or {})
    if max_turns is not None:
        kw["max_turns"] = max_turns
    end = _end_of_turn_ids(tokenizer)
    limit = max_turns or (agentsd.spec(env_id).max_turns or 20)
    out = []
    for seed in seeds:
        base = agentsd.make(env_id, **kw)
        env: Any = TeacherViewEnv(base, teacher, library=library, env_id=env_id) if teacher else base
        try:
            out.append(_play(env, base, env_id, int(seed), kw, tokenizer, end, tools, limit,
                             _oracle(base, tokenizer, end)))
        finally:
            env.close()
    return out


def _oracle(base: Any, tokenizer: Any, end: list[int]) -> Any:
    """The env's next gold action as ``(text, token ids)``, or None when it has none."""
    from agentsd.hints import action_text

    def nxt() -> tuple[str, list[int]] | None:
        action = base.oracle_action()
        if action is None:
            return None
        text = action_text(action) or ""
        return text, [int(t) for t in tokenizer.encode(text, add_special_tokens=False)] + end

    return nxt


def _recorded(traj: Trajectory) -> Any:
    """A trajectory's own actions, in order, with the exact token ids its sampler produced."""
    it = iter(traj.turns)
    return lambda: next(((t.action_text, list(t.action_ids)) for t in it), None)


def _play(env: Any, base: Any, env_id: str, seed: int, kw: dict, tokenizer: Any, end: list[int],
          tools: Any, limit: int, actor: Any, source: str = "oracle") -> Trajectory:
    """One demonstrated episode: ``env`` renders what the model reads (the teacher's view or the
    plain one), ``base`` is the env underneath that supplies the views, ``actor()`` the next
    action as ``(text, token ids)`` (None: the demonstration is over)."""
    from agentsd.hints import turn_views
    from agentsd.rollout import ChatRenderer

    renderer = ChatRenderer(tokenizer, tools)
    obs, info = env.reset(seed=seed)
    traj = Trajectory(env_id=env_id, seed=seed, spec_kwargs={k: v for k, v in kw.items()
                                                             if k != "max_turns"},
                      task_id=str(info.get("task_id") or f"{env_id}/seed={seed}"),
                      policy=source, meta={"demo": source})
    history: list[dict] = []
    if source == "oracle" and base.oracle_action() is None:
        raise NoOracleError(f"env {env_id} has no oracle (oracle_action() returned None at "
                            "reset), so it cannot produce demonstrations; pass a trajectory "
                            "file instead")
    prompt = renderer.first(obs)
    for _ in range(limit):
        step = actor()
        if step is None:
            break
        text, ids = step
        turn = Turn(observation=list(obs), prompt_ids=prompt, action_ids=ids,
                    action_logprobs=[0.0] * len(ids), action_text=text, finish_reason="stop",
                    privileged=turn_views(base))
        traj.turns.append(turn)
        history.extend(obs)
        obs, reward, term, trunc, info = env.step(text)
        turn.reward, turn.parse = float(reward), str(info.get("parse", ""))
        traj.total_reward += float(reward)
        history.append({"role": "assistant", "content": text})
        if "success" in info:
            traj.success = bool(info["success"])
        if term or trunc:
            traj.stop_reason = "terminated" if term else "max_turns"
            traj.final_observation = list(obs)
            break
        prompt = renderer.next(history[:-1], obs, ids)
    else:
        traj.stop_reason = "max_turns"
    return traj


def replay_demos(trajs: Sequence[Trajectory], tokenizer: Any, *, env_id: str | None = None,
                 kwargs: dict | None = None, successes_only: bool = True,
                 tools: list[dict] | None = None) -> list[Trajectory]:
    """Trajectories sampled in another context (e.g. the teacher's, with skills in its prompt)
    re-rendered in the *student's*: each episode's own actions, with the token ids its sampler
    produced, replayed through the plain env on the same seed and kwargs, so SFT on them is
    off-policy context distillation (the student learns to act as the context made the model
    act, without the context). Episodes that fail on replay are dropped with
    ``successes_only``; a replay must reach the same outcome, since the env is deterministic.
    ``env_id`` / ``kwargs`` name the plain env where the trajectories came from env factories
    (which record no id)."""
    import agentsd

    out = []
    for tr in trajs:
        if successes_only and not tr.success:
            continue
        eid = env_id or tr.env_id
        kw = dict(kwargs if kwargs is not None else tr.spec_kwargs)
        if not eid:
            raise ValueError("replay_demos: a trajectory has no env_id (sampled from an env "
                             "factory); pass env_id= and kwargs= of the plain env")
        env = agentsd.make(eid, **kw)
        try:
            t = _play(env, env, eid, int(tr.seed), kw, tokenizer, [], tools, len(tr.turns),
                      _recorded(tr), source="replay")
        finally:
            env.close()
        if t.success == tr.success:
            out.append(t)
    return out


def load_demos(path: str, env_id: str | None = None) -> list[Trajectory]:
    """Demonstrations from a trajectory file (JSONL or Parquet, e.g. written by ``agentsd
    rollout``): the successful ones (of ``env_id`` when given). Raises ``ValueError`` naming the
    file when none is usable."""
    from pathlib import Path

    from agentsd.store import read_trajectories

    p = Path(path)
    if not p.exists():
        raise ValueError(f"demonstration file {path} does not exist (expected a .jsonl or "
                         ".parquet trajectory file, e.g. from `agentsd rollout --out`)")
    trajs = [t for t in read_trajectories(p) if t.success and t.turns
             and (env_id is None or t.env_id == env_id) and t.num_action_tokens() > 0]
    if not trajs:
        raise ValueError(f"demonstration file {path} holds no successful trajectory with action "
                         f"tokens{' for ' + env_id if env_id else ''}; SFT needs at least one")
    return trajs


def mix(student: Sequence[Trajectory], teacher: Sequence[Trajectory], frac: float,
        seed: int = 0) -> list[Trajectory]:
    """``student`` demos with a ``frac`` share replaced by the same tasks in the teacher's
    context (deterministic per ``seed``)."""
    import numpy as np

    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"teacher fraction must be in [0, 1], got {frac}")
    rng = np.random.default_rng(seed)
    pick = rng.random(len(student)) < frac
    return [t if p else s for s, t, p in zip(student, teacher, pick)]
