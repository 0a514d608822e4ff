"""scripts/compare.py's skill-env pieces: the shuffled-library control and a tiny end-to-end run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import agentsd
from agentsd.hints import TeacherContextConfig, select_for
from agentsd.rollout import split_tasks
from agentsd.skills import load_library

ROOT = Path(__file__).resolve().parents[1]
ENV = "ToolWorld-Lite-v0"


def _compare():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "scripts" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shuffled_library_gives_every_task_another_templates_workflow(tmp_path):
    moved = _compare().shuffled_library(None, ENV, str(tmp_path / "lib"))
    own = {s.name: s.body for s in load_library(None, env=ENV).for_env(ENV)}
    lib = load_library(tmp_path / "lib", env=ENV)
    assert len(moved) == 7 and all(a != b for a, b in moved.items())
    cfg = TeacherContextConfig(views=("skills",), max_skills=2)
    for t in split_tasks(ENV, "test", 24):
        env = agentsd.make(ENV, **t.kwargs)
        obs, info = env.reset(seed=t.seed)
        first = select_for(obs, lib, ENV, cfg)[0]
        right = info["template"].replace("_", "-") + "-workflow"
        assert first.name == right  # the same slot is retrieved ...
        assert first.body != own[right] and first.body == own[moved[right]]  # ... with another rule


def test_tiny_comparison_on_lite_writes_every_arm(tmp_path):
    out = tmp_path / "cmp"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare.py"), "--env", ENV, "--model", "tiny-random",
         "--algos", "grpo", "opd-skills-fkl", "shuffled-fkl", "none-fkl", "sft-teacher",
         "--teacher-check", "opd-skills-fkl", "--seeds", "0", "--steps", "1", "--warm-steps", "1",
         "--eval-tasks", "2", "--tasks", "2", "--samples", "2", "--max-turns", "2", "--max-tokens", "8",
         "--workers", "1", "--eval-splits", "test_templates", "--warm-split", "warm", "--warm-demos", "4",
         "--skills-at", "user", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert sorted(x["algo"] for x in res["runs"]) == sorted(
        ["grpo", "opd-skills-fkl", "shuffled-fkl", "none-fkl", "sft-teacher"])
    done = [x for x in res["runs"] if "eval/success" in x]
    assert done and all("eval_test_templates/success" in x for x in done)
    assert res["warm"] is not None and "eval_test_templates/success" in res["warm_splits"]
    assert (out / "warm_demos.jsonl").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "test_templates success" in table and "Command: `python" in table
    # ToolWorld: every run and the warm start report the right first tool, and the table shows it
    assert all("eval/first_tool" in x and "curve_first_tool" in x for x in done)
    assert "eval/first_tool" in res["warm"] and "right first tool" in table
