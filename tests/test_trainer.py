"""The trainer loop on a tiny random-weight model: every algorithm runs, writes its run folder,
and the config rejects bad values before anything is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from agentsd.distill.config import (
    LossConfig,
    ModelConfig,
    RolloutSettings,
    TeacherConfig,
    TrainConfig,
)
from agentsd.distill.trainer import micro_batches, train, train_seeds
from agentsd.distill.update import build_batch as _step_data
from agentsd.hints import TeacherContextConfig
from agentsd.trajectory import Trajectory, Turn

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(tmp_path, algo="opd", **kw):
    base = dict(algo=algo, steps=2, out_dir=str(tmp_path / algo), eval_every=0, eval_at_start=False,
                checkpoint_every=1, progress=False, tensorboard=False, samples_to_keep=2,
                model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=2,
                                        max_tokens=6, eval_tasks=2))
    base.update(kw)
    return TrainConfig(**base)


def test_rollout_success_is_the_mean_over_the_step(tmp_path, monkeypatch):
    import agentsd.distill.trainer as T

    orig = T._rollouts

    def first_of_each_step_solved(*a, **k):  # the last one fails: a per-trajectory value shows
        trajs, summ = orig(*a, **k)
        for i, t in enumerate(trajs):
            t.success = i == 0
        return trajs, summ

    monkeypatch.setattr(T, "_rollouts", first_of_each_step_solved)
    res = train(tiny_cfg(tmp_path, "opd", steps=1))  # opd: the skill bandit reads successes too
    assert res.history[-1]["rollout/success"] == 0.25


# ---- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, field", [
    (["--loss.alpha", "1.5"], "LossConfig.alpha"),
    (["--teacher.mode", "stale"], "TeacherConfig.mode"),
    (["--algo", "ppo"], "TrainConfig.algo"),
    (["--rollout.samples-per-task", "0"], "RolloutSettings.samples_per_task"),
    (["--optim.lr", "-1"], "OptimConfig.lr"),
    (["--teacher.context.exposure", "2"], "TeacherContextConfig.exposure"),
])
def test_bad_config_names_the_field(flags, field):
    from agentsd.distill.flags import parse_config

    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        parse_config(flags)


def test_cross_field_validation():
    with pytest.raises(ValueError, match="samples_per_task"):
        TrainConfig(algo="grpo", rollout=RolloutSettings(samples_per_task=1))

    with pytest.raises(ValueError, match="nothing to see"):
        TrainConfig(algo="opsd", teacher=TeacherConfig(context=TeacherContextConfig(
            views=("skills",))))
    opsd = TrainConfig(algo="opsd", teacher=TeacherConfig(context=TeacherContextConfig(
        views=("skills", "plan"))))
    assert opsd.teacher_views().views == ("plan",)  # plain OPSD never shows skills


def test_cli_rejects_bad_config_before_loading_anything(tmp_path):
    code = ("import sys; from agentsd.cli import main; rc = main(['train', '--loss.kind', 'mse', "
            f"'--out-dir', {str(tmp_path / 'r')!r}]); "
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "LossConfig.kind" in r.stderr
    assert not (tmp_path / "r").exists()


def test_config_file_roundtrip(tmp_path):
    cfg = tiny_cfg(tmp_path, loss=LossConfig(kind="jsd", alpha=0.5, top_k=8))
    path = tmp_path / "c.json"
    from agentsd.distill.config import config_to_dict, load_config

    path.write_text(json.dumps(config_to_dict(cfg)))
    assert load_config(path) == cfg
    from agentsd.distill.flags import parse_config

    over, _ = parse_config(["--config", str(path), "--loss.alpha", "0.25"])
    assert over.loss.alpha == 0.25 and over.loss.top_k == 8


# ---- batching and weights -------------------------------------------------------------------

def test_micro_batches_respect_token_budget():
    lengths = [10, 50, 20, 50, 5, 120]
    mbs = micro_batches(lengths, 100)
    assert sorted(i for mb in mbs for i in mb) == list(range(6))
    for mb in mbs:
        assert len(mb) == 1 or max(lengths[i] for i in mb) * len(mb) <= 100


def _traj(reward, success):
    return Trajectory(env_id="x", turns=[Turn(prompt_ids=[1], action_ids=[2], action_logprobs=[-1.0])],
                      total_reward=reward, success=success)


def test_step_data_grpo_routing_and_rft():
    trajs = [_traj(1.0, True), _traj(0.0, False), _traj(0.0, False), _traj(0.0, False)]
    g = _step_data(trajs, TrainConfig(algo="grpo", rollout=RolloutSettings(samples_per_task=2)), 2)
    assert g.advantages == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-4)
    assert g.grpo_w == [1.0] * 4 and g.distill_w == [0.0] * 4
    r = _step_data(trajs, TrainConfig(algo="rft"), 2)
    assert r.sft_w == [1.0, 0.0, 0.0, 0.0]
    cfg = TrainConfig(loss=LossConfig(success_routing=True, grpo_coef=0.5),
                      rollout=RolloutSettings(samples_per_task=2))
    o = _step_data(trajs, cfg, 2)
    assert o.grpo_w == [0.5, 0.0, 0.0, 0.0] and o.distill_w == [0.0, 1.0, 1.0, 1.0]
    paced = _step_data(trajs, TrainConfig(loss=LossConfig(pass_rate_a=1, pass_rate_b=1)), 2)
    assert paced.distill_w == pytest.approx([0.25, 0.25, 0.0, 0.0])


def test_train_seeds_are_a_function_of_seed_and_step():
    cfg = TrainConfig()
    assert train_seeds(cfg, 3) == train_seeds(cfg, 3)
    assert train_seeds(cfg, 3) != train_seeds(cfg, 4)
    import agentsd

    test_lo = agentsd.split_seeds(cfg.rollout.env, "test", 1)[0]
    assert all(s < test_lo for s in train_seeds(cfg, 1))


# ---- the loop -------------------------------------------------------------------------------

@pytest.mark.parametrize("algo, extra", [
    ("opd", {}),
    # plain OPSD with step-wise hints: one teacher row per turn, batched
    ("opsd", {"teacher": TeacherConfig(mode="ema", context=TeacherContextConfig(
        views=("plan",), exposure_mode="step", exposure=0.5))}),
    ("grpo", {}),
    ("rft", {}),
    ("opd", {"model": ModelConfig(name="tiny-random", tiny_hidden=16, lora=False),
             "teacher": TeacherConfig(mode="sync", sync_every=1)}),  # full fine-tuning
    pytest.param("opd", {"loss": LossConfig(kind="jsd", alpha=0.5, top_k=16),
                         "teacher": TeacherConfig(mode="live")}, marks=pytest.mark.slow),
])
def test_each_algorithm_runs_and_writes_its_run_folder(tmp_path, algo, extra):
    cfg = tiny_cfg(tmp_path, algo, **extra)
    res = train(cfg)
    run = res.run_dir
    from agentsd.distill.metrics import read_metrics

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert (run / "checkpoints" / "latest").read_text() == "step_000002"
    assert len(list((run / "checkpoints").glob("step_*"))) == 2
    last = rows[-1]
    assert "eval/success" in last and 0 <= last["eval/success"] <= 1
    assert last["optim/updated"] in (0.0, 1.0)
    if algo in ("opd", "opsd"):
        assert last["optim/updated"] == 1.0
        assert "kl/mean" in last and "gap/p95" in last and "teacher/age" in last
        assert "is/ratio_mean" in last or cfg.loss.kind == "jsd"
    if algo == "grpo":
        assert "kl/mean" not in last
    if cfg.teacher.mode == "sync" and algo == "opd":
        assert last["teacher/sync"] == 1.0 and last["teacher/age"] == 0.0
    [sample_file] = list((run / "samples").glob("*.jsonl"))
    samples = [json.loads(x) for x in sample_file.read_text().splitlines()]
    assert len(samples) == 2 and len(samples[0]["tokens"]) == len(samples[0]["mask"])
    if algo == "opd":
        assert len(samples[0]["teacher_logp"]) == len(samples[0]["tokens"])
        from agentsd.distill.report import write_report

        out = write_report(run)
        page = out["html"].read_text()
        assert out["png"].stat().st_size > 1000 and "teacher" in page and "<span" in page


def test_training_changes_only_the_adapter_and_frozen_teacher_stays_base(tmp_path):
    from agentsd.distill.config import OptimConfig
    from agentsd.distill.trainer import build_student

    cfg = tiny_cfg(tmp_path, "opd", steps=1, optim=OptimConfig(lr=1e-2))
    model, tok = build_student(cfg)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train(cfg, model=model, tokenizer=tok)
    for n, p in model.named_parameters():
        if p.requires_grad:
            continue
        assert torch.equal(p, base[n]), n
    assert any(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_pipeline_writes_a_complete_run_folder(tmp_path):
    import dataclasses

    from agentsd.distill.pipeline import PipelineConfig, quickstart_config, run_pipeline

    qs = quickstart_config(out_dir=str(tmp_path / "pipe"), steps=1)
    train_cfg = dataclasses.replace(
        qs.train, progress=False, tensorboard=True,
        model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
        rollout=dataclasses.replace(qs.train.rollout, max_tokens=6, eval_tasks=2))
    summary = run_pipeline(PipelineConfig(train=train_cfg, warm_steps=1, warm_demos=2, skill_demos=2),
                           log=lambda *a: None)
    run = tmp_path / "pipe"
    assert (run / "warm_start" / "checkpoints" / "latest").exists()
    assert summary["warm_start"] and summary["teacher_acting_success"] is not None
    for name in ("demos.jsonl", "metrics.jsonl", "config.json", "learning_curve.png",
                 "report.html", "summary.json", "checkpoints/latest"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir()), "no TensorBoard events"
    assert list((run / "skills").glob("*/*/SKILL.md")), "the teacher's skill library is empty"
    assert summary["eval_before"] is not None and summary["eval_after"] is not None
    assert json.loads((run / "summary.json").read_text())["steps"] == 1


@pytest.mark.slow
def test_compare_and_bench_scripts_smoke(tmp_path):
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, str(root / "scripts" / "compare.py"), "--model", "tiny-random",
                        "--algos", "grpo", "opd", "--seeds", "0", "1", "--steps", "2", "--eval-every",
                        "1", "--tasks", "1", "--warm-steps", "1", "--workers", "2",
                        "--samples", "2", "--max-turns", "1", "--max-tokens", "4", "--eval-tasks", "2",
                        "--out", str(out)], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "results.md").read_text()
    assert "| opd |" in md and "warm start" in md and "teacher acting" in md
    assert (out / "learning_curve.png").stat().st_size > 1000
    r = subprocess.run([sys.executable, str(root / "scripts" / "bench_trainer.py"), "--hidden", "64",
                        "--layers", "2", "--vocab", "512", "--batch", "2", "--seq", "32",
                        "--repeats", "1"], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["step_over_floor"] > 0 and res["peak_mib_copy"] > 0
