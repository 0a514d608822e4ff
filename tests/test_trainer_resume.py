"""A training run killed with SIGKILL resumes from its last checkpoint and produces the same
metrics as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentsd.distill.metrics import read_metrics

FLAGS = ["--model.name", "tiny-random", "--model.tiny-hidden", "16", "--model.lora-rank", "4",
         "--model.lora-dropout", "0.1",  # dropout draws from the torch RNG: its state must resume
         "--teacher.mode", "ema", "--teacher.ema-decay", "0.5",
         "--rollout.tasks-per-step", "2", "--rollout.samples-per-task", "2",
         "--rollout.max-turns", "2", "--rollout.max-tokens", "6", "--rollout.eval-tasks", "2",
         "--optim.lr", "0.01", "--eval-every", "2", "--eval-at-start", "false",
         "--checkpoint-every", "1", "--steps", "4", "--progress", "false",
         "--tensorboard", "false", "--threads", "1"]


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "agentsd.distill.cli", *FLAGS, "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _deterministic(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = _start(ref_dir)
    victim = _start(run_dir)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 540
    while time.time() < deadline:
        if latest.exists() and latest.read_text() >= "step_000002":
            break
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        time.sleep(0.2)
    else:
        raise AssertionError("the run never wrote its step-2 checkpoint")
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in read_metrics(run_dir))
    assert killed_at < 4

    resumed = _start(run_dir)
    out, err = resumed.communicate(timeout=540)
    assert resumed.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["resumed_from"] >= 2

    out_ref, err_ref = ref.communicate(timeout=540)
    assert ref.returncode == 0, err_ref[-3000:]
    a, b = read_metrics(ref_dir), read_metrics(run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert _deterministic(a) == _deterministic(b)
    assert any("kl/mean" in r and r["kl/mean"] != 0 for r in a)


def _start_with(out: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "agentsd.distill.cli", *FLAGS, *extra,
                             "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_sigkill_then_resume_across_a_skill_refresh(tmp_path):
    """Dynamic skills (refresh every 2 steps): killed after step 2's checkpoint, the resumed run
    refreshes again at step 4 and ends with the metrics and library versions of an
    uninterrupted run."""
    from agentsd.distill.skill_refresh import SkillVersions

    extra = ["--skills.refresh-every", "2", "--skills.window", "2"]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = _start_with(ref_dir, extra)
    victim = _start_with(run_dir, extra)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 540
    while not (latest.exists() and latest.read_text() >= "step_000002"):
        assert time.time() < deadline, "the run never wrote its step-2 checkpoint"
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(r["step"] for r in read_metrics(run_dir)) < 4
    resumed = _start_with(run_dir, extra)
    _, err = resumed.communicate(timeout=540)
    assert resumed.returncode == 0, err[-3000:]
    _, err_ref = ref.communicate(timeout=540)
    assert ref.returncode == 0, err_ref[-3000:]
    assert _deterministic(read_metrics(ref_dir)) == _deterministic(read_metrics(run_dir))

    def bodies(run):
        v = SkillVersions(run, "Sokoban-Easy-v0")
        return [[(s.name, s.body, s.stats) for s in v.load(e["version"])] for e in v.index()]

    assert [e["step"] for e in SkillVersions(run_dir).index()] == [0, 2, 4]
    assert bodies(ref_dir) == bodies(run_dir)
