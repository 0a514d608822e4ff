"""scripts/bench_vs_trl.py: --help, the agentsd side on a tiny model (fast), both sides behind
``slow`` (TRL is an optional extra: agentsd[bench])."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_vs_trl.py"
TINY = ["--model", "tiny-random", "--tiny-hidden", "16", "--batch", "2", "--max-new-tokens", "4",
        "--steps", "1", "--warmup", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and "--max-new-tokens" in out.stdout and "TRL" in out.stdout


def test_agentsd_side_runs_one_opd_step():
    out = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--worker", "agentsd"], capture_output=True,
                         text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert res["step_s"] > 0 and res["gen_tokens_per_step"] == 8 and res["peak_mb"] > 0


@pytest.mark.slow
def test_both_sides_side_by_side(tmp_path):
    if importlib.util.find_spec("trl") is None:
        pytest.skip("TRL is not installed (pip install 'agentsd[bench]')")
    out = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["speedup_trl_over_agentsd"] > 0 and r["trl"]["gen_tokens_per_step"] > 0
    assert "TRL / agentsd: time per step" in out.stdout
