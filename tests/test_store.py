"""The trajectory store: JSONL round trip and crash tolerance, Parquet, filtering, `agentsd show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from agentsd.cli import main as cli_main
from agentsd.store import (
    StoreError,
    TrajectoryWriter,
    filter_trajectories,
    group_by,
    load,
    read_parquet,
    read_trajectories,
    write_jsonl,
    write_parquet,
)
from agentsd.trajectory import Trajectory, Turn


def _traj(i: int, success: bool) -> Trajectory:
    return Trajectory(
        env_id="Sokoban-v0", seed=i, task_id=f"task-{i % 2}", policy="hf:tiny", success=success,
        total_reward=0.1 * i - 0.3333333333333333, stop_reason="terminated" if success else "max_turns",
        spec_kwargs={"difficulty": "easy", "nested": {"a": [1, 2]}},
        sampling={"temperature": 0.7, "stop": ["</answer>"], "seed": None},
        turns=[Turn(observation=[{"role": "user", "content": f"board {i} ünïcode ✓"}],
                    prompt_ids=[1, 2, 3 + i], action_ids=[4, 5], action_logprobs=[-0.1234567890123, -2e-9],
                    action_text="<answer>Up</answer>", reward=-0.1, reward_terms={"step": -0.1},
                    parse="ok", finish_reason="stop", info={"turn": 1, "moves": ["Up"]},
                    timings={"generate": 0.5, "env": 1e-5}),
               Turn(observation=[{"role": "tool", "content": "x", "tool_call_id": "c1"}],
                    prompt_ids=[6], action_ids=[7], action_logprobs=[-0.3])],
        final_observation=[{"role": "user", "content": "done"}], skills=["push-first"],
        meta={"sample": i % 3, "error": None})


@pytest.fixture
def trajs():
    return [_traj(i, success=i % 2 == 0) for i in range(5)]


def test_jsonl_round_trip_is_identical(tmp_path, trajs):
    p = tmp_path / "t.jsonl"
    assert write_jsonl(trajs, p) == 5
    assert read_trajectories(p) == trajs
    assert write_jsonl(trajs[:2], p, append=True) == 2 and len(read_trajectories(p)) == 7


def test_parquet_round_trip_is_identical(tmp_path, trajs):
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    write_parquet(trajs, p)
    assert read_parquet(p) == trajs and load(p) == trajs
    table = pq.read_table(str(p), columns=["env_id", "success", "num_turns"])
    assert table.column("num_turns").to_pylist() == [2] * 5


def test_truncated_last_line_is_tolerated_and_appending_resumes_cleanly(tmp_path, trajs):
    p = tmp_path / "t.jsonl"
    write_jsonl(trajs[:3], p)
    data = p.read_bytes()
    p.write_bytes(data[:-40])  # the last record was cut mid-write
    with pytest.warns(UserWarning, match="killed mid-record"):
        assert read_trajectories(p) == trajs[:2]
    with pytest.raises(StoreError, match=r"t.jsonl:3"):
        read_trajectories(p, strict=True)
    with TrajectoryWriter(p) as w:  # a new writer starts on a fresh line
        w.write(trajs[3])
    with pytest.warns(UserWarning, match="corrupt"):
        assert read_trajectories(p) == [*trajs[:2], trajs[3]]


def test_a_killed_writer_loses_at_most_the_record_in_flight(tmp_path):
    """A real writer process is SIGKILLed while appending; every completed record survives."""
    p = tmp_path / "live.jsonl"
    code = textwrap.dedent(f"""
        import sys
        from agentsd.store import TrajectoryWriter
        from agentsd.trajectory import Trajectory, Turn
        w = TrajectoryWriter({str(p)!r})
        i = 0
        while True:
            w.write(Trajectory(env_id="E-v0", seed=i, turns=[Turn(prompt_ids=list(range(2000)))]))
            i += 1
            if i == 50:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    proc.kill()
    proc.wait()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = read_trajectories(p)
    assert len(got) >= 50
    assert [t.seed for t in got] == list(range(len(got)))
    assert all(t.turns[0].prompt_ids == list(range(2000)) for t in got)


def test_missing_file_and_newer_schema_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="agentsd rollout --out"):
        read_trajectories(tmp_path / "nope.jsonl")
    p = tmp_path / "new.jsonl"
    p.write_text(json.dumps({"env_id": "x", "schema_version": 99}) + "\n")
    with pytest.raises(StoreError, match="upgrade agentsd"):
        read_trajectories(p)


def test_filter_and_group(trajs):
    assert [t.seed for t in filter_trajectories(trajs, success=True)] == [0, 2, 4]
    assert [t.seed for t in filter_trajectories(trajs, task_id="task-1", success=False)] == [1, 3]
    assert filter_trajectories(trajs, stop_reason="terminated") == filter_trajectories(trajs, success=True)
    assert [t.seed for t in filter_trajectories(trajs, where=lambda t: t.seed > 2)] == [3, 4]
    g = group_by(trajs)
    assert list(g) == ["task-0", "task-1"] and [t.seed for t in g["task-0"]] == [0, 2, 4]
    assert {k: len(v) for k, v in group_by(trajs, "success").items()} == {True: 3, False: 2}
    assert list(group_by(trajs, lambda t: t.seed % 3)) == [0, 1, 2]


def test_show_cli(tmp_path, trajs, capsys):
    p = tmp_path / "t.jsonl"
    write_jsonl(trajs, p)
    assert cli_main(["show", str(p), "--index", "1"]) == 0
    out = capsys.readouterr().out
    assert "seed 1" in out and "=== turn 2 ===" in out and "<answer>Up</answer>" in out
    assert "ünïcode ✓" in out and "[tool] x" in out and "final observation" in out
    assert cli_main(["show", str(p), "--summary", "--success", "yes"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert cli_main(["show", str(p), "--index", "9"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert cli_main(["show", str(tmp_path / "missing.jsonl")]) == 2


def test_rollout_cli_writes_trajectories_that_load_back(tmp_path, monkeypatch):
    """`agentsd rollout` end to end with the hf backend on a tiny random model (the real
    SmolLM2 run is the slow test in test_rollout_e2e.py)."""
    from agentsd.policy import HFPolicy, ModelNotFoundError
    from agentsd.policy.models import load_tokenizer, random_model

    try:
        tok = load_tokenizer("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"embedded tokenizer unavailable: {e}")
    import agentsd.policy as policy_mod

    monkeypatch.setattr(policy_mod.HFPolicy, "from_pretrained",
                        classmethod(lambda cls, name, **kw: HFPolicy(random_model(tok), tok, "hf:tiny")))
    out, summ = tmp_path / "r.jsonl", tmp_path / "s.json"
    argv = ["rollout", "--env", "Sokoban-Easy-v0", "-n", "2", "--samples", "2", "--max-tokens", "4",
            "--max-turns", "2", "--out", str(out), "--no-progress", "--summary-json", str(summ)]
    assert cli_main(argv) == 0
    trajs = read_trajectories(out)
    assert len(trajs) == 4 and {t.seed for t in trajs} == {1_000_000, 1_000_001}
    assert all(t.policy == "hf:tiny" and t.stop_reason == "max_turns" for t in trajs)
    assert json.loads(summ.read_text())["episodes"] == 4
    pq = tmp_path / "r.parquet"
    assert cli_main([*argv[:-5], "--out", str(pq), "--no-progress"]) == 0
    assert [t.token_ids() for t in read_parquet(pq)] == [t.token_ids() for t in trajs]
    assert cli_main(["rollout", "--env", "Nope-v0", "--out", str(out)]) == 2
    assert os.path.getsize(out) > 0


# ---------------------------------------------------------------------------------------------
# issue 23: wrong-shape records, stable ids, metrics rows on resume

@pytest.mark.parametrize("line", ['{"turns": 5}', '{}', '{"env_id": "E"}', '{"env_id": 3, "turns": []}',
                                  '{"env_id": "E", "turns": [5]}',
                                  '{"env_id": "E", "turns": [{"prompt_ids": "abc"}]}',
                                  '{"env_id": "E", "turns": [], "seed": "x"}'])
def test_wrong_shape_records_are_skipped_with_a_warning(tmp_path, line):
    path = tmp_path / "t.jsonl"
    write_jsonl([_traj(1, True)], path)
    with open(path, "a") as f:
        f.write(line + "\n")
    write_jsonl([_traj(2, False)], path, append=True)
    with pytest.warns(UserWarning, match="t.jsonl:2: not a trajectory record"):
        got = read_trajectories(path)
    assert [t.seed for t in got] == [1, 2]
    with pytest.raises(StoreError, match="t.jsonl:2"):
        read_trajectories(path, strict=True)


def test_ids_are_stable_across_reads(tmp_path):
    path = tmp_path / "t.jsonl"
    d = _traj(3, True).to_dict()
    del d["id"]
    path.write_text(json.dumps(d) + "\n")
    a, b = read_trajectories(path), read_trajectories(path)
    assert a[0].id == b[0].id and a[0].id


def test_metrics_resume_never_duplicates_a_row(tmp_path):
    """kill -9 before the first checkpoint: the restarted run (resume_step=0) logs step 0 again."""
    from agentsd.distill.metrics import MetricsWriter, read_metrics

    w = MetricsWriter(tmp_path, tensorboard=False)
    w.log(0, {"eval/success": 0.1})
    w.log(1, {"loss/total": 1.0})
    w._f.close()  # killed: no close(), no checkpoint
    w = MetricsWriter(tmp_path, resume_step=0, tensorboard=False)
    w.log(0, {"eval/success": 0.1})
    w.log(1, {"loss/total": 1.0})
    w.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]
    # resumed from a checkpoint at step 1; later a step is logged again: still one row per step
    w = MetricsWriter(tmp_path, resume_step=1, tensorboard=False)
    w.log(2, {"loss/total": 0.5})
    w.log(3, {"loss/total": 0.4})
    w.close()
    w = MetricsWriter(tmp_path, resume_step=2, tensorboard=False)
    w.log(2, {"loss/total": 0.5})
    w.log(3, {"loss/total": 0.4})
    w.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3]


def test_read_trajectories_reads_parquet_by_its_suffix(tmp_path):
    """The reader the README shows takes a Parquet export too (it gave [] and 'corrupt line'
    warnings)."""
    import warnings

    from agentsd.demos import oracle_demos
    from agentsd.policy.models import load_tokenizer
    from agentsd.store import read_trajectories, write_parquet

    demos = oracle_demos("Sokoban-Easy-v0", [1, 2], load_tokenizer("smollm2"))
    path = tmp_path / "x.parquet"
    write_parquet(demos, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_trajectories(path)
    assert [t.token_ids() for t in got] == [t.token_ids() for t in demos]
