"""The rollout engine: any policy plays any env, multi-turn, batched, token-in/token-out.

Usage (the trainer's on-policy loop uses exactly this)::

    from agentsd.policy import HFPolicy, SamplingParams
    from agentsd.rollout import rollout

    policy = HFPolicy(model, tokenizer)            # an in-memory model; nothing is reloaded
    trajs = rollout(policy, "Sokoban-Easy-v0", seeds=[0, 1, 2, 3], samples_per_task=4,
                    params=SamplingParams(temperature=1.0, max_tokens=128, seed=0))
    len(trajs)                                     # 16: task-major, sample-minor order
    t = trajs[0]
    t.token_ids(), t.action_mask(), t.sampler_logprobs(), t.stop_reason, t.success

``envs`` is an env id, an env factory (a zero-argument callable returning a :class:`TextEnv`), or
a list of them; every env is played on every seed, ``samples_per_task`` times each. For full
control pass ``tasks=[Task(env, seed, kwargs), ...]`` instead. :func:`run_rollouts` returns the
trajectories together with a :class:`RolloutSummary` (success rate, reward, tokens, throughput and
where the wall time went).

How it runs: all episodes in flight (``max_concurrent``) that are waiting for an action are sent
to ``policy.generate`` as one batch on the calling thread; env ``reset``/``step`` calls run on a
thread pool, so a slow env (code execution) never blocks generation for the others: after a
batch, the engine waits at most ``batch_wait_s`` for stragglers before generating for whoever is
ready. With ``RolloutConfig.kv_reuse`` (default on) and a policy that supports it (``hf``), each
episode's KV cache is kept between its turns, so a turn prefills only the observation that follows
the previous action rather than the whole history.

Token-in/token-out: each turn stores the ids fed (``prompt_ids``) and the ids sampled
(``action_ids``); the episode's sequence is their concatenation and is never re-rendered. New
observation messages are turned into prompt ids by :class:`~agentsd.renderer.ChatRenderer`, which
renders only the *suffix* the chat template adds after the last action (see its docstring).

Every episode ends with a :class:`~agentsd.types.StopReason`: ``terminated`` (env), ``max_turns``
(env turn limit or ``max_turns``), ``max_tokens`` (``max_episode_tokens``), ``context_length``
(the policy's window), ``parse_failures`` (``max_parse_failures`` unparseable actions in a row) or
``error`` (the env raised; the message is in ``meta["error"]``). Errors of the policy itself
propagate: nothing can progress without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from agentsd.distill.config_fields import _f, check_fields
from agentsd.policy.base import Generation, Policy, SamplingParams
from agentsd.renderer import ChatRenderer
from agentsd.teacher_context import turn_views
from agentsd.trajectory import Trajectory, Turn
from agentsd.types import Message, ParseStatus, StopReason

__all__ = ["Task", "RolloutConfig", "RolloutSummary", "RolloutResult", "ChatRenderer",
           "rollout", "run_rollouts", "make_tasks", "split_tasks", "split_kwargs"]

EnvLike = str | Callable[[], Any]

#: tells engines apart in a policy's KV-cache keys (two runs may share one policy)
_ENGINE_IDS = itertools.count()


# ---------------------------------------------------------------------------------------------
# types

@dataclass(frozen=True)
class Task:
    """One task: an env (registered id or zero-argument factory), a seed and ``make`` kwargs."""

    env: EnvLike
    seed: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.env, str) or callable(self.env)):
            raise TypeError(f"Task.env must be an env id or a zero-argument env factory, "
                            f"got {type(self.env).__name__}")
        if self.kwargs and not isinstance(self.env, str):
            raise ValueError("Task.kwargs only apply to env ids (agentsd.make kwargs); bake them "
                             "into the factory instead")


@dataclass(frozen=True)
class RolloutConfig:
    """Engine limits and scheduling; validated on construction."""

    #: stop after this many turns (``None``: the env's own limit from its spec)
    max_turns: int | None = _f(None, kind=int, ge=1, optional=True)
    #: budget of prompt + action tokens per episode (``None``: unlimited)
    max_episode_tokens: int | None = _f(None, kind=int, ge=1, optional=True)
    #: context window (``None``: the policy's ``context_length`` attribute, if it has one)
    context_length: int | None = _f(None, kind=int, ge=1, optional=True)
    #: end an episode after this many consecutive non-``ok`` parses (``None``: never)
    max_parse_failures: int | None = _f(None, kind=int, ge=1, optional=True)
    #: episodes in flight at once (the largest generation batch)
    max_concurrent: int = _f(64, kind=int, ge=1)
    #: threads running env reset/step
    env_workers: int = _f(8, kind=int, ge=1)
    #: after a generation batch, wait this long for pending env steps to join the next batch;
    #: a very large value waits for all of them, so batches (and seeded samples) do not depend
    #: on thread timing, at the cost of letting the slowest env set the pace
    batch_wait_s: float = _f(0.05, ge=0)
    #: tqdm progress bar over episodes
    progress: bool = False
    #: also pass the env's tool schemas to the chat template (``tools=``); off by default since
    #: envs describe their tools in the observation and some offer dozens
    render_tools: bool = False
    #: record each turn's privileged views (``Turn.privileged``) for the teacher; the trainer
    #: turns it on for training rollouts (costs one ``env.privileged()`` per turn)
    record_privileged: bool = False
    #: keep each episode's KV cache between its turns, so a turn prefills only the tokens after
    #: the previous action (observation and chat markup) instead of the whole history; used by
    #: policies that offer it, ignored by others. A policy offers it with a true
    #: ``supports_kv_reuse``, ``generate(prompts, params, cache_keys=[one per prompt])`` and
    #: ``release(keys)`` (``HFPolicy`` does); a wrapper that forwards attributes to such a policy
    #: must forward ``cache_keys`` too
    kv_reuse: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class RolloutSummary:
    """What a rollout run did and where its time went."""

    episodes: int = 0
    success_rate: float = 0.0
    mean_reward: float = 0.0
    mean_turns: float = 0.0
    #: mean tokens per episode (prompt + action) and total sampled tokens
    mean_tokens: float = 0.0
    action_tokens: int = 0
    stop_reasons: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    #: seconds the calling thread spent in ``policy.generate``
    generate_s: float = 0.0
    #: seconds the calling thread sat idle waiting for env steps (env time that stalled the loop)
    env_wait_s: float = 0.0
    #: seconds of env reset/step work summed over worker threads (may exceed wall time)
    env_busy_s: float = 0.0
    generate_calls: int = 0
    mean_batch: float = 0.0
    #: prompt tokens served from an episode's kept KV cache / run through the model
    kv_reused_tokens: int = 0
    prefill_tokens: int = 0
    #: turns whose kept cache was not a prefix of the new prompt (only the common part reused)
    kv_prefix_mismatches: int = 0

    @property
    def action_tokens_per_s(self) -> float:
        return self.action_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def episodes_per_min(self) -> float:
        return 60.0 * self.episodes / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["action_tokens_per_s"] = self.action_tokens_per_s
        d["episodes_per_min"] = self.episodes_per_min
        return d

    def format(self) -> str:
        """A few human-readable lines."""
        w = max(self.wall_s, 1e-9)
        stops = ", ".join(f"{k} {v}" for k, v in sorted(self.stop_reasons.items()))
        return (f"episodes {self.episodes}  success {self.success_rate:.1%}  mean reward "
                f"{self.mean_reward:+.3f}  mean turns {self.mean_turns:.2f}  mean tokens "
                f"{self.mean_tokens:.0f}\n"
                f"stop reasons: {stops or '-'}\n"
                f"wall {self.wall_s:.1f}s  {self.action_tokens_per_s:.1f} sampled tok/s  "
                f"{self.episodes_per_min:.2f} episodes/min  generation {self.generate_s / w:.0%} "
                f"of wall ({self.generate_calls} calls, mean batch {self.mean_batch:.1f})  "
                f"waiting for envs {self.env_wait_s / w:.0%}  env work {self.env_busy_s:.1f}s"
                + (f"\nKV reuse: {self.kv_reused_tokens} prompt tokens from kept caches, "
                   f"{self.prefill_tokens} prefilled, {self.kv_prefix_mismatches} prefix mismatches"
                   if self.kv_reused_tokens or self.kv_prefix_mismatches else ""))


@dataclass
class RolloutResult:
    trajectories: list[Trajectory]
    summary: RolloutSummary


# ---------------------------------------------------------------------------------------------
# episodes

@dataclass
class _Episode:
    index: int
    task: Task
    sample: int
    traj: Trajectory
    env: Any = None
    renderer: ChatRenderer | None = None
    history: list[Message] = field(default_factory=list)
    prompt: list[int] | None = None
    pending_obs: list[Message] = field(default_factory=list)
    n_tokens: int = 0
    parse_failures: int = 0
    limit_hit: StopReason | None = None
    done: bool = False
    pending_priv: dict[str, Any] = field(default_factory=dict)


def split_tasks(env_id: str, split: str, n: int, offset: int = 0) -> list[Task]:
    """``n`` tasks of a named split of ``env_id``: its seeds *and* the kwargs that select it
    (ToolWorld's test split holds out whole task templates through ``task_split="test"``, so
    seeds alone would evaluate on train templates)."""
    import agentsd

    s = agentsd.spec(env_id)
    if split not in s.splits:
        raise ValueError(f"env {env_id} has no split {split!r}; it has: {sorted(s.splits) or 'none'}")
    kw = split_kwargs(env_id, split)
    return [Task(env_id, seed, kw) for seed in s.splits[split].seed_list(n, offset)]


def split_kwargs(env_id: str, split: str) -> dict[str, Any]:
    """The ``make`` kwargs that select a split's tasks (``{}`` when the env has no such split)."""
    import agentsd

    splits = agentsd.spec(env_id).splits
    return dict(splits[split].kwargs) if split in splits else {}


def make_tasks(envs: EnvLike | Sequence[EnvLike], seeds: Sequence[int | None] | None) -> list[Task]:
    """Every env on every seed (env-major order)."""
    env_list = [envs] if isinstance(envs, str) or callable(envs) else list(envs)
    if not env_list:
        raise ValueError("no envs given; pass an env id, a factory or a list of them")
    seed_list = list(seeds) if seeds is not None else [None]
    if not seed_list:
        raise ValueError("seeds is empty; pass at least one seed (or None for unseeded)")
    return [Task(e, s) for e in env_list for s in seed_list]


def _env_id(env: Any, task: Task) -> str:
    spec = getattr(env, "spec", None)
    sid = getattr(spec, "id", None)
    if sid:
        return str(sid)
    return task.env if isinstance(task.env, str) else getattr(task.env, "__name__", "env")


def _json_safe(d: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if k in skip:
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out


def _reset(ep: _Episode, cfg: RolloutConfig) -> tuple[list[Message], dict[str, Any], float]:
    """Build and reset the env (worker thread)."""
    import agentsd

    t0 = time.perf_counter()
    task = ep.task
    if isinstance(task.env, str):
        kw = dict(task.kwargs)
        if cfg.max_turns is not None:
            kw["max_turns"] = cfg.max_turns
        ep.env = agentsd.make(task.env, **kw)
    else:
        ep.env = task.env()
    obs, info = ep.env.reset(seed=task.seed)
    if cfg.record_privileged:
        ep.pending_priv = turn_views(ep.env)
    return list(obs), dict(info), time.perf_counter() - t0


def _step(ep: _Episode, action: str, record: bool = False) -> tuple[Any, ...]:
    t0 = time.perf_counter()
    obs, reward, terminated, truncated, info = ep.env.step(action)
    if record and not (terminated or truncated):
        ep.pending_priv = turn_views(ep.env)  # the state the next turn acts from
    return list(obs), float(reward), bool(terminated), bool(truncated), dict(info), \
        time.perf_counter() - t0


def _close(ep: _Episode) -> None:
    try:
        if ep.env is not None:
            ep.env.close()
    except Exception:  # noqa: BLE001 - closing must not lose a finished trajectory
        pass


# ---------------------------------------------------------------------------------------------
# the engine

def rollout(policy: Policy, envs: EnvLike | Sequence[EnvLike] | None = None,
            seeds: Sequence[int | None] | None = None, samples_per_task: int = 1,
            params: SamplingParams | None = None, *, tasks: Sequence[Task] | None = None,
            config: RolloutConfig | None = None,
            on_trajectory: Callable[[Trajectory], None] | None = None,
            **config_kwargs: Any) -> list[Trajectory]:
    """Play every task ``samples_per_task`` times; return the trajectories in task-major,
    sample-minor order. Keyword arguments not listed here are :class:`RolloutConfig` fields.
    ``on_trajectory`` is called (on the calling thread) as each episode ends, e.g. to append it to
    a :class:`~agentsd.store.TrajectoryWriter`."""
    return run_rollouts(policy, envs, seeds, samples_per_task, params, tasks=tasks, config=config,
                        on_trajectory=on_trajectory, **config_kwargs).trajectories


def run_rollouts(policy: Policy, envs: EnvLike | Sequence[EnvLike] | None = None,
                 seeds: Sequence[int | None] | None = None, samples_per_task: int = 1,
                 params: SamplingParams | None = None, *, tasks: Sequence[Task] | None = None,
                 config: RolloutConfig | None = None,
                 on_trajectory: Callable[[Trajectory], None] | None = None,
                 **config_kwargs: Any) -> RolloutResult:
    """:func:`rollout` plus a :class:`RolloutSummary`."""
    if config is None:
        config = RolloutConfig(**config_kwargs)
    elif config_kwargs:
        config = dataclasses.replace(config, **config_kwargs)
    params = params or SamplingParams()
    if tasks is None:
        if envs is None:
            raise ValueError("pass envs (an env id, factory or list) or tasks=[Task(...)]")
        tasks = make_tasks(envs, seeds)
    elif envs is not None:
        raise ValueError("pass either envs/seeds or tasks, not both")
    if not isinstance(samples_per_task, int) or samples_per_task < 1:
        raise ValueError(f"samples_per_task must be a positive int, got {samples_per_task!r}")
    if getattr(policy, "tokenizer", None) is None:
        raise ValueError(f"policy {getattr(policy, 'model_id', policy)!r} has no tokenizer; the "
                         f"engine needs one to render observations into token ids")
    return _Engine(policy, list(tasks), samples_per_task, params, config, on_trajectory).run()


class _Engine:
    def __init__(self, policy: Policy, tasks: list[Task], G: int, params: SamplingParams,
                 cfg: RolloutConfig, on_trajectory: Callable[[Trajectory], None] | None) -> None:
        self.policy, self.params, self.cfg, self.on_trajectory = policy, params, cfg, on_trajectory
        self.context = cfg.context_length or getattr(policy, "context_length", None)
        sampling = dataclasses.asdict(params)
        sampling["stop"] = list(params.stop)
        self.episodes = [
            _Episode(i * G + g, task, g, Trajectory(
                env_id=task.env if isinstance(task.env, str) else "", seed=task.seed,
                spec_kwargs=dict(task.kwargs), policy=str(getattr(policy, "model_id", "")),
                sampling=dict(sampling), meta={"sample": g, "task_index": i}))
            for i, task in enumerate(tasks) for g in range(G)]
        self.summary = RolloutSummary()
        self.calls = 0
        self.batch_total = 0
        self.kv_reuse = cfg.kv_reuse and bool(getattr(policy, "supports_kv_reuse", False))
        self._engine_id = next(_ENGINE_IDS)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> RolloutResult:
        mismatches = self._kv_mismatches()
        try:
            res = self._run()
        finally:
            if self.kv_reuse:  # kept caches go stale once the weights change
                self.policy.release([self._kv_key(ep) for ep in self.episodes])
        self.summary.kv_prefix_mismatches = self._kv_mismatches() - mismatches
        return res

    def _kv_key(self, ep: _Episode) -> tuple[str, int, int]:
        return ("agentsd.rollout", self._engine_id, ep.index)

    def _kv_mismatches(self) -> int:
        stats = getattr(self.policy, "kv_stats", None)
        return int(getattr(stats, "prefix_mismatches", 0))

    def _run(self) -> RolloutResult:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        todo = list(reversed(self.episodes))
        futures: dict[Future, tuple[_Episode, str]] = {}
        ready: list[_Episode] = []
        active = 0
        bar = tqdm(total=len(self.episodes), disable=not self.cfg.progress, desc="rollout",
                   unit="ep", dynamic_ncols=True)
        n_done = n_success = 0
        with ThreadPoolExecutor(self.cfg.env_workers, thread_name_prefix="agentsd-env") as pool:
            while n_done < len(self.episodes):
                while todo and active < self.cfg.max_concurrent:
                    ep = todo.pop()
                    active += 1
                    futures[pool.submit(_reset, ep, self.cfg)] = (ep, "reset")
                if not ready and futures:
                    tw = time.perf_counter()
                    wait(list(futures), return_when=FIRST_COMPLETED)
                    if self.cfg.batch_wait_s > 0:
                        wait(list(futures), timeout=self.cfg.batch_wait_s)
                    self.summary.env_wait_s += time.perf_counter() - tw
                for fut in [f for f in futures if f.done()]:
                    ep, kind = futures.pop(fut)
                    self._on_env_result(ep, kind, fut)
                    if ep.done:
                        active -= 1
                        n_done += 1
                        n_success += bool(ep.traj.success)
                        pool.submit(_close, ep)
                        bar.update(1)
                        bar.set_postfix(success=f"{n_success / n_done:.0%}")
                        if self.on_trajectory is not None:
                            self.on_trajectory(ep.traj)
                    elif ep.prompt is not None:
                        ready.append(ep)
                if ready:
                    batch = ready[: self.cfg.max_concurrent]
                    ready = ready[len(batch):]
                    for ep, action in self._generate(batch):
                        futures[pool.submit(_step, ep, action, self.cfg.record_privileged)] = \
                            (ep, "step")
        bar.close()
        self.summary.wall_s = time.perf_counter() - t0
        self._summarize()
        return RolloutResult([ep.traj for ep in self.episodes], self.summary)

    # -- generation ----------------------------------------------------------------------------
    def _generate(self, batch: list[_Episode]) -> list[tuple[_Episode, str]]:
        params = self.params
        if params.seed is not None:
            # a fresh, reproducible stream per call (the same seed twice would repeat samples)
            params = dataclasses.replace(params, seed=(params.seed * 1_000_003 + self.calls) % 2**63)
        t0 = time.perf_counter()
        prompts = [ep.traj.token_ids() + ep.prompt for ep in batch]
        if self.kv_reuse:
            gens = self.policy.generate(prompts, params,
                                        cache_keys=[self._kv_key(ep) for ep in batch])
        else:
            gens = self.policy.generate(prompts, params)
        dt = time.perf_counter() - t0
        if len(gens) != len(batch):
            raise RuntimeError(f"policy {self.policy.model_id!r} returned {len(gens)} generations "
                               f"for {len(batch)} prompts")
        self.calls += 1
        self.batch_total += len(batch)
        self.summary.generate_s += dt
        out = []
        for ep, gen, prompt in zip(batch, gens, prompts):
            self.summary.kv_reused_tokens += int(gen.meta.get("kv_reused_tokens", 0))
            self.summary.prefill_tokens += int(gen.meta.get("prefill_tokens", len(prompt)))
            out.append((ep, self._record_action(ep, gen, dt, len(batch))))
        return out

    def _record_action(self, ep: _Episode, gen: Generation, dt: float, batch: int) -> str:
        ids, lps, text, finish = list(gen.token_ids), list(gen.logprobs), gen.text, gen.finish_reason
        cap, reason = self._action_cap(ep)
        if cap is not None and len(ids) > cap:
            # keeping the first `cap` tokens is exactly a sample with max_tokens=cap
            ids, lps, finish = ids[:cap], lps[:cap], "length"
            text = self.policy.tokenizer.decode(ids, skip_special_tokens=True)
            ep.limit_hit = reason
        turn = Turn(observation=ep.pending_obs, prompt_ids=ep.prompt, action_ids=ids,
                    action_logprobs=lps, action_text=text, finish_reason=finish,
                    timings={"generate": dt, "batch_size": float(batch)},
                    privileged=ep.pending_priv)
        # how a remote backend produced the ids (token prompts? ids from the server?)
        sampler = {k: gen.meta[k] for k in ("prompt_mode", "token_ids_source") if k in gen.meta}
        if sampler:
            turn.info["sampler"] = sampler
        ep.traj.turns.append(turn)
        ep.n_tokens += len(ep.prompt) + len(ids)
        ep.history.extend(ep.pending_obs)
        ep.prompt, ep.pending_obs, ep.pending_priv = None, [], {}
        return text

    def _action_cap(self, ep: _Episode) -> tuple[int | None, StopReason | None]:
        used = ep.n_tokens + len(ep.prompt or [])
        caps = []
        if self.cfg.max_episode_tokens is not None:
            caps.append((self.cfg.max_episode_tokens - used, StopReason.MAX_TOKENS))
        if self.context is not None:
            caps.append((self.context - used, StopReason.CONTEXT_LENGTH))
        if not caps:
            return None, None
        return min(caps, key=lambda c: c[0])

    # -- env results -----------------------------------------------------------------------------
    def _on_env_result(self, ep: _Episode, kind: str, fut: Future) -> None:
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001 - an env bug ends its episode, not the run
            ep.traj.meta["error"] = f"{kind}: {type(e).__name__}: {e}"
            self._finish(ep, StopReason.ERROR)
            return
        if kind == "reset":
            obs, info, dt = res
            self.summary.env_busy_s += dt
            ep.traj.env_id = _env_id(ep.env, ep.task)
            spec = getattr(ep.env, "spec", None)
            if getattr(spec, "kwargs", None) is not None:
                ep.traj.spec_kwargs = _json_safe(dict(spec.kwargs))
            tid = info.get("task_id") or getattr(ep.env, "task_id", None)
            ep.traj.task_id = str(tid) if tid is not None else f"{ep.traj.env_id}/seed={ep.task.seed}"
            ep.traj.meta["reset_info"] = _json_safe(info)
            tools = (ep.env.openai_tools() if self.cfg.render_tools and hasattr(ep.env, "openai_tools")
                     else None)
            ep.renderer = ChatRenderer(self.policy.tokenizer, tools)
            self._set_prompt(ep, obs, ep.renderer.first(obs) if obs else None)
            return
        obs, reward, terminated, truncated, info, dt = res
        self.summary.env_busy_s += dt
        turn = ep.traj.turns[-1]
        turn.reward = reward
        turn.reward_terms = {k: float(v) for k, v in (info.get("reward_terms") or {}).items()}
        turn.parse = str(info.get("parse", ""))
        turn.info.update(_json_safe(info, skip=("reward_terms", "parse")))
        turn.timings["env"] = dt
        ep.traj.total_reward += reward
        ep.history.append({"role": "assistant", "content": turn.action_text})
        ep.parse_failures = 0 if turn.parse in ("", ParseStatus.OK.value) else ep.parse_failures + 1
        if "success" in info:
            ep.traj.success = bool(info["success"])
        if terminated:
            ep.traj.final_observation = obs
            return self._finish(ep, StopReason.TERMINATED)
        if truncated or (self.cfg.max_turns is not None and len(ep.traj.turns) >= self.cfg.max_turns):
            ep.traj.final_observation = obs
            return self._finish(ep, StopReason.MAX_TURNS)
        if ep.limit_hit is not None:
            ep.traj.final_observation = obs
            return self._finish(ep, ep.limit_hit)
        if self.cfg.max_parse_failures is not None and ep.parse_failures >= self.cfg.max_parse_failures:
            ep.traj.final_observation = obs
            return self._finish(ep, StopReason.PARSE_FAILURES)
        history_before = ep.history[:-1]
        self._set_prompt(ep, obs, ep.renderer.next(history_before, obs, turn.action_ids))

    def _set_prompt(self, ep: _Episode, obs: list[Message], prompt: list[int] | None) -> None:
        if not prompt:
            ep.traj.meta["error"] = "the env returned no observation to prompt the model with"
            ep.traj.final_observation = obs
            return self._finish(ep, StopReason.ERROR)
        need = ep.n_tokens + len(prompt) + 1  # at least one action token must fit
        for limit, reason in ((self.context, StopReason.CONTEXT_LENGTH),
                              (self.cfg.max_episode_tokens, StopReason.MAX_TOKENS)):
            if limit is not None and need > limit:
                ep.traj.final_observation = obs
                return self._finish(ep, reason)
        ep.prompt, ep.pending_obs = prompt, obs

    def _finish(self, ep: _Episode, reason: StopReason) -> None:
        ep.traj.stop_reason = reason.value
        ep.done = True
        if self.kv_reuse:
            self.policy.release([self._kv_key(ep)])

    def _summarize(self) -> None:
        s, trajs = self.summary, [ep.traj for ep in self.episodes]
        n = max(len(trajs), 1)
        s.episodes = len(trajs)
        s.success_rate = sum(t.success for t in trajs) / n
        s.mean_reward = sum(t.total_reward for t in trajs) / n
        s.mean_turns = sum(len(t.turns) for t in trajs) / n
        s.mean_tokens = sum(len(t.token_ids()) for t in trajs) / n
        s.action_tokens = sum(t.num_action_tokens() for t in trajs)
        s.stop_reasons = dict(Counter(t.stop_reason for t in trajs))
        s.generate_calls = self.calls
        s.mean_batch = self.batch_total / self.calls if self.calls else 0.0


# ---------------------------------------------------------------------------------------------
# `agentsd rollout` (agentsd.rollout_cli)

def register_rollout(sub: Any) -> None:
    """Add the ``rollout`` subcommand (:mod:`agentsd.rollout_cli`) to ``sub``."""
    from agentsd.rollout_cli import register_rollout as register

    register(sub)
