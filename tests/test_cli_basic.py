"""The basic CLI commands run as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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


# ---- conventions: python -m, --version, exit codes, defaults, where outputs go ------------------

def _module(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentsd", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_python_dash_m_and_version():
    import agentsd

    out = _module("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"agentsd {agentsd.__version__}"
    out = _module("envs")
    assert out.returncode == 0 and "Sokoban-v0" in out.stdout


def test_exit_codes_usage_2_documented_in_help():
    assert _module("--no-such-flag").returncode == 2
    assert _module("play", "--env", "Nope-v0").returncode == 2
    out = _module("skills", "show", "no-such-skill")
    assert out.returncode == 2 and "no skill named" in out.stderr
    out = _module("eval-code", "--problems", "no-such-file", "--samples", "canonical")
    assert out.returncode == 2 and "error:" in out.stderr
    assert "exit status: 0 success; 1 runtime failure; 2 usage error" in _module("--help").stdout.replace("\n", " ")


def test_runtime_failures_exit_1_without_a_traceback(monkeypatch, capsys):
    from agentsd import cli

    def boom(args):
        raise RuntimeError("disk on fire")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["envs"].set_defaults(func=boom)
    assert cli.main(["envs"]) == 1
    assert "failed: RuntimeError: disk on fire" in capsys.readouterr().err


def test_every_flag_shows_its_default():
    import argparse

    from agentsd.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.option_strings and action.dest not in ("help", "version"):
                yield path, action, parser.formatter_class("x")._get_help_string(action)

    # `train`'s flags come from the trainer config through tyro: tests/test_config_flags.py
    missing = [f"{p} {a.option_strings[0]}" for p, a, text in walk(build_parser(), "agentsd")
               if "default" not in text.lower() and not p.startswith("agentsd train")]
    assert not missing, missing


def test_skills_build_never_touches_the_shipped_library_by_default(tmp_path):
    from agentsd.skills.cli import DEFAULT_BUILD_OUT
    from agentsd.skills.library import default_root
    from agentsd.skills.scripted import scripted_episode

    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps(scripted_episode("Sokoban-Easy-v0", seed=s, policy="oracle",
                                                       split="train").to_dict()) + "\n" for s in range(2)))
    before = sorted((p, p.stat().st_mtime_ns) for p in default_root().rglob("*") if p.is_file())
    out = _module("skills", "build", "--env", "Sokoban-Easy-v0", "--from", str(src), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / DEFAULT_BUILD_OUT / "Sokoban-Easy-v0").is_dir()
    assert sorted((p, p.stat().st_mtime_ns) for p in default_root().rglob("*") if p.is_file()) == before


# ---------------------------------------------------------------------------------------------
# issue 23: counts, ports and hub ids fail before anything loads, in one line

@pytest.mark.parametrize("argv,flag", [
    (["rollout", "--env", "Sokoban-v0", "-n", "-3"], "--num-tasks"),
    (["rollout", "--env", "Sokoban-v0", "--samples", "0"], "--samples"),
    (["rollout", "--env", "Sokoban-v0", "--max-tokens", "-1"], "--max-tokens"),
    (["sandbox", "serve", "--port", "99999"], "--port"),
    (["sandbox", "serve", "--port", "-1"], "--port"),
    (["sandbox", "serve", "--concurrency", "0"], "--concurrency"),
    (["eval-code", "--samples", "canonical", "--workers", "0"], "--workers"),
])
def test_bad_counts_and_ports_are_usage_errors(argv, flag, capsys, monkeypatch):
    from agentsd import cli
    from agentsd.policy import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and flag in err and "Traceback" not in err


def test_uncached_hub_id_fails_in_one_line(monkeypatch):
    from huggingface_hub import constants

    from agentsd.policy import models

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(models.ModelNotFoundError) as e:
        models.load_tokenizer.__wrapped__("someorg/agentsd-not-cached")
    assert "HF_HUB_OFFLINE" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(models.ModelNotFoundError, match="unreachable") as e:
        models.load_model("someorg/agentsd-not-cached", device="cpu")
    assert "\n" not in str(e.value)
