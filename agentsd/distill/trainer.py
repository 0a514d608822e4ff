"""The step-wise on-policy distillation trainer (and its GRPO / OPSD / RFT baselines).

One step, top to bottom (:func:`train`)::

    trajs   = rollout(student, train tasks of this step)        # on-policy, current weights
    rows    = teacher prompt (skills + hints + task) + the student's exact response tokens
    for each micro-batch:
        t_lp  = teacher(rows)                                   # no grad, dropout off
        lp    = student(tokens)                                 # with grad
        loss  = distill(lp, t_lp, sampler_lp) [+ GRPO(lp, advantages)] on action tokens only
        loss.backward()                                         # accumulated, globally normalized
    optimizer.step(); teacher.after_step(); evaluate / checkpoint / log

``algo`` picks the objective; everything else (sampling, batching, checkpoints, metrics) is the
same code path, so the baselines compare fairly:

- ``opd``: teacher sees retrieved skills + privileged hints; sampled-token reverse KL (default);
- ``opsd``: teacher sees privileged hints only;
- ``grpo``: no teacher; clipped surrogate on group-relative advantages of the env reward;
- ``rft``: no teacher; negative log-likelihood of the successful samples' action tokens.

Every step's randomness derives from ``(seed, step)`` and the checkpointed state, and the rollout
engine is run with deterministic batching, so a run resumed from a checkpoint reproduces the
metrics of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.distill.config import TrainConfig, config_to_dict
from agentsd.distill.update import StepData, build_batch, micro_batches, update
from agentsd.trajectory import Trajectory

__all__ = ["train", "TrainResult", "build_student", "prepare_student", "evaluate",
           "evaluate_teacher", "eval_tasks", "StepData", "micro_batches", "train_seeds"]


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    run_dir: Path
    steps_done: int
    resumed_from: int
    final_eval: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# model

def build_student(cfg: TrainConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the configured model, with an earlier run merged in
    (``model.init_from``), LoRA-wrapped if asked, in train mode."""
    import torch

    from agentsd.distill.config import resolve_device
    from agentsd.distill.models import tiny_random_model
    from agentsd.policy.models import load_model, load_tokenizer

    mc = cfg.model
    device = resolve_device(mc.device)
    if mc.name == "tiny-random":
        tok = load_tokenizer("smollm2")
        model = tiny_random_model(vocab_size=len(tok), hidden_size=mc.tiny_hidden,
                                  layers=mc.tiny_layers, seed=cfg.seed, init_std=0.02,
                                  eos_token_id=tok.eos_token_id).to(device)
    else:
        dtype = torch.bfloat16 if mc.dtype == "bf16" else torch.float32
        model, tok = load_model(mc.name, device=device, dtype=dtype)
    return prepare_student(model, cfg), tok


def prepare_student(model: Any, cfg: TrainConfig) -> Any:
    """A loaded base model made ready for ``cfg``: ``init_from`` merged, a fresh LoRA adapter
    (seeded) or full fine-tuning, train mode."""
    import torch

    from agentsd.distill.checkpoint import merge_init_from
    from agentsd.distill.models import with_lora

    mc = cfg.model
    if mc.init_from:
        model = merge_init_from(model, mc.init_from, mc.name)
    if mc.lora:
        torch.manual_seed(cfg.seed)  # LoRA A init
        model = with_lora(model, rank=mc.lora_rank, alpha=mc.lora_alpha, dropout=mc.lora_dropout)
    else:
        model.requires_grad_(True)
    if mc.gradient_checkpointing:  # layers recompute in backward; sampling/scoring run in eval
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def _autocast(model: Any, cfg: TrainConfig) -> Any:
    """bf16 autocast where the hardware has it (CUDA with bf16); a no-op elsewhere."""
    import contextlib

    import torch

    dev = next(model.parameters()).device
    if cfg.model.dtype == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# rollouts and demonstrations

def train_seeds(cfg: TrainConfig, step: int, n: int | None = None) -> list[int]:
    """The train-split task seeds of ``step``: a pure function of (run seed, step)."""
    import numpy as np

    import agentsd

    rng = np.random.default_rng([cfg.seed, step, 7])
    pool = agentsd.split_seeds(cfg.rollout.env, "train", 1, offset=0)[0]
    picks = rng.choice(100_000, size=n or cfg.rollout.tasks_per_step, replace=False)
    return [pool + int(p) for p in picks]


def _rollouts(policy: Any, cfg: TrainConfig, seeds: Sequence[int] | None, samples: int,
              temperature: float, sample_seed: int, progress: bool, tasks: Sequence[Any] = (),
              record_privileged: bool = False) -> tuple[list[Trajectory], Any]:
    from agentsd.distill.fsdp import full_weights
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import RolloutConfig, Task, run_rollouts, split_kwargs

    rc = cfg.rollout
    if not tasks:
        kw = split_kwargs(rc.env, "train")
        tasks = [Task(rc.env, s, kw) for s in seeds or []]
    params = SamplingParams(temperature=temperature, top_p=rc.top_p if temperature > 0 else 1.0,
                            max_tokens=rc.max_tokens, seed=sample_seed)
    # batch_wait_s: wait for every pending env step before generating, so the batches (and
    # hence the samples) do not depend on thread timing; exact resume relies on it
    # FSDP: the full weights gathered once, as the ranks run different numbers of forwards
    with full_weights(getattr(policy, "model", None)):
        res = run_rollouts(policy, tasks=list(tasks), samples_per_task=samples, params=params,
                           config=RolloutConfig(max_turns=rc.max_turns,
                                                max_episode_tokens=rc.max_episode_tokens,
                                                batch_wait_s=3600.0, progress=progress,
                                                max_concurrent=max(64, len(tasks) * samples),
                                                record_privileged=record_privileged))
    return res.trajectories, res.summary


def _demos(cfg: TrainConfig, step: int, tokenizer: Any, library: Any,
           pool: list[Trajectory] | None = None) -> list[Trajectory]:
    """The step's demonstrations: ``tasks_per_step * samples_per_task`` of them (the episode
    budget of a rollout step), drawn from ``pool`` (a demo file's, loaded once a run) or played
    by the oracle, a ``demos.teacher_frac`` share in the teacher's context."""
    import numpy as np

    from agentsd.demos import oracle_demos
    from agentsd.rollout import split_kwargs

    n = cfg.rollout.tasks_per_step * cfg.rollout.samples_per_task
    rng = np.random.default_rng([cfg.seed, step, 11])
    in_teacher = rng.random(n) < cfg.demos.teacher_frac
    if pool is not None:
        return [pool[int(i)] for i in rng.integers(0, len(pool), size=n)]
    seeds = train_seeds(cfg, step, n)
    kw = dict(kwargs=split_kwargs(cfg.rollout.env, "train"), max_turns=cfg.rollout.max_turns)
    ctx = cfg.teacher_views()
    out = []
    for seed, t in zip(seeds, in_teacher):
        out += oracle_demos(cfg.rollout.env, [seed], tokenizer, teacher=ctx if t else None,
                            library=library, **kw)
    return out


# ---------------------------------------------------------------------------------------------
# teacher context

from agentsd.teacher_context import TeacherContexts as _Contexts  # noqa: E402


class _TeacherContexts(_Contexts):
    def rows(self, traj: Trajectory, index: int, skills=None) -> list[Any]:
        picked = self.pick(traj)
        traj.skills = [s.name for s in picked]
        return super().rows(traj, index, picked)


def _snapshot_library(cfg):
    from agentsd.teacher_context import snapshot_library

    return snapshot_library(cfg)


class _ActingTeacher:
    """The student's policy run with the teacher's weights (for the teacher's own acting)."""

    def __init__(self, policy: Any, teacher: Any) -> None:
        self.policy, self.teacher = policy, teacher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def generate(self, prompts: Any, params: Any, **kw: Any) -> Any:
        # kw: e.g. KV-reuse cache keys; the kept caches hold the teacher's keys/values, and the
        # rollout engine releases them when its episodes end
        with self.teacher.scoring():
            return self.policy.generate(prompts, params, **kw)


# ---------------------------------------------------------------------------------------------
# evaluation

def eval_tasks(cfg: TrainConfig) -> list[Any]:
    """The held-out tasks: the first ``eval_tasks`` test-split seeds *with the split's kwargs*."""
    from agentsd.rollout import split_tasks

    return split_tasks(cfg.rollout.env, "test", cfg.rollout.eval_tasks)


def _rates(trajs: list[Trajectory], prefix: str) -> dict[str, float]:
    n = max(len(trajs), 1)
    turns = [t for tr in trajs for t in tr.turns]
    return {f"{prefix}success": sum(t.success for t in trajs) / n,
            f"{prefix}reward": sum(t.total_reward for t in trajs) / n,
            f"{prefix}turns": len(turns) / n,
            f"{prefix}parse_rate": sum(t.parse == "ok" for t in turns) / max(len(turns), 1)}


def evaluate(policy: Any, cfg: TrainConfig, progress: bool = False, tasks: Sequence[Any] = (),
             prefix: str = "eval/") -> dict[str, float]:
    """Held-out success, reward, turns and parse rate (share of turns whose action parsed),
    greedy (``eval_temperature``) and, with ``rollout.eval_sampled``, at temperature 1
    (``…_t1``), on :func:`eval_tasks` (or ``tasks``)."""
    tasks = list(tasks) or eval_tasks(cfg)
    trajs, _ = _rollouts(policy, cfg, None, 1, cfg.rollout.eval_temperature,
                         sample_seed=cfg.seed * 7919 + 17, progress=progress, tasks=tasks)
    out = _rates(trajs, prefix)
    if cfg.rollout.eval_sampled:
        trajs, _ = _rollouts(policy, cfg, None, 1, 1.0, sample_seed=cfg.seed * 7919 + 29,
                             progress=progress, tasks=tasks)
        out.update({k + "_t1": v for k, v in _rates(trajs, prefix).items()})
    return out


def evaluate_teacher(policy: Any, teacher: Any, contexts: _TeacherContexts, cfg: TrainConfig,
                     progress: bool = False) -> dict[str, float]:
    """The teacher context *acting* (teacher weights, skills and per-turn hints in its prompt)
    on the held-out tasks: ``teacher/eval_success``, ``teacher/eval_parse_rate`` ..."""
    from agentsd.distill.fsdp import sharded
    from agentsd.rollout import Task

    tasks = [Task(contexts.env_factory(t, cfg.rollout.max_turns), t.seed) for t in eval_tasks(cfg)]
    greedy = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, eval_sampled=False))
    if sharded(policy.model):  # FSDP: the teacher's shards swapped in once, then gathered
        with teacher.scoring():
            return evaluate(policy, greedy, progress, tasks=tasks, prefix="teacher/eval_")
    return evaluate(_ActingTeacher(policy, teacher), greedy, progress, tasks=tasks,
                    prefix="teacher/eval_")


# ---------------------------------------------------------------------------------------------
# the loop

def train(cfg: TrainConfig, *, model: Any = None, tokenizer: Any = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""
    import torch
    from tqdm.auto import tqdm

    from agentsd.distill import distributed, fsdp, samplers
    from agentsd.distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from agentsd.distill.exposure import make_controller as make_exposure_controller
    from agentsd.distill.metrics import MetricsWriter, summarize_values
    from agentsd.distill.teacher import Teacher
    from agentsd.policy.hf import HFPolicy

    rank = distributed.init_distributed()  # rank 0 of 1 unless launched by torchrun
    samplers.preflight(cfg, rank.world_size)  # rollout servers answer, before any model loads
    distributed.shard(range(cfg.rollout.tasks_per_step))  # an uneven split fails before any work
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank.is_main:
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    if model is None:
        model, tokenizer = build_student(cfg)
    if cfg.model.fsdp:  # each process keeps a shard of the weights (a no-op in one process)
        fsdp.shard_model(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            weight_decay=cfg.optim.weight_decay)
    tc = cfg.teacher
    teacher = (Teacher(model, tc.mode, tc.ema_decay, tc.sync_every, tc.sync_on_improve)
               if cfg.uses_teacher else None)
    contexts = _TeacherContexts(cfg, tokenizer) if cfg.uses_teacher else None
    exposure = make_exposure_controller(cfg)  # ATESD: the teacher's reveal ratio as a control
    sft_library = (_snapshot_library(cfg) if cfg.algo == "sft" and cfg.demos.teacher_frac > 0
                   and "skills" in cfg.teacher_views().views else None)
    demo_pool = None
    if cfg.algo == "sft" and cfg.demos.source != "oracle":
        from agentsd.demos import load_demos

        demo_pool = load_demos(cfg.demos.source, cfg.rollout.env)
    start = 0
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt)
        if state.get("world_size", 1) != rank.world_size:
            raise ValueError(f"checkpoint {ckpt} was written by {state.get('world_size', 1)} "
                             f"process(es), this run has {rank.world_size}; resume with the same "
                             "torchrun --nproc_per_node (or start a new --out-dir)")
        start = int(state["step"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        if contexts is not None and state.get("bandit"):
            from agentsd.skills.retrieve import UsefulnessBandit

            contexts.bandit = UsefulnessBandit.from_dict(state["bandit"])
        if exposure is not None and state.get("exposure"):
            exposure.load_state_dict(state["exposure"])
    metrics = (MetricsWriter(run_dir, resume_step=start, tensorboard=cfg.tensorboard)
               if rank.is_main else distributed.Silent())
    policy = HFPolicy(model, tokenizer, model_id=f"student:{cfg.model.name}")
    # rollouts: --rollout.sampler (hf | vllm | openai), sampled at each step's start or, with
    # --rollout.overlap, during the previous step's update (agentsd.distill.samplers)
    sampler = samplers.build_sampler(cfg, model, tokenizer, policy, run_dir, version=start)
    stream = samplers.RolloutStream(sampler, lambda s: _rollouts(
        sampler.policy, cfg, distributed.shard(train_seeds(cfg, s)), cfg.rollout.samples_per_task,
        cfg.rollout.temperature, sample_seed=cfg.seed * 1_000_003 + s + 7_919 * rank.rank,
        progress=False, record_privileged=contexts is not None), cfg.rollout.overlap, cfg.steps,
        pending=state.get("prefetch") if ckpt is not None else None)
    pad_id = policy.pad_token_id
    G = cfg.rollout.samples_per_task
    samples_dir = run_dir / "samples"
    if rank.is_main:
        samples_dir.mkdir(exist_ok=True)
    history: list[dict[str, Any]] = []
    last_eval: dict[str, float] = {}
    if start == 0 and cfg.eval_at_start:
        _say(cfg, f"evaluating the student on {cfg.rollout.eval_tasks} held-out tasks ...")
        last_eval = evaluate(sampler.eval_policy, cfg, progress=cfg.progress)
        if teacher is not None and cfg.teacher_eval:
            _say(cfg, "evaluating the teacher context acting on the same tasks ...")
            last_eval.update(evaluate_teacher(policy, teacher, contexts, cfg, progress=cfg.progress))
            _check_teacher(last_eval)
        _say(cfg, "step 0: " + _fmt_eval(last_eval))
        metrics.log(0, last_eval)
        history.append({"step": 0, **last_eval})
        if teacher is not None:
            teacher.report_eval(last_eval["eval/success"])
    bar = tqdm(range(start + 1, cfg.steps + 1), initial=start, total=cfg.steps,
               disable=not (cfg.progress and rank.is_main), desc=f"train {cfg.algo}", unit="step",
               dynamic_ncols=True)
    try:
        for step in bar:
            t0 = time.perf_counter()
            # 1. on-policy rollouts with the current student (sft: the step's demonstrations),
            #    each turn recording the privileged views of the state it acted from
            if cfg.algo == "sft":
                trajs = distributed.shard(_demos(cfg, step, tokenizer, sft_library, demo_pool))
                summ = None
            else:
                trajs, summ = stream.take(step)
                stream.prefetch(step + 1)  # overlap: sampled with these weights during the update
            t_roll = time.perf_counter() - t0
            # the step's rollout statistics over every rank, reduced once (ATESD reads them too)
            success = distributed.mean([float(t.success) for t in trajs])
            reward = distributed.mean([t.total_reward for t in trajs])
            if exposure is not None:  # ATESD: this step's exposure, from the training state
                contexts.ctx = dataclasses.replace(contexts.ctx, exposure=exposure.decide(
                    step, success=success, reward=reward))
            # 2. the batch: weights and teacher rows (the teacher's context + the same tokens)
            data = build_batch(trajs, cfg, G, contexts.rows if contexts is not None else None,
                               step=step)
            # 3. objective, backward, optimizer step (the learning rate a pure function of step,
            #    so a resumed run follows the same schedule)
            m = {}
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            for _ in range(cfg.optim.updates_per_step):
                m, scores = update(model, opt, teacher, data, cfg, pad_id,
                                   lambda mdl: _autocast(mdl, cfg))
            t_train = time.perf_counter() - t0 - t_roll
            stream.after_update(model, step)  # join the prefetch; the sampler follows the update
            m.update(teacher.after_step(step) if teacher is not None else {})
            m["optim/lr"] = lr
            m.update(exposure.observe(m.get("kl/mean")) if exposure is not None else {})
            if contexts is not None:  # every rank's episodes, in task order: the bandits agree
                shown = distributed.gather_lists({"b": [(t.skills, float(t.success)) for t in trajs]})
                for skills, solved in shown["b"]:
                    contexts.bandit.update(skills, solved)
            m = {k.replace("teacher_", "teacher/"): v for k, v in m.items()}
            m["rollout/success"], m["rollout/reward"] = success, reward
            m["rollout/turns"] = distributed.mean([len(t.turns) for t in trajs])
            m.update(stream.metrics())
            lens = distributed.gather_lists({"n": [t.num_action_tokens() for t in trajs]})["n"]
            m.update(summarize_values(lens, "response_len", pcts=(95,)))
            n_tok = distributed.sum_scalar(sum(len(t.token_ids()) for t in trajs))
            m["time/rollout_s"], m["time/train_s"] = t_roll, t_train
            m["time/tokens_per_s"] = n_tok / max(t_train, 1e-9)
            if summ is not None:
                m["time/action_tokens_per_s_rollout"] = summ.action_tokens / max(t_roll, 1e-9)
            # 4. held-out evaluation
            is_last = step == cfg.steps
            if (cfg.eval_every and step % cfg.eval_every == 0) or (is_last and cfg.eval_at_end):
                last_eval = evaluate(sampler.eval_policy, cfg)
                m.update(last_eval)
                _say(cfg, f"step {step}: " + _fmt_eval(last_eval))
                if teacher is not None:
                    teacher.report_eval(last_eval["eval/success"])
                if rank.is_main:
                    _save_samples(samples_dir / f"step_{step:06d}.jsonl", trajs, scores, tokenizer,
                                  cfg.samples_to_keep)
            metrics.log(step, m)
            history.append({"step": step, **m})
            post = {"loss": f"{m['loss/total']:.3g}", "succ": f"{m['rollout/success']:.0%}"}
            if "kl/mean" in m:  # algorithms with a teacher; sft/grpo/rft have no KL to show
                post["kl"] = f"{m['kl/mean']:.3g}"
            bar.set_postfix(**post)
            # 5. checkpoint
            if step % cfg.checkpoint_every == 0 or is_last:
                # FSDP: every rank gathers its shards (the teacher's too), rank 0 writes them
                state = fsdp.full_tensors({
                    "teacher": teacher.state_dict() if teacher is not None else None,
                    "bandit": contexts.bandit.to_dict() if contexts is not None else None,
                    "exposure": exposure.state_dict() if exposure is not None else None,
                    "world_size": rank.world_size, "prefetch": stream.pending_state()})
                full = fsdp.checkpoint_tensors(model, opt)
                if rank.is_main:
                    save_checkpoint(run_dir, step, model, opt, state, keep=cfg.keep_checkpoints,
                                    full=full)
                distributed.barrier()
    finally:
        bar.close()
        stream.close()
        metrics.close()
    return TrainResult(run_dir, cfg.steps, start, last_eval, history)


def _save_samples(path: Path, trajs: list[Trajectory], scores: list[dict], tokenizer: Any,
                  keep: int) -> None:
    """A few scored trajectories (tokens, mask, student/teacher log-probs) for the report."""
    if keep <= 0:
        return
    # prefer a mix of successes and failures, in a deterministic order
    order = sorted(range(len(trajs)), key=lambda i: (trajs[i].success, i), reverse=True)
    picked = order[: keep // 2] + [i for i in reversed(order) if i not in order[: keep // 2]][
        : keep - keep // 2]
    with path.open("w", encoding="utf-8") as f:
        for i in picked:
            t = trajs[i]
            ids = t.token_ids()
            rec = {"id": t.id, "env_id": t.env_id, "seed": t.seed, "success": t.success,
                   "reward": t.total_reward, "skills": t.skills,
                   "tokens": [tokenizer.decode([x]) for x in ids], "mask": t.action_mask(),
                   **{k: [round(v, 4) for v in vals] for k, vals in scores[i].items()}}
            f.write(json.dumps(rec) + "\n")



def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of ``step`` (1-based): constant, or a linear decay that reaches 0 after
    the last step."""
    if cfg.optim.lr_schedule == "linear":
        return cfg.optim.lr * (cfg.steps - step + 1) / cfg.steps
    return cfg.optim.lr


def _say(cfg: TrainConfig, msg: str) -> None:
    if cfg.progress:
        import sys

        print(f"[{cfg.algo}] {msg}", file=sys.stderr, flush=True)


def _fmt_eval(e: dict[str, float]) -> str:
    parts = [f"held-out success {e['eval/success']:.1%} (parse {e['eval/parse_rate']:.0%})"]
    if "eval/success_t1" in e:
        parts.append(f"T=1 {e['eval/success_t1']:.1%} (parse {e['eval/parse_rate_t1']:.0%})")
    if "teacher/eval_success" in e:
        parts.append(f"teacher acting {e['teacher/eval_success']:.1%} "
                     f"(parse {e['teacher/eval_parse_rate']:.0%})")
    return "; ".join(parts)


def _check_teacher(e: dict[str, float]) -> None:
    """Distilling from a teacher that acts worse than the student pulls the student down: say
    so loudly (the fix is a warm start that covers the teacher's context, ``--algo sft``)."""
    import warnings

    if (e["teacher/eval_success"] < e["eval/success"]
            or e["teacher/eval_parse_rate"] < e["eval/parse_rate"]):
        warnings.warn(
            f"the teacher context acts worse than the student (success "
            f"{e['teacher/eval_success']:.1%} vs {e['eval/success']:.1%}, parse rate "
            f"{e['teacher/eval_parse_rate']:.0%} vs {e['eval/parse_rate']:.0%}); distilling from it "
            "can make the student worse. Warm-start first: agentsd train --algo sft "
            "(demos.teacher_frac > 0), then --model.init-from that run", stacklevel=3)
