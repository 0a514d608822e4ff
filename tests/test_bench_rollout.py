"""Smoke run of scripts/bench_rollout.py: a few tiny episodes per mode, a JSON and Markdown report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_rollout.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_rollout", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_rollout_compares_modes_in_one_run(tmp_path, tok):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = _load().main(["--random", "tiny", "--device", "cpu", "--episodes", "2", "--batches", "2",
                       "--max-tokens", "3", "--modes", "plain,kv,static", "--repeats", "2",
                       "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    rows = {r["mode"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"plain", "kv", "static"} and rows["plain"]["speedup_vs_plain"] == 1.0
    assert rows["kv"]["kv_reused_tokens"] > 0 and rows["plain"]["kv_reused_tokens"] == 0
    assert rows["kv"]["prefill_tokens"] < rows["plain"]["prefill_tokens"]
    assert all(r["repeats"] == 2 and 0 <= r["env_busy_share"] < 1 for r in rows.values())
    assert "| kv |" in md.read_text()
