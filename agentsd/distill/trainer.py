"""The step-wise on-policy distillation trainer (and its GRPO / OPSD / RFT / SFT baselines).

One step of :func:`train`, stage by stage (each a function below)::

    trajs = sample(step)          # on-policy rollouts with the current student (sft: demos),
                                  # each turn recording the privileged views of the state reached
    batch = build_batch(trajs)    # once a step: weights, feedback views, teacher rows
                                  # (the teacher's context + the student's exact tokens), skills
    m     = optimize(batch)       # per micro-batch: teacher scores (no grad) -> objective
                                  # (each term its loss and stats) -> backward; optimizer step
    m     = step_metrics(m)       # rollout, length and timing metrics over every rank
    m    |= evaluate(step)        # held-out success (and the samples kept for the report)
    m    |= refresh_skills(step)  # skills.refresh_every: the step's rollouts summarized into
                                  # the library, a new version the teacher reads next step
    log(m); checkpoint(step)

``algo`` picks the objective (:mod:`agentsd.distill.objectives`); everything else (sampling,
batching, checkpoints, metrics) is the same code path, so the baselines compare fairly:

- ``opd``: teacher sees retrieved skills + privileged hints; sampled-token reverse KL (default);
- ``opsd``: teacher sees privileged hints only;
- ``grpo``: no teacher; clipped surrogate on group-relative advantages of the env reward;
- ``rft``: no teacher; negative log-likelihood of the successful samples' action tokens;
- ``sft``: supervised fine-tuning on demonstrations (the warm start).

Where each option lives: resume in :func:`_start` (what a checkpoint restores) and
:func:`_checkpoint` (what it saves); DDP in the stages' reductions; FSDP in :func:`_start` and
:func:`_checkpoint`; overlap (``rollout.overlap``) in :func:`_sample` and :func:`_optimize`;
ATESD's exposure in :func:`_batch` (decided) and :func:`_optimize` (observed); the skill
bandit in :func:`_optimize`; dynamic skills in :func:`_refresh_skills`
(:mod:`agentsd.distill.skill_refresh`; the version in the checkpoint); the teacher's advantage
at step 0 in :func:`_evaluate_at_start`; the family's batch and loss options in
:mod:`agentsd.distill.batch` and :mod:`agentsd.distill.objectives`; the teacher's context in
:mod:`agentsd.teacher_context`.

Every step's randomness derives from ``(seed, step)`` and the checkpointed state, and the rollout
engine is run with deterministic batching, so a run resumed from a checkpoint reproduces the
metrics of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.distill.batch import Batch, StepData, build_batch, micro_batches
from agentsd.distill.config import TrainConfig, config_to_dict
from agentsd.distill.episodes import check_teacher as _check_teacher
from agentsd.distill.episodes import demos as _demos
from agentsd.distill.episodes import eval_tasks, evaluate, evaluate_teacher, train_seeds
from agentsd.distill.episodes import fmt_advantage as _fmt_advantage
from agentsd.distill.episodes import fmt_eval as _fmt_eval
from agentsd.distill.episodes import no_advantage_message as _no_advantage_message
from agentsd.distill.episodes import rollouts as _rollouts
from agentsd.distill.episodes import teacher_advantage as _teacher_advantage
from agentsd.distill.update import update
from agentsd.teacher_context import TeacherContexts
from agentsd.teacher_context import snapshot_library as _snapshot_library
from agentsd.trajectory import Trajectory

__all__ = ["train", "TrainResult", "build_student", "prepare_student", "evaluate",
           "evaluate_teacher", "eval_tasks", "Batch", "StepData", "micro_batches", "train_seeds",
           "lr_at"]

#: the former name of :class:`agentsd.teacher_context.TeacherContexts` (scripts import it)
_TeacherContexts = TeacherContexts


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
# the loop

def train(cfg: TrainConfig, *, model: Any = None, tokenizer: Any = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""
    run = _start(cfg, model, tokenizer)  # the model, optimizer, teacher, sampler; a resume
    history = _evaluate_at_start(run)
    bar = _progress_bar(run)
    try:
        for step in bar:
            trajs, rolled = _sample(run, step)
            batch = _batch(run, trajs, rolled, step)
            m, scores, t_train = _optimize(run, batch, step)
            m = _step_metrics(run, batch, rolled, m, t_train)
            m |= _evaluate(run, step, batch, scores)
            m |= _refresh_skills(run, step, batch)
            _log(run, bar, step, m, history)
            _checkpoint(run, step)
    finally:
        bar.close()
        run.stream.close()
        run.metrics.close()
    return TrainResult(run.run_dir, cfg.steps, run.start, run.last_eval, history)


@dataclass
class _Run:
    """What lives for a whole run: the config, the model and its optimizer, the teacher and its
    context, the rollout stream, the metrics writer (live objects, changed only by the stage
    that owns them)."""

    cfg: TrainConfig
    rank: Any
    run_dir: Path
    model: Any
    tokenizer: Any
    opt: Any
    teacher: Any
    contexts: TeacherContexts | None
    exposure: Any
    policy: Any
    sampler: Any
    stream: Any
    metrics: Any
    start: int
    sft_library: Any = None
    demo_pool: list[Trajectory] | None = None
    skills: Any = None  # SkillRefresh with skills.refresh_every, else None
    last_eval: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Rolled:
    """The step's rollout statistics over every rank, reduced once (ATESD reads them too)."""

    success: float
    reward: float
    seconds: float
    summary: Any


# ---------------------------------------------------------------------------------------------
# start (and resume)

def _start(cfg: TrainConfig, model: Any, tokenizer: Any) -> _Run:
    """Everything a step needs, from scratch or restored from the latest checkpoint."""
    import torch

    from agentsd.distill import distributed, fsdp, samplers
    from agentsd.distill.metrics import MetricsWriter
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
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            betas=(cfg.optim.beta1, cfg.optim.beta2),
                            weight_decay=cfg.optim.weight_decay)
    teacher, contexts, exposure = _teacher_parts(cfg, model, tokenizer)
    sft_library, demo_pool = _demo_sources(cfg)
    start, pending, skills_version = _resume(cfg, run_dir, rank, model, opt, teacher, contexts,
                                             exposure)
    metrics = (MetricsWriter(run_dir, resume_step=start, tensorboard=cfg.tensorboard)
               if rank.is_main else distributed.Silent())
    policy = HFPolicy(model, tokenizer, model_id=f"student:{cfg.model.name}")
    skills = _skill_refresh(cfg, run_dir, contexts, policy, rank, skills_version)
    # rollouts: --rollout.sampler (hf | vllm | openai), sampled at each step's start or, with
    # --rollout.overlap, during the previous step's update (agentsd.distill.samplers)
    sampler = samplers.build_sampler(cfg, model, tokenizer, policy, run_dir, version=start)
    stream = samplers.RolloutStream(sampler, lambda s: _rollouts(
        sampler.policy, cfg, distributed.shard(train_seeds(cfg, s)), cfg.rollout.samples_per_task,
        cfg.rollout.temperature, sample_seed=cfg.seed * 1_000_003 + s + 7_919 * rank.rank,
        progress=False, record_privileged=contexts is not None), cfg.rollout.overlap, cfg.steps,
        pending=pending)
    if rank.is_main:
        (run_dir / "samples").mkdir(exist_ok=True)
    return _Run(cfg, rank, run_dir, model, tokenizer, opt, teacher, contexts, exposure, policy,
                sampler, stream, metrics, start, sft_library, demo_pool, skills)


def _skill_refresh(cfg: TrainConfig, run_dir: Path, contexts: Any, policy: Any, rank: Any,
                   version: int) -> Any:
    """Dynamic skills (``skills.refresh_every``): the refresh stage, its versions started or
    cut back to the checkpoint's ``version`` (the teacher then reads that version)."""
    if not cfg.skills.refresh_every or contexts is None:
        return None
    from agentsd.distill.skill_refresh import SkillRefresh

    skills = SkillRefresh(cfg, run_dir, contexts, policy, rank)
    skills.start(version)
    return skills


def _teacher_parts(cfg: TrainConfig, model: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    """The teacher's weights (:class:`~agentsd.distill.teacher.Teacher`), its context
    (:class:`~agentsd.teacher_context.TeacherContexts`) and ATESD's exposure controller; ``None``
    where the algorithm or config has none."""
    from agentsd.distill.exposure import make_controller
    from agentsd.distill.teacher import Teacher

    if not cfg.uses_teacher:
        return None, None, make_controller(cfg)
    tc = cfg.teacher
    teacher = Teacher(model, tc.mode, tc.ema_decay, tc.sync_every, tc.sync_on_improve)
    return teacher, TeacherContexts(cfg, tokenizer), make_controller(cfg)


def _demo_sources(cfg: TrainConfig) -> tuple[Any, list[Trajectory] | None]:
    """sft: the skill library of the demos rendered in the teacher's context, and the demo file's
    episodes (loaded once a run; ``None``: the env's oracle plays them)."""
    if cfg.algo != "sft":
        return None, None
    library = (_snapshot_library(cfg) if cfg.demos.teacher_frac > 0
               and "skills" in cfg.teacher_views().views else None)
    if cfg.demos.source == "oracle":
        return library, None
    from agentsd.demos import load_demos

    return library, load_demos(cfg.demos.source, cfg.rollout.env)


def _resume(cfg: TrainConfig, run_dir: Path, rank: Any, model: Any, opt: Any, teacher: Any,
            contexts: Any, exposure: Any) -> tuple[int, Any, int]:
    """The latest checkpoint's step (0 without one), the rollouts it had prefetched and its
    skill library version; the model, optimizer, teacher, skill bandit and exposure controller
    are restored in place."""
    from agentsd.distill.checkpoint import latest_checkpoint, load_checkpoint

    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is None:
        return 0, None, 0
    state = load_checkpoint(ckpt, model, opt)
    if state.get("world_size", 1) != rank.world_size:
        raise ValueError(f"checkpoint {ckpt} was written by {state.get('world_size', 1)} "
                         f"process(es), this run has {rank.world_size}; resume with the same "
                         "torchrun --nproc_per_node (or start a new --out-dir)")
    if teacher is not None:
        teacher.load_state_dict(state["teacher"])
    if contexts is not None:
        contexts.load_state_dict(state.get("bandit"))
    if exposure is not None and state.get("exposure"):
        exposure.load_state_dict(state["exposure"])
    return int(state["step"]), state.get("prefetch"), int(state.get("skills_version") or 0)


def _evaluate_at_start(run: _Run) -> list[dict[str, Any]]:
    """Step 0 (a fresh run with ``eval_at_start``): the student and, with a teacher, the
    teacher context acting on the held-out tasks (warning when it succeeds less often), then
    the teacher's advantage per view (:func:`_advantage_at_start`)."""
    cfg, teacher = run.cfg, run.teacher
    if run.start != 0 or not cfg.eval_at_start:
        return []
    _say(cfg, f"evaluating the student on {cfg.rollout.eval_tasks} held-out tasks ...")
    ev = evaluate(run.sampler.eval_policy, cfg, progress=cfg.progress)
    if teacher is not None and cfg.teacher_eval:
        _say(cfg, "evaluating the teacher context acting on the same tasks ...")
        ev.update(evaluate_teacher(run.policy, teacher, run.contexts, cfg, progress=cfg.progress))
        _check_teacher(ev)  # attributed here (stacklevel 2), not to the CLI
        ev.update(_advantage_at_start(run, ev))
    _say(cfg, "step 0: " + _fmt_eval(ev))
    run.metrics.log(0, ev)
    if teacher is not None:
        teacher.report_eval(ev["eval/success"])
    run.last_eval = ev
    return [{"step": 0, **ev}]


def _advantage_at_start(run: _Run, ev: dict[str, float]) -> dict[str, float]:
    """``teacher/eval_success/<view>`` and ``teacher/advantage/<view>`` for each of
    ``teacher_eval_views`` the context allows (skills only, hints only, both: each view acting
    greedily on the held-out tasks; the configured one is the measurement just made), one line
    saying them, and a plain sentence when the skills alone give the teacher no advantage. Adds
    keys only: greedy acting draws from no generator a later step uses."""
    cfg = run.cfg
    if not cfg.teacher_eval_views:
        return {}

    def acting(ctx: Any) -> dict[str, float]:
        _say(cfg, f"evaluating the teacher acting with views {'+'.join(ctx.views)} ...")
        return evaluate_teacher(run.policy, run.teacher, run.contexts, cfg, progress=cfg.progress,
                                context=ctx)

    adv = _teacher_advantage(ev, acting, run.contexts.ctx, cfg.teacher_eval_views)
    lines = [_fmt_advantage({**ev, **adv}, cfg.rollout.eval_tasks) if adv else None,
             _no_advantage_message({**ev, **adv})]
    for line in filter(None, lines):  # printed with progress, logged always
        _say(cfg, line)
        logging.getLogger("agentsd.train").info(line)
    return adv


def _progress_bar(run: _Run) -> Any:
    from tqdm.auto import tqdm

    cfg = run.cfg
    return tqdm(range(run.start + 1, cfg.steps + 1), initial=run.start, total=cfg.steps,
                disable=not (cfg.progress and run.rank.is_main), desc=f"train {cfg.algo}",
                unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------
# the stages of a step

def _sample(run: _Run, step: int) -> tuple[list[Trajectory], _Rolled]:
    """1. The step's episodes: on-policy rollouts with the current student (with
    ``rollout.overlap``, sampled during the previous step's update; this step's update then
    overlaps step + 1's sampling), or for sft the step's demonstrations. DDP: this rank's share."""
    from agentsd.distill import distributed

    t0 = time.perf_counter()
    cfg = run.cfg
    if cfg.algo == "sft":
        trajs = distributed.shard(_demos(cfg, step, run.tokenizer, run.sft_library, run.demo_pool))
        summary = None
    else:
        trajs, summary = run.stream.take(step)
        run.stream.prefetch(step + 1)  # overlap: sampled with these weights during the update
    seconds = time.perf_counter() - t0
    return trajs, _Rolled(distributed.mean([float(t.success) for t in trajs]),
                          distributed.mean([t.total_reward for t in trajs]), seconds, summary)


def _batch(run: _Run, trajs: list[Trajectory], rolled: _Rolled, step: int) -> Batch:
    """2. The batch, once a step (:func:`agentsd.distill.batch.build_batch`): with a teacher,
    the skills picked for each task and each trajectory's teacher rows; ATESD first sets this
    step's exposure from the training state."""
    cfg, ctx = run.cfg, run.contexts
    G = cfg.rollout.samples_per_task
    if ctx is None:
        return build_batch(trajs, cfg, G, None, step=step)
    if run.exposure is not None:  # ATESD: this step's exposure, from the training state
        ctx.with_exposure(run.exposure.decide(step, success=rolled.success, reward=rolled.reward))
    picks = [ctx.pick(t) for t in trajs]
    return build_batch(trajs, cfg, G, lambda t, i: ctx.rows(t, i, picks[i]), step=step,
                       skills=[[s.name for s in p] for p in picks])


def _optimize(run: _Run, batch: Batch, step: int) -> tuple[dict[str, float], list[dict], float]:
    """3.-5. Teacher scores, objective and optimizer step, ``optim.updates_per_step`` times
    (:func:`agentsd.distill.update.update`; the learning rate a pure function of the step, so a
    resumed run follows the same schedule); then what follows an update: the sampler takes the
    new weights (overlap: the prefetch joins first), the teacher its step (ema, sync), ATESD
    observes the divergence, the skill bandit learns which skills the solved tasks saw."""
    from agentsd.distill import distributed

    cfg, teacher = run.cfg, run.teacher
    t0 = time.perf_counter()
    lr = lr_at(cfg, step)
    for g in run.opt.param_groups:
        g["lr"] = lr
    m: dict[str, float] = {}
    scores: list[dict] = []
    for _ in range(cfg.optim.updates_per_step):
        m, scores = update(run.model, run.opt, teacher, batch, cfg, run.policy.pad_token_id,
                           lambda mdl: _autocast(mdl, cfg))
    seconds = time.perf_counter() - t0
    run.stream.after_update(run.model, step)  # join the prefetch; the sampler follows the update
    m.update(teacher.after_step(step) if teacher is not None else {})
    if cfg.teacher.refine == "vpd" and teacher is not None:  # VPD: the teacher's E-step
        from agentsd.distill.family_more import vpd_e_step

        m.update(vpd_e_step(run.model, teacher, batch, cfg, run.policy.pad_token_id,
                            lambda mdl: _autocast(mdl, cfg)))
    m["optim/lr"] = lr
    m.update(run.exposure.observe(m.get("kl/mean")) if run.exposure is not None else {})
    if run.contexts is not None:  # every rank's episodes, in task order: the bandits agree
        shown = [(batch.skills[i], float(t.success)) for i, t in enumerate(batch.trajs)]
        run.contexts.learn(distributed.gather_lists({"b": shown})["b"])
    return m, scores, seconds


def _step_metrics(run: _Run, batch: Batch, rolled: _Rolled, m: dict[str, float],
                  t_train: float) -> dict[str, float]:
    """6. The step's metrics: the update's, the rollouts' (over every rank), response lengths,
    the sampler's (staleness, policy version) and wall-clock throughput."""
    from agentsd.distill import distributed
    from agentsd.distill.metrics import summarize_values

    trajs = batch.trajs
    m = {k.replace("teacher_", "teacher/"): v for k, v in m.items()}
    m["rollout/success"], m["rollout/reward"] = rolled.success, rolled.reward
    m["rollout/turns"] = distributed.mean([len(t.turns) for t in trajs])
    m.update(run.stream.metrics())
    lens = distributed.gather_lists({"n": [t.num_action_tokens() for t in trajs]})["n"]
    m.update(summarize_values(lens, "response_len", pcts=(95,)))
    n_tok = distributed.sum_scalar(sum(len(t.token_ids()) for t in trajs))
    m["time/rollout_s"], m["time/train_s"] = rolled.seconds, t_train
    m["time/tokens_per_s"] = n_tok / max(t_train, 1e-9)
    if rolled.summary is not None:
        m["time/action_tokens_per_s_rollout"] = rolled.summary.action_tokens / max(rolled.seconds, 1e-9)
    return m


def _evaluate(run: _Run, step: int, batch: Batch, scores: list[dict]) -> dict[str, float]:
    """7. Held-out evaluation every ``eval_every`` steps and at the end (``eval_at_end``); the
    teacher hears the result (``sync_on_improve``) and a few scored samples are kept."""
    cfg = run.cfg
    is_last = step == cfg.steps
    if not ((cfg.eval_every and step % cfg.eval_every == 0) or (is_last and cfg.eval_at_end)):
        return {}
    run.last_eval = evaluate(run.sampler.eval_policy, cfg)
    _say(cfg, f"step {step}: " + _fmt_eval(run.last_eval))
    if run.teacher is not None:
        run.teacher.report_eval(run.last_eval["eval/success"])
    if run.rank.is_main:
        samples = run.run_dir / "samples" / f"step_{step:06d}.jsonl"
        _save_samples(samples, batch, scores, run.tokenizer, cfg.samples_to_keep)
        from agentsd.distill.report import save_teacher_contexts

        save_teacher_contexts(samples, batch, run.tokenizer, cfg)  # the hint beside its tokens
    return dict(run.last_eval)


def _refresh_skills(run: _Run, step: int, batch: Batch) -> dict[str, float]:
    """8. Dynamic skills (``skills.refresh_every``): the step's rollouts recorded with the
    skills their teacher rows saw (``skills/shown/<name>``, ``skills/solved/<name>``,
    ``skills/library_size``); every N steps the recent ones summarized into a new library
    version (``skills/added``, ``skills/version``) that the teacher reads from the next step
    (:class:`agentsd.distill.skill_refresh.SkillRefresh`)."""
    if run.skills is None:
        return {}
    return run.skills.step(step, batch.trajs, batch.skills)


def _log(run: _Run, bar: Any, step: int, m: dict[str, float], history: list[dict]) -> None:
    run.metrics.log(step, m)
    history.append({"step": step, **m})
    post = {"loss": f"{m['loss/total']:.3g}", "succ": f"{m['rollout/success']:.0%}"}
    if "kl/mean" in m:  # algorithms with a teacher; sft/grpo/rft have no KL to show
        post["kl"] = f"{m['kl/mean']:.3g}"
    bar.set_postfix(**post)


def _checkpoint(run: _Run, step: int) -> None:
    """Every ``checkpoint_every`` steps and at the end: the model, optimizer and what a resume
    restores (teacher, skill bandit, exposure controller, the prefetched rollouts, the skill
    library version). FSDP: every
    rank gathers its shards (the teacher's too), rank 0 writes them."""
    from agentsd.distill import distributed, fsdp
    from agentsd.distill.checkpoint import portable_base, save_checkpoint

    cfg = run.cfg
    if step % cfg.checkpoint_every != 0 and step != cfg.steps:
        return
    state = fsdp.full_tensors({
        "teacher": run.teacher.state_dict() if run.teacher is not None else None,
        "bandit": run.contexts.state_dict() if run.contexts is not None else None,
        "exposure": run.exposure.state_dict() if run.exposure is not None else None,
        "world_size": run.rank.world_size, "prefetch": run.stream.pending_state(),
        "skills_version": run.skills.version if run.skills is not None else 0})
    full = fsdp.checkpoint_tensors(run.model, run.opt)
    if run.rank.is_main:
        save_checkpoint(run.run_dir, step, run.model, run.opt, state, keep=cfg.keep_checkpoints,
                        full=full, base_model=portable_base(cfg.model.name))
        if run.skills is not None:
            run.skills.after_checkpoint(step)
    distributed.barrier()


# ---------------------------------------------------------------------------------------------
# helpers

def _save_samples(path: Path, batch: Batch, scores: list[dict], tokenizer: Any, keep: int) -> None:
    """A few scored trajectories (tokens, mask, skills shown, student/teacher log-probs) for the
    report."""
    if keep <= 0:
        return
    trajs = batch.trajs
    # prefer a mix of successes and failures, in a deterministic order
    order = sorted(range(len(trajs)), key=lambda i: (trajs[i].success, i), reverse=True)
    picked = order[: keep // 2] + [i for i in reversed(order) if i not in order[: keep // 2]][
        : keep - keep // 2]
    with path.open("w", encoding="utf-8") as f:
        for i in picked:
            t = trajs[i]
            ids = t.token_ids()
            rec = {"id": t.id, "env_id": t.env_id, "seed": t.seed, "success": t.success,
                   "reward": t.total_reward,
                   "skills": batch.skills[i] if batch.skills else t.skills,
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
    """One progress line; through tqdm, so a line printed while a bar is drawn gets its own line
    instead of being glued to the bar's."""
    if cfg.progress:
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"[{cfg.algo}] {msg}", file=sys.stderr)
        sys.stderr.flush()
