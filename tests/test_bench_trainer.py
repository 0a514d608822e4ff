"""scripts/bench_trainer.py: --help, the default shape with and without shared prefixes, and
--episodes (the trainer's update on real episodes, shared vs unshared) on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_trainer.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*flags: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True,
                         env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


def test_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and "--episodes" in out.stdout and "--shared-prompt" in out.stdout


def test_default_shape_reports_shared_and_unshared_against_the_floor():
    res = _run("--hidden", "32", "--layers", "1", "--vocab", "128", "--batch", "2", "--seq", "64",
               "--repeats", "1")
    assert res["shared_prompt_tokens"] == 32
    for k in ("step_over_floor", "unshared_step_over_floor", "unshared_over_shared"):
        assert res[k] > 0


def test_episodes_compare_the_update_shared_and_unshared():
    res = _run("--episodes", "--hidden", "32", "--layers", "1", "--repeats", "1",
               "--envs", "ToolWorld-Lite-v0")
    r = res["envs"]["ToolWorld-Lite-v0"]
    assert r["episodes"] == 8 and 0.2 < r["shared_token_frac"] < 1
    assert r["speedup"] > 0 and r["peak_unshared_over_shared"] > 0
