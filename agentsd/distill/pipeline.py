"""The main job: rollouts -> skills -> OPD training -> held-out evaluation -> report.

One call (:func:`run_pipeline`) on one in-memory model, writing a run folder::

    <run>/rollouts.jsonl        the base student's trajectories on train-split tasks
    <run>/skills/               the library the teacher reads (shipped skills + ones summarized
                                from those rollouts by the deterministic summarizer)
    <run>/metrics.jsonl, tb/    per-step metrics (held-out evaluation at step 0 and at the end)
    <run>/checkpoints/          adapter, optimizer, RNG and teacher state
    <run>/samples/              scored trajectories (student and teacher log-prob per token)
    <run>/learning_curve.png    success / held-out success / reverse KL / loss vs step
    <run>/report.html           the run, with the per-token teacher-student gap highlighted
    <run>/summary.json          what the run did, in numbers

``agentsd quickstart`` runs it on the embedded default (SmolLM2-135M-Instruct, CPU) with a tiny
budget; ``scripts/run_pipeline.py`` exposes every knob.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsd.distill.config import (
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutSettings,
    TeacherConfig,
    TrainConfig,
)

__all__ = ["PipelineConfig", "run_pipeline", "quickstart_config"]


@dataclass(frozen=True)
class PipelineConfig:
    """The stages around training. ``train`` configures the OPD run itself."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    collect_tasks: int = 4
    collect_samples: int = 2
    shipped_skills: bool = True

    def __post_init__(self) -> None:
        for n in ("collect_tasks", "collect_samples"):
            v = getattr(self, n)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"PipelineConfig.{n} must be a positive int, got {v!r}")


def quickstart_config(out_dir: str = "runs/quickstart", seed: int = 0, steps: int = 2) -> PipelineConfig:
    """The embedded default with a budget that finishes on a laptop CPU in a few minutes:
    Sokoban-Easy-v0, 2 tasks x 2 samples per step, 2 turns of at most 24 tokens, LoRA."""
    from agentsd.hints import TeacherContextConfig

    train = TrainConfig(
        algo="opd", steps=steps, seed=seed, out_dir=out_dir, eval_every=0, checkpoint_every=steps,
        resume=False, samples_to_keep=4,
        model=ModelConfig(name="smollm2", lora=True, lora_rank=8, lora_alpha=16.0),
        rollout=RolloutSettings(env="Sokoban-Easy-v0", tasks_per_step=2, samples_per_task=2,
                                max_turns=2, max_tokens=24, eval_tasks=4, temperature=0.7),
        loss=LossConfig(kind="reverse_kl", is_clip=2.0),
        teacher=TeacherConfig(mode="frozen", context=TeacherContextConfig(
            views=("skills", "plan", "notes"), max_skills=2)),
        optim=OptimConfig(lr=5e-4, max_tokens_per_micro_batch=2048),
    )
    return PipelineConfig(train=train, collect_tasks=2, collect_samples=2)


def run_pipeline(cfg: PipelineConfig, model: Any = None, tokenizer: Any = None,
                 log: Any = print) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the summary also written to
    ``summary.json``."""
    import agentsd
    from agentsd.distill.models import with_lora
    from agentsd.distill.report import write_report
    from agentsd.distill.trainer import _rollouts, train
    from agentsd.policy.hf import HFPolicy
    from agentsd.store import write_jsonl

    tc = cfg.train
    run = Path(tc.out_dir)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if model is None:
        from agentsd.distill.trainer import build_student

        log(f"[1/5] loading {tc.model.name} ...")
        model, tokenizer = build_student(dataclasses.replace(
            tc, model=dataclasses.replace(tc.model, lora=False)))
    timings["load_s"] = time.perf_counter() - t0

    # 1. rollouts with the base student on train-split tasks (seeds disjoint from evaluation)
    t = time.perf_counter()
    log(f"[2/5] rollouts: {cfg.collect_tasks} tasks x {cfg.collect_samples} samples on {tc.rollout.env}")
    policy = HFPolicy(model, tokenizer, model_id=f"hf:{tc.model.name}")
    seeds = agentsd.split_seeds(tc.rollout.env, "train", cfg.collect_tasks, offset=500_000)
    trajs, summary = _rollouts(policy, tc, seeds, cfg.collect_samples, tc.rollout.temperature,
                               sample_seed=tc.seed + 12345, progress=tc.progress)
    write_jsonl(trajs, run / "rollouts.jsonl")
    log(f"      {summary.format() if hasattr(summary, 'format') else summary}")
    timings["rollouts_s"] = time.perf_counter() - t

    # 2. skills: the shipped library plus skills summarized from these rollouts
    t = time.perf_counter()
    skills_dir = run / "skills_source"
    n_new, n_total = _build_skills(trajs, tc.rollout.env, skills_dir, cfg.shipped_skills)
    log(f"[3/5] skills: {n_new} summarized from the rollouts, {n_total} in the teacher's library")
    timings["skills_s"] = time.perf_counter() - t

    # 3-4. OPD training with held-out evaluation before and after
    t = time.perf_counter()
    tc = dataclasses.replace(tc, teacher=dataclasses.replace(tc.teacher, skills_dir=str(skills_dir)))
    log(f"[4/5] training {tc.algo} for {tc.steps} steps (teacher: {tc.teacher.mode}; "
        f"held-out eval on {tc.rollout.eval_tasks} test tasks before and after)")
    if tc.model.lora:
        import torch

        torch.manual_seed(tc.seed)
        model = with_lora(model, rank=tc.model.lora_rank, alpha=tc.model.lora_alpha,
                          dropout=tc.model.lora_dropout)
    model.train()
    res = train(tc, model=model, tokenizer=tokenizer)
    timings["train_s"] = time.perf_counter() - t

    # 5. report
    out = write_report(run)
    log(f"[5/5] report: {out['html']}  curve: {out['png']}")
    evals = [h for h in res.history if "eval/success" in h]
    result = {
        "run_dir": str(run), "env": tc.rollout.env, "model": tc.model.name, "algo": tc.algo,
        "steps": res.steps_done, "rollout_success": summary.success_rate,
        "skills_summarized": n_new, "skills_in_library": n_total,
        "eval_before": evals[0]["eval/success"] if evals else None,
        "eval_after": evals[-1]["eval/success"] if evals else None,
        "eval_reward_before": evals[0].get("eval/reward") if evals else None,
        "eval_reward_after": evals[-1].get("eval/reward") if evals else None,
        "report": str(out["html"]), "learning_curve": str(out["png"]),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (run / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _build_skills(trajs: list, env_id: str, out: Path, shipped: bool) -> tuple[int, int]:
    import shutil

    from agentsd.skills import SkillLibrary, load_library
    from agentsd.skills.summarize import summarize_deterministic, update_library

    shutil.rmtree(out, ignore_errors=True)
    lib = SkillLibrary()
    if shipped:
        try:
            lib = load_library(None, env=env_id, strict=False)
        except Exception:  # no shipped library for this env: summarized skills only
            lib = SkillLibrary()
    try:
        new = summarize_deterministic(trajs, env_id, command="agentsd quickstart")
    except ValueError:
        new = []
    update_library(lib, new)
    lib.save(out)
    out.mkdir(parents=True, exist_ok=True)
    return len(new), len(lib.for_env(env_id))
