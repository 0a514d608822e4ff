"""Command-line flags of the trainer config (agentsd.distill.flags, built on tyro): every field
of every config dataclass is a flag, shows its default, reads the historical value forms; a config
file sets the defaults and flags override it; a bad flag or value exits 2 naming the flag."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

import pytest

from agentsd.distill.config import LossConfig, TrainConfig, config_to_dict
from agentsd.distill.flags import config_flags, parse_config


def _leaves(obj, prefix=""):
    """(dotted path, value) of every leaf field of a config instance, walked independently of
    the module under test."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, v


def _as_words(v) -> list[str]:
    if isinstance(v, bool):
        return [str(v).lower()]
    if isinstance(v, tuple):
        return [",".join(v)] if v else []
    return [str(v)]


def _help(capsys, monkeypatch, argv=()) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as e:
        parse_config([*argv, "--help"])
    assert e.value.code == 0
    return re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out)


def _blocks(help_text: str, flags) -> dict[str, str]:
    """flag -> its help block (a block starts at a line whose first word is one of ``flags``)."""
    out: dict[str, str] = {}
    flag = None
    for line in help_text.splitlines():
        words = line.split()
        if words and words[0].rstrip(",") in flags:
            flag = words[0].rstrip(",")
            out[flag] = ""
        if flag:
            out[flag] += " " + " ".join(words)
    return out


def test_every_dataclass_field_has_a_flag(capsys, monkeypatch):
    paths = [p for p, _ in _leaves(TrainConfig())]
    flags = ["--" + p.replace("_", "-") for p in paths]
    assert config_flags() == flags
    blocks = _blocks(_help(capsys, monkeypatch), flags)
    for flag in flags:
        assert flag in blocks, f"{flag} missing from --help"
        assert "(default:" in blocks[flag], f"{flag} does not show its default"
    # every flag given its default value back round-trips to the default config
    argv = [w for (p, v), flag in zip(_leaves(TrainConfig()), flags, strict=True)
            for w in (flag, *_as_words(v))]
    assert parse_config(argv)[0] == TrainConfig()


def test_historical_flag_names_and_value_forms():
    cfg, _ = parse_config(["--algo", "opsd", "--model.init-from", "", "--optim.lr-schedule", "linear",
                           "--loss.kind", "jsd", "--loss.alpha", "0.5", "--loss.top-k", "64",
                           "--teacher.mode", "ema", "--teacher.context.views", "plan,reference",
                           "--resume", "false", "--tensorboard", "0", "--progress", "no",
                           "--rollout.eval-sampled", "off", "--out-dir", "runs/x"])
    assert (cfg.algo, cfg.optim.lr_schedule, cfg.loss.kind, cfg.loss.alpha, cfg.loss.top_k) == \
        ("opsd", "linear", "jsd", 0.5, 64)
    assert cfg.teacher.mode == "ema" and cfg.teacher.context.views == ("plan", "reference")
    assert not (cfg.resume or cfg.tensorboard or cfg.progress or cfg.rollout.eval_sampled)
    assert cfg.out_dir == "runs/x"
    cfg, _ = parse_config(["--teacher.feedback", "reviser", "--teacher.context.views", "feedback",
                           "reference", "--resume", "--loss.trace", "true"])
    assert cfg.teacher.context.views == ("feedback", "reference") and cfg.resume and cfg.loss.trace
    cfg, _ = parse_config(["--teacher.score-views", "reference,plan", "--loss.div-clip", "5"])
    assert cfg.teacher.score_views == ("reference", "plan") and cfg.loss.div_clip == 5.0


@dataclass(frozen=True)
class _Inner:
    rate: float = field(default=0.5, metadata={"help": "a rate"})
    names: tuple[str, ...] = ("a",)

    def __post_init__(self):
        if not 0 <= self.rate <= 1:
            raise ValueError(f"_Inner.rate must be in [0, 1], got {self.rate}")


@dataclass(frozen=True)
class _Outer:
    on: bool = True
    size: int = 3
    inner: _Inner = _Inner()


def test_a_new_field_is_a_flag_with_no_further_code():
    cfg, _ = parse_config(["--inner.rate", "0.25", "--on", "off", "--inner.names", "x,y"], cls=_Outer)
    assert cfg == _Outer(on=False, inner=_Inner(rate=0.25, names=("x", "y")))
    assert config_flags(_Outer) == ["--on", "--size", "--inner.rate", "--inner.names"]
    with pytest.raises(ValueError, match=r"_Inner\.rate must be in \[0, 1\].*\(flag --inner\.rate\)"):
        parse_config(["--inner.rate", "2"], cls=_Outer)


def test_config_file_then_flags(tmp_path, capsys, monkeypatch):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("steps: 7\nloss:\n  kind: jsd\n  alpha: 0.5\nrollout:\n  env: Sokoban-v0\n")
    cfg, _ = parse_config(["--config", str(yaml_file), "--steps", "9", "--loss.top-k", "8"])
    assert cfg.steps == 9  # a flag beats the file
    assert (cfg.loss.kind, cfg.loss.alpha, cfg.rollout.env) == ("jsd", 0.5, "Sokoban-v0")  # file
    assert cfg.loss.top_k == 8 and cfg.seed == TrainConfig().seed  # flag, default
    # flags may come before --config; --config=FILE works too
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"loss": {"alpha": 0.25}}))
    cfg, _ = parse_config(["--loss.alpha", "0.75", f"--config={json_file}"])
    assert cfg.loss.alpha == 0.75
    # the file overlays the caller's defaults (scripts/run_pipeline.py's quickstart defaults)
    base = TrainConfig(steps=3, out_dir="runs/q", loss=LossConfig(top_k=4))
    cfg, _ = parse_config(["--config", str(yaml_file)], default=base)
    assert (cfg.steps, cfg.out_dir, cfg.loss.top_k, cfg.loss.alpha) == (7, "runs/q", 4, 0.5)
    # --help shows the file's values as the defaults
    blocks = _blocks(_help(capsys, monkeypatch, ["--config", str(yaml_file)]), config_flags())
    assert "(default: 7)" in blocks["--steps"] and "(default: jsd)" in blocks["--loss.kind"]
    # a whole saved config round-trips
    saved = tmp_path / "saved.json"
    full = TrainConfig(algo="grpo", loss=LossConfig(grpo_coef=1.0))
    saved.write_text(json.dumps(config_to_dict(full)))
    assert parse_config(["--config", str(saved)])[0] == full


def _train(capsys, *argv):
    from agentsd.cli import main

    try:
        rc = main(["train", *argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["--loss.alpha", "1.5"], "--loss.alpha"),           # the config rejects it
    (["--loss.alpha", "abc"], "--loss.alpha"),           # not a number
    (["--resume", "maybe"], "--resume"),                 # not a bool
    (["--rollout.samples-per-task", "0"], "--rollout.samples-per-task"),
    (["--algo", "grpo", "--rollout.samples-per-task", "1"], "--rollout.samples-per-task"),
    (["--teacher.context.views", "nope"], "--teacher.context.views"),
    (["--no-such-flag", "1"], "--no-such-flag"),
])
def test_bad_flag_or_value_exits_2_naming_the_flag(capsys, monkeypatch, tmp_path, argv, flag):
    monkeypatch.setenv("COLUMNS", "200")  # one line per message
    rc, err = _train(capsys, *argv, "--out-dir", str(tmp_path / "r"))
    assert rc == 2, err
    assert flag in err, err
    assert not (tmp_path / "r").exists()


def test_bad_config_file_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  alpha: 3\n")
    rc, err = _train(capsys, "--config", str(bad))
    assert rc == 2 and "LossConfig.alpha" in err and "--loss.alpha" in err
    bad.write_text("loss:\n  alfa: 0.5\n")
    rc, err = _train(capsys, "--config", str(bad))
    assert rc == 2 and "unknown config field(s) loss.alfa" in err
    rc, err = _train(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "missing.yaml" in err


def test_train_help_lists_command_options(capsys, monkeypatch):
    from agentsd.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    flags = ["--config", "--threads", "--report", *config_flags()]
    blocks = _blocks(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out), flags)
    for flag in flags:
        assert "(default:" in blocks[flag], flag
