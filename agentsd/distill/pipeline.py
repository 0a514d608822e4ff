"""The main job: skills -> warm start -> OPD training -> held-out evaluation -> report.

One call (:func:`run_pipeline`) on one in-memory model, writing a run folder::

    <run>/demos.jsonl           oracle episodes on train-split tasks (the skill summarizer's input)
    <run>/skills_source/        shipped skills + ones summarized from those episodes
    <run>/warm_start/           the SFT run on oracle demonstrations (its own metrics, checkpoint)
    <run>/skills/               the library the teacher reads (a snapshot of skills_source)
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
    DemoConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutSettings,
    TeacherConfig,
    TrainConfig,
)
from agentsd.distill.config_fields import _f, check_fields

__all__ = ["PipelineConfig", "run_pipeline", "quickstart_config"]


@dataclass(frozen=True)
class PipelineConfig:
    """The stages around training. ``train`` configures the distillation run itself; the warm
    start is an SFT run on oracle demonstrations with the same env, model and teacher context
    (``warm_steps`` steps of ``warm_demos`` demos, ``demo_teacher_frac`` of them in the teacher's
    context); ``warm_steps=0`` skips it."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    warm_steps: int = _f(10, kind=int, ge=0)
    warm_demos: int = _f(8, kind=int, ge=1)
    warm_lr: float = _f(1e-3, gt=0)
    demo_teacher_frac: float = _f(0.5, ge=0, le=1)
    #: oracle episodes on train seeds the skill summarizer reads (no model needed)
    skill_demos: int = _f(16, kind=int, ge=1)
    shipped_skills: bool = True

    def __post_init__(self) -> None:
        check_fields(self)

    def warm_config(self, skills_dir: str) -> TrainConfig:
        """The warm-start run: SFT on oracle demos into ``<run>/warm_start``."""
        tc = self.train
        return dataclasses.replace(
            tc, algo="sft", steps=max(self.warm_steps, 1), out_dir=str(Path(tc.out_dir) / "warm_start"),
            eval_every=0, eval_at_start=False, eval_at_end=False, resume=False,
            checkpoint_every=max(self.warm_steps, 1),
            rollout=dataclasses.replace(tc.rollout, tasks_per_step=self.warm_demos, samples_per_task=1),
            optim=dataclasses.replace(tc.optim, lr=self.warm_lr, lr_schedule="linear"),
            demos=DemoConfig(source="oracle", teacher_frac=self.demo_teacher_frac),
            teacher=dataclasses.replace(tc.teacher, skills_dir=skills_dir))


def quickstart_config(out_dir: str = "runs/quickstart", seed: int = 0, steps: int = 3,
                      warm_steps: int = 10) -> PipelineConfig:
    """The embedded default with a budget for a busy 2-core CPU (at most about 15 minutes): a
    warm start of ``warm_steps`` x 8 oracle demos on Sokoban-Easy-v0, then ``steps`` OPD steps of
    4 tasks x 2 samples (frozen teacher = the warm model reading skills and the per-turn
    reference reply), held-out evaluation on 24 test tasks before and after (greedy and at
    temperature 1), and the teacher context acting on the same tasks."""
    from agentsd.hints import TeacherContextConfig

    train = TrainConfig(
        algo="opd", steps=steps, seed=seed, out_dir=out_dir, eval_every=0, checkpoint_every=steps,
        resume=False, samples_to_keep=4,
        model=ModelConfig(name="smollm2", lora=True, lora_rank=16, lora_alpha=32.0),
        rollout=RolloutSettings(env="Sokoban-Easy-v0", tasks_per_step=4, samples_per_task=2,
                                max_turns=2, max_tokens=24, eval_tasks=24, temperature=1.0),
        loss=LossConfig(kind="reverse_kl", is_clip=2.0),
        teacher=TeacherConfig(mode="frozen", context=TeacherContextConfig(
            views=("skills", "reference"), max_skills=2, max_skill_chars=500)),
        optim=OptimConfig(lr=1e-3, max_tokens_per_micro_batch=1024),
    )
    return PipelineConfig(train=train, warm_steps=warm_steps)


def run_pipeline(cfg: PipelineConfig, model: Any = None, tokenizer: Any = None,
                 log: Any = print) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the summary also written to
    ``summary.json``."""
    run = Path(cfg.train.out_dir)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    model, tokenizer = _timed(timings, "load_s", _load, cfg, model, tokenizer, log)
    skills_dir, n_new, n_total = _timed(timings, "skills_s", _skills, cfg, run, tokenizer, log)
    warm_dir = _timed(timings, "warm_start_s", _warm_start, cfg, skills_dir, model, tokenizer, log)
    tc, res = _timed(timings, "train_s", _distill, cfg, skills_dir, warm_dir, model, tokenizer, log)
    from agentsd.distill.report import write_report

    out = write_report(run)  # 5. report
    log(f"[5/5] report: {out['html']}  curve: {out['png']}")
    result = _summary(tc, run, res, warm_dir, n_new, n_total, out, timings, t0)
    (run / "summary.json").write_text(json.dumps(result, indent=1))
    log(f"held-out success {_pct(result['eval_before'])} -> {_pct(result['eval_after'])}, parse "
        f"rate {_pct(result['parse_rate_before'])} -> {_pct(result['parse_rate_after'])} "
        f"({tc.rollout.eval_tasks} test tasks, greedy); at T=1 {_pct(result['eval_t1_before'])} -> "
        f"{_pct(result['eval_t1_after'])}; teacher acting {_pct(result['teacher_acting_success'])}")
    return result


def _timed(timings: dict[str, float], key: str, fn: Any, *args: Any) -> Any:
    t = time.perf_counter()
    out = fn(*args)
    timings[key] = time.perf_counter() - t
    return out


def _load(cfg: PipelineConfig, model: Any, tokenizer: Any, log: Any) -> tuple[Any, Any]:
    """The base model (full weights; each training stage wraps its own adapter), frozen."""
    tc = cfg.train
    if model is None:
        from agentsd.distill.trainer import build_student

        log(f"[1/5] loading {tc.model.name} ...")
        model, tokenizer = build_student(dataclasses.replace(
            tc, model=dataclasses.replace(tc.model, lora=False)))
    model.requires_grad_(False)
    return model, tokenizer


def _skills(cfg: PipelineConfig, run: Path, tokenizer: Any, log: Any) -> tuple[Path, int, int]:
    """1. Skills: the shipped library plus skills summarized from oracle episodes on train seeds."""
    from agentsd.demos import oracle_demos
    from agentsd.distill.trainer import train_seeds
    from agentsd.store import write_jsonl

    tc = cfg.train
    seeds = train_seeds(dataclasses.replace(tc, seed=tc.seed + 99_991), 0, cfg.skill_demos)
    demos = oracle_demos(tc.rollout.env, seeds, tokenizer, max_turns=tc.rollout.max_turns)
    write_jsonl(demos, run / "demos.jsonl")
    skills_dir = run / "skills_source"
    n_new, n_total = _build_skills(demos, tc.rollout.env, skills_dir, cfg.shipped_skills)
    log(f"[2/5] skills: {n_new} summarized from {len(demos)} oracle episodes, {n_total} in the "
        "teacher's library")
    return skills_dir, n_new, n_total


def _warm_start(cfg: PipelineConfig, skills_dir: Path, model: Any, tokenizer: Any, log: Any) -> str:
    """2. Warm start: SFT on oracle demonstrations (a share in the teacher's context); returns
    its run folder ("" without one)."""
    import copy

    from agentsd.distill.trainer import prepare_student, train

    if cfg.warm_steps <= 0:
        return ""
    wc = cfg.warm_config(str(skills_dir))
    log(f"[3/5] warm start: SFT on {cfg.warm_steps} x {cfg.warm_demos} oracle demos "
        f"({cfg.demo_teacher_frac:.0%} in the teacher's context) -> {wc.out_dir}")
    train(wc, model=prepare_student(copy.deepcopy(model), wc), tokenizer=tokenizer)
    return wc.out_dir


def _distill(cfg: PipelineConfig, skills_dir: Path, warm_dir: str, model: Any, tokenizer: Any,
             log: Any) -> tuple[Any, Any]:
    """3-4. Distillation from the warm start, held-out evaluation before and after."""
    from agentsd.distill.trainer import prepare_student, train

    tc = dataclasses.replace(
        cfg.train, eval_at_start=True,
        model=dataclasses.replace(cfg.train.model, init_from=warm_dir),
        teacher=dataclasses.replace(cfg.train.teacher, skills_dir=str(skills_dir)))
    log(f"[4/5] training {tc.algo} for {tc.steps} steps from the warm start (teacher: "
        f"{tc.teacher.mode}; held-out eval on {tc.rollout.eval_tasks} test tasks before and after)")
    return tc, train(tc, model=prepare_student(model, tc), tokenizer=tokenizer)


def _summary(tc: Any, run: Path, res: Any, warm_dir: str, n_new: int, n_total: int,
             out: dict[str, Any], timings: dict[str, float], t0: float) -> dict[str, Any]:
    evals = [h for h in res.history if "eval/success" in h]
    before, after = (evals[0], evals[-1]) if evals else ({}, {})
    return {
        "run_dir": str(run), "env": tc.rollout.env, "model": tc.model.name, "algo": tc.algo,
        "warm_start": warm_dir or None, "steps": res.steps_done,
        "skills_summarized": n_new, "skills_in_library": n_total,
        "eval_tasks": tc.rollout.eval_tasks,
        "eval_before": before.get("eval/success"), "eval_after": after.get("eval/success"),
        "parse_rate_before": before.get("eval/parse_rate"),
        "parse_rate_after": after.get("eval/parse_rate"),
        "eval_t1_before": before.get("eval/success_t1"), "eval_t1_after": after.get("eval/success_t1"),
        "teacher_acting_success": before.get("teacher/eval_success"),
        "teacher_acting_parse_rate": before.get("teacher/eval_parse_rate"),
        "eval_reward_before": before.get("eval/reward"), "eval_reward_after": after.get("eval/reward"),
        "report": str(out["html"]), "learning_curve": str(out["png"]),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


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
