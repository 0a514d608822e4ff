"""The basic CLI commands run as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentsd.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_envs_lists_registry():
    out = _cli("envs", "--json")
    assert out.returncode == 0, out.stderr
    ids = [json.loads(line)["id"] for line in out.stdout.splitlines()]
    assert "Sokoban-v0" in ids


def test_play_oracle_solves_and_prints_boards():
    out = _cli("play", "--env", "Sokoban-Hard-v0", "--seed", "4", "--policy", "oracle")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("--- turn") >= 2  # the hard plans need several turns of 8 moves
    summary = json.loads(out.stdout.rsplit("episode: ", 1)[1])
    assert summary["success"] is True and summary["seed"] == 4


def test_unknown_env_is_a_clear_error():
    out = _cli("play", "--env", "Sokobon-v0")
    assert out.returncode != 0 and "Did you mean" in out.stderr
