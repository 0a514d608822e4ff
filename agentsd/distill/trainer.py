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

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsd.distill.config import TrainConfig, config_to_dict
from agentsd.trajectory import Trajectory

__all__ = ["train", "TrainResult", "build_student", "evaluate", "StepData", "micro_batches",
           "train_seeds"]


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
    """``(model, tokenizer)``: the configured model, LoRA-wrapped if asked, in train mode."""
    import torch

    from agentsd.distill.models import tiny_random_model, with_lora
    from agentsd.policy.models import load_model, load_tokenizer

    mc = cfg.model
    if mc.name == "tiny-random":
        tok = load_tokenizer("smollm2")
        model = tiny_random_model(vocab_size=len(tok), hidden_size=mc.tiny_hidden,
                                  layers=mc.tiny_layers, seed=cfg.seed, init_std=0.02,
                                  eos_token_id=tok.eos_token_id)
    else:
        dtype = torch.bfloat16 if mc.dtype == "bf16" else torch.float32
        model, tok = load_model(mc.name, dtype=dtype)
    if mc.lora:
        torch.manual_seed(cfg.seed)  # LoRA A init
        model = with_lora(model, rank=mc.lora_rank, alpha=mc.lora_alpha, dropout=mc.lora_dropout)
    else:
        model.requires_grad_(True)
    model.train()
    return model, tok


def _autocast(model: Any, cfg: TrainConfig) -> Any:
    """bf16 autocast where the hardware has it (CUDA with bf16); a no-op elsewhere."""
    import contextlib

    import torch

    dev = next(model.parameters()).device
    if cfg.model.dtype == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# rollouts

def train_seeds(cfg: TrainConfig, step: int) -> list[int]:
    """The train-split task seeds of ``step``: a pure function of (run seed, step)."""
    import numpy as np

    import agentsd

    rng = np.random.default_rng([cfg.seed, step, 7])
    pool = agentsd.split_seeds(cfg.rollout.env, "train", 1, offset=0)[0]
    picks = rng.choice(100_000, size=cfg.rollout.tasks_per_step, replace=False)
    return [pool + int(p) for p in picks]


def _rollouts(policy: Any, cfg: TrainConfig, seeds: Sequence[int], samples: int, temperature: float,
              sample_seed: int, progress: bool) -> tuple[list[Trajectory], Any]:
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import RolloutConfig, run_rollouts

    rc = cfg.rollout
    params = SamplingParams(temperature=temperature, top_p=rc.top_p if temperature > 0 else 1.0,
                            max_tokens=rc.max_tokens, seed=sample_seed)
    # batch_wait_s: wait for every pending env step before generating, so the batches (and
    # hence the samples) do not depend on thread timing; exact resume relies on it
    res = run_rollouts(policy, rc.env, list(seeds), samples, params,
                       config=RolloutConfig(max_turns=rc.max_turns,
                                            max_episode_tokens=rc.max_episode_tokens,
                                            batch_wait_s=3600.0, progress=progress,
                                            max_concurrent=max(64, len(seeds) * samples)))
    return res.trajectories, res.summary


# ---------------------------------------------------------------------------------------------
# teacher context

class _TeacherContexts:
    """Builds the teacher prompt ids of a trajectory (shared prefix or one per turn)."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any) -> None:
        from agentsd.skills.retrieve import UsefulnessBandit

        self.cfg, self.tok = cfg, tokenizer
        self.ctx = cfg.teacher_views()
        self.bandit = UsefulnessBandit(c=cfg.teacher.bandit_c)
        self.library = None
        if "skills" in self.ctx.views:
            self.library = _snapshot_library(cfg)

    def prompts(self, traj: Trajectory) -> list[int] | list[list[int]]:
        import agentsd
        from agentsd.distill.teacher import render_prompt
        from agentsd.hints import compose_teacher_context, replay_privileged

        kw = {k: v for k, v in (traj.spec_kwargs or {}).items() if k != "max_turns"}
        env = agentsd.make(traj.env_id, max_turns=max(1, len(traj.turns) + 1), **kw)
        try:
            privs = replay_privileged(traj, env=env)
            tools = env.openai_tools() or None
        finally:
            env.close()
        task = traj.turns[0].observation
        step_mode = self.ctx.exposure_mode == "step"
        out, names = [], []
        for t in range(len(traj.turns) if step_mode else 1):
            c = compose_teacher_context(task, privs[t], self.library, traj.env_id, self.ctx,
                                        bandit=self.bandit, turn=t if step_mode else None)
            names = c.skills
            out.append(render_prompt(self.tok, c.messages, tools))
        traj.skills = list(names)
        return out if step_mode else out[0]


def _snapshot_library(cfg: TrainConfig) -> Any:
    """The run's skill library: copied into ``<run>/skills`` on the first start and read from
    there ever after, so a resumed run (or a rerun of the report) sees the skills the run
    started with even if the source library has changed since."""
    from agentsd.skills import SkillLibrary, load_library

    snap = Path(cfg.out_dir) / "skills"
    if not (snap / ".complete").exists():
        src = cfg.teacher.skills_dir or None
        try:
            lib = load_library(src, env=cfg.rollout.env)
        except Exception as e:  # a missing library is allowed: the teacher then sees hints only
            import warnings

            warnings.warn(f"no skill library loaded ({e}); the teacher sees hints only", stacklevel=2)
            lib = SkillLibrary()
        lib.save(snap)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / ".complete").write_text(str(len(lib)))
    return load_library(snap, env=cfg.rollout.env)


# ---------------------------------------------------------------------------------------------
# batching

@dataclass
class StepData:
    """The step's trajectories as per-sequence weights and groupings."""

    trajs: list[Trajectory]
    advantages: list[float]
    distill_w: list[float]
    grpo_w: list[float]
    sft_w: list[float]


def _step_data(trajs: list[Trajectory], cfg: TrainConfig, G: int) -> StepData:
    import torch

    from agentsd.distill import losses as L

    lc = cfg.loss
    n = len(trajs)
    rewards = torch.tensor([t.total_reward for t in trajs], dtype=torch.float32)
    success = torch.tensor([float(t.success) for t in trajs])
    adv, pass_w = torch.zeros(n), torch.ones(n)
    for s in range(0, n, G):  # the engine returns task-major, sample-minor order
        adv[s:s + G] = L.group_advantages(rewards[s:s + G], normalize_std=lc.grpo_std_norm)
        if lc.pass_rate_a or lc.pass_rate_b:
            pass_w[s:s + G] = L.pass_rate_weight(success[s:s + G].mean(), lc.pass_rate_a,
                                                 lc.pass_rate_b)
    if cfg.algo == "grpo":
        return StepData(trajs, adv.tolist(), [0.0] * n, [1.0] * n, [0.0] * n)
    if cfg.algo == "rft":
        return StepData(trajs, adv.tolist(), [0.0] * n, [0.0] * n, success.tolist())
    grpo_w, distill_w = torch.full((n,), lc.grpo_coef), torch.full((n,), lc.distill_coef)
    if lc.success_routing:
        g, d = L.route_by_success(success)
        grpo_w, distill_w = grpo_w * g, distill_w * d
    return StepData(trajs, adv.tolist(), (distill_w * pass_w).tolist(), grpo_w.tolist(),
                    [0.0] * n)


def micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped (longest first) so each padded micro-batch holds at most ``max_tokens``
    tokens; a longer single sequence goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and lengths[out[-1][0]] * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _pad(seqs: Sequence[Sequence[float]], dtype: Any, fill: float = 0) -> Any:
    import torch

    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), fill, dtype=dtype)
    for b, s in enumerate(seqs):
        out[b, : len(s)] = torch.tensor(list(s), dtype=dtype)
    return out


# ---------------------------------------------------------------------------------------------
# one update

def _update(model: Any, opt: Any, teacher: Any, contexts: _TeacherContexts | None,
            data: StepData, cfg: TrainConfig, pad_id: int) -> tuple[dict[str, float], list[dict]]:
    """Forward/backward over micro-batches (gradients accumulated with one global
    normalization), then one optimizer step. Returns metrics and per-trajectory token scores
    (for the report)."""
    import torch

    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values, summarize_values
    from agentsd.distill.teacher import build_teacher_rows, forward_logprobs, score_rows

    lc = cfg.loss
    trajs = data.trajs
    # score with the distribution the sampler drew from (its temperature), so the importance
    # ratio compares like with like; top-p renormalization remains a (clipped, logged) mismatch
    temp = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    lengths = [len(t.token_ids()) for t in trajs]
    n_action = [t.num_action_tokens() for t in trajs]
    denom = float(sum(n_action)) if lc.reduce == "token" else float(sum(1 for x in n_action if x))
    denom = max(denom, 1.0)
    rows_of = {}
    if contexts is not None:
        for i, t in enumerate(trajs):
            rows_of[i] = build_teacher_rows(t, contexts.prompts(t), traj_index=i)
    want_logits = contexts is not None and lc.kind == "jsd"
    col: dict[str, list[float]] = {k: [] for k in ("div", "gap", "ratio", "isclip", "tokclip", "ent")}
    terms = {"distill": 0.0, "grpo": 0.0, "sft": 0.0}
    scores: list[dict] = [{} for _ in trajs]
    opt.zero_grad(set_to_none=True)
    for mb in micro_batches(lengths, cfg.optim.max_tokens_per_micro_batch):
        ts = [trajs[i] for i in mb]
        ids = _pad([t.token_ids() for t in ts], torch.long, pad_id)
        attn = _pad([[1] * len(t.token_ids()) for t in ts], torch.long)
        mask = _pad([t.action_mask() for t in ts], torch.float32)
        s_lp = _pad([t.sampler_logprobs() for t in ts], torch.float32)
        dev = next(model.parameters()).device
        ids, attn, mask, s_lp = ids.to(dev), attn.to(dev), mask.to(dev), s_lp.to(dev)
        # per-token weights realizing the chosen reduction with one global denominator
        tok_w = mask / denom
        if lc.reduce == "sequence":
            tok_w = mask / mask.sum(-1, keepdim=True).clamp_min(1.0) / denom
        t_out = None
        if contexts is not None:
            rows = [r for j, i in enumerate(mb) for r in _reindex(rows_of[i], j)]
            with teacher.scoring() as tm, _autocast(tm, cfg):
                t_out = score_rows(tm, rows, [len(t.token_ids()) for t in ts], pad_id,
                                   max_tokens=cfg.teacher.max_tokens_per_forward,
                                   want_logits=want_logits, chunk_size=lc.chunk_size,
                                   temperature=temp)
        with _autocast(model, cfg):
            out = forward_logprobs(model, ids, attn, chunk_size=lc.chunk_size,
                                   want_logits=want_logits, want_entropy=True, temperature=temp)
        lp = out["logp_BT"]
        total = lp.new_zeros(())

        def w(xs: list[float], mb: list[int] = mb, dev: Any = dev) -> Any:
            return torch.tensor([xs[i] for i in mb], dtype=torch.float32, device=dev)

        if t_out is not None:
            t_lp = t_out["teacher_logp_BT"].to(dev)
            if lc.kind == "reverse_kl":
                tl = L.sampled_token_reverse_kl(lp, t_lp, s_lp, mask, lc.is_clip or None,
                                                lc.token_clip or None)
            elif lc.kind == "pg":
                tl = L.policy_gradient_distill(lp, t_lp, s_lp, mask, lc.pg_coef, lc.is_clip or None,
                                               lc.token_clip or None)
            else:
                tl = L.chunked_divergence(out["logits_BTV"], t_out["teacher_logits_BTV"].to(dev),
                                          mask, lc.alpha, lc.top_k or None, lc.token_clip or None,
                                          lc.chunk_size)
            pos_w = L.position_weights(mask, lc.position_weight, lc.position_start)
            d = (tl.loss_BT * pos_w * tok_w * w(data.distill_w)[:, None]).sum()
            total = total + d
            terms["distill"] += float(d.detach())
            col["div"] += masked_values(tl.divergence_BT, mask)
            col["gap"] += masked_values(t_lp - lp.detach(), mask)
            if tl.is_ratio_BT is not None:
                col["ratio"] += masked_values(tl.is_ratio_BT, mask)
                col["isclip"] += masked_values(tl.is_clipped_BT, mask)
            if tl.token_clipped_BT is not None:
                col["tokclip"] += masked_values(tl.token_clipped_BT, mask)
            for j, i in enumerate(mb):
                scores[i] = {"student_logp": lp[j, : lengths[i]].detach().cpu().tolist(),
                             "teacher_logp": t_lp[j, : lengths[i]].cpu().tolist()}
        if any(data.grpo_w[i] for i in mb):
            adv = w(data.advantages)
            gl = L.grpo_loss(lp, s_lp, adv, mask, lc.grpo_clip_eps)
            g = (gl.loss_BT * tok_w * w(data.grpo_w)[:, None]).sum()
            total = total + g
            terms["grpo"] += float(g.detach())
            if t_out is None:
                col["ratio"] += masked_values(gl.is_ratio_BT, mask)
                col["isclip"] += masked_values(gl.is_clipped_BT, mask)
        if any(data.sft_w[i] for i in mb):
            sl = L.sft_loss(lp, mask)
            s = (sl.loss_BT * tok_w * w(data.sft_w)[:, None]).sum()
            total = total + s
            terms["sft"] += float(s.detach())
        col["ent"] += masked_values(out["entropy_BT"], mask)
        if total.requires_grad:
            total.backward()
        if t_out is None:
            for j, i in enumerate(mb):
                scores[i] = {"student_logp": lp[j, : lengths[i]].detach().cpu().tolist()}
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = 0.0
    has_grad = any(p.grad is not None for p in params)
    if has_grad:
        if cfg.optim.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        opt.step()
    m = {f"loss/{k}": v for k, v in terms.items()}
    m["loss/total"] = sum(terms.values())
    m["optim/grad_norm"] = grad_norm
    m["optim/updated"] = float(grad_norm > 0)  # e.g. GRPO with equal rewards: zero gradient
    m.update(summarize_values(col["div"], "kl"))
    m.update(summarize_values(col["gap"], "gap"))
    m.update(summarize_values(col["ent"], "entropy", pcts=()))
    if col["ratio"]:
        m["is/ratio_mean"] = float(sum(col["ratio"]) / len(col["ratio"]))
        m["is/ratio_max"] = float(max(col["ratio"]))
        m["is/clip_frac"] = float(sum(col["isclip"]) / len(col["isclip"]))
    if col["tokclip"]:
        m["clip/token_frac"] = float(sum(col["tokclip"]) / len(col["tokclip"]))
    return m, scores


def _reindex(rows: list, j: int) -> list:
    import dataclasses

    return [dataclasses.replace(r, traj_index=j) for r in rows]


# ---------------------------------------------------------------------------------------------
# evaluation

def evaluate(policy: Any, cfg: TrainConfig, progress: bool = False) -> dict[str, float]:
    """Held-out success rate and mean reward on the first ``eval_tasks`` test-split seeds."""
    import agentsd

    seeds = agentsd.split_seeds(cfg.rollout.env, "test", cfg.rollout.eval_tasks)
    trajs, _ = _rollouts(policy, cfg, seeds, 1, cfg.rollout.eval_temperature,
                         sample_seed=cfg.seed * 7919 + 17, progress=progress)
    n = max(len(trajs), 1)
    return {"eval/success": sum(t.success for t in trajs) / n,
            "eval/reward": sum(t.total_reward for t in trajs) / n,
            "eval/turns": sum(len(t.turns) for t in trajs) / n}


# ---------------------------------------------------------------------------------------------
# the loop

def train(cfg: TrainConfig, *, model: Any = None, tokenizer: Any = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""
    import torch
    from tqdm.auto import tqdm

    from agentsd.distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from agentsd.distill.metrics import MetricsWriter, summarize_values
    from agentsd.distill.teacher import Teacher
    from agentsd.policy.hf import HFPolicy

    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    if model is None:
        model, tokenizer = build_student(cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            weight_decay=cfg.optim.weight_decay)
    tc = cfg.teacher
    teacher = (Teacher(model, tc.mode, tc.ema_decay, tc.sync_every, tc.sync_on_improve)
               if cfg.uses_teacher else None)
    contexts = _TeacherContexts(cfg, tokenizer) if cfg.uses_teacher else None
    start = 0
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt)
        start = int(state["step"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        if contexts is not None and state.get("bandit"):
            from agentsd.skills.retrieve import UsefulnessBandit

            contexts.bandit = UsefulnessBandit.from_dict(state["bandit"])
    metrics = MetricsWriter(run_dir, resume_step=start, tensorboard=cfg.tensorboard)
    policy = HFPolicy(model, tokenizer, model_id=f"student:{cfg.model.name}")
    pad_id = policy.pad_token_id
    G = cfg.rollout.samples_per_task
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(exist_ok=True)
    history: list[dict[str, Any]] = []
    last_eval: dict[str, float] = {}
    if start == 0 and cfg.eval_at_start:
        last_eval = evaluate(policy, cfg)
        metrics.log(0, last_eval)
        history.append({"step": 0, **last_eval})
        if teacher is not None:
            teacher.report_eval(last_eval["eval/success"])
    bar = tqdm(range(start + 1, cfg.steps + 1), initial=start, total=cfg.steps,
               disable=not cfg.progress, desc=f"train {cfg.algo}", unit="step", dynamic_ncols=True)
    try:
        for step in bar:
            t0 = time.perf_counter()
            # 1. on-policy rollouts with the current student
            trajs, summ = _rollouts(policy, cfg, train_seeds(cfg, step), G, cfg.rollout.temperature,
                                    sample_seed=cfg.seed * 1_000_003 + step, progress=False)
            t_roll = time.perf_counter() - t0
            data = _step_data(trajs, cfg, G)
            # 2-3. teacher scoring, loss, backward, optimizer step
            m = {}
            for _ in range(cfg.optim.updates_per_step):
                m, scores = _update(model, opt, teacher, contexts, data, cfg, pad_id)
            t_train = time.perf_counter() - t0 - t_roll
            m.update(teacher.after_step(step) if teacher is not None else {})
            if contexts is not None:
                for t in trajs:
                    contexts.bandit.update(t.skills, float(t.success))
            m = {k.replace("teacher_", "teacher/"): v for k, v in m.items()}
            m["rollout/success"] = sum(t.success for t in trajs) / len(trajs)
            m["rollout/reward"] = sum(t.total_reward for t in trajs) / len(trajs)
            m["rollout/turns"] = sum(len(t.turns) for t in trajs) / len(trajs)
            m.update(summarize_values([t.num_action_tokens() for t in trajs], "response_len",
                                      pcts=(95,)))
            n_tok = sum(len(t.token_ids()) for t in trajs)
            m["time/rollout_s"], m["time/train_s"] = t_roll, t_train
            m["time/tokens_per_s"] = n_tok / max(t_train, 1e-9)
            m["time/action_tokens_per_s_rollout"] = summ.action_tokens / max(t_roll, 1e-9)
            # 4. held-out evaluation
            is_last = step == cfg.steps
            if (cfg.eval_every and step % cfg.eval_every == 0) or is_last:
                last_eval = evaluate(policy, cfg)
                m.update(last_eval)
                if teacher is not None:
                    teacher.report_eval(last_eval["eval/success"])
                _save_samples(samples_dir / f"step_{step:06d}.jsonl", trajs, scores, tokenizer,
                              cfg.samples_to_keep)
            metrics.log(step, m)
            history.append({"step": step, **m})
            bar.set_postfix(loss=f"{m['loss/total']:.3g}", succ=f"{m['rollout/success']:.0%}",
                            kl=f"{m.get('kl/mean', float('nan')):.3g}")
            # 5. checkpoint
            if step % cfg.checkpoint_every == 0 or is_last:
                state = {"teacher": teacher.state_dict() if teacher is not None else None,
                         "bandit": contexts.bandit.to_dict() if contexts is not None else None}
                save_checkpoint(run_dir, step, model, opt, state, keep=cfg.keep_checkpoints)
    finally:
        bar.close()
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

