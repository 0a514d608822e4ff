"""Declared range checks (agentsd.distill.config_fields): every declared constraint of every config
dataclass rejects a bad value in one line naming the class and the field, accepts its boundary
values, and shows its bounds in ``--help``; the dataclass files no longer check a declared field
by hand."""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import math
import re
from pathlib import Path

import pytest

from agentsd.distill.config import (
    DemoConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutSettings,
    SkillsConfig,
    TeacherConfig,
    TrainConfig,
)
from agentsd.distill.config_fields import Range, _f, check_fields, field_range, help_with_range
from agentsd.distill.pipeline import PipelineConfig
from agentsd.hints import TeacherContextConfig
from agentsd.policy.base import SamplingParams
from agentsd.rollout import RolloutConfig

CLASSES = (ModelConfig, RolloutSettings, DemoConfig, SkillsConfig, OptimConfig, TrainConfig,
           LossConfig, TeacherConfig, TeacherContextConfig, PipelineConfig, RolloutConfig,
           SamplingParams)
#: ``raise ValueError`` plus ``_check(`` sites left in config.py and config_loss.py: 85 before
#: the ranges were declared (12 raises, 73 checks), 22 after (12 raises, 10 checks), all of them
#: checks that relate fields or reach outside the config (the env, the machine, a file)
HAND_CHECKS = 22
DISTILL = Path(__file__).resolve().parents[1] / "agentsd" / "distill"


def _declared() -> list[tuple[type, str, Range]]:
    return [(cls, f.name, field_range(f)) for cls in CLASSES for f in dataclasses.fields(cls)
            if field_range(f) is not None]


def _bad_values(r: Range) -> list:
    """Values each declaration must refuse: the wrong type, just past each bound, no choice."""
    out: list = []
    if r.choices is not None:
        out.append("not-a-choice")
    if r.kind is int:
        out += [1.5, True, "1"]
    if r.kind is float:
        out += ["x", float("nan"), float("inf"), True]
    if r.kind is str:
        out.append(3)
    if r.nonempty:
        out += ["", "  "]
    step = 1 if r.kind is int else 1e-3
    out += [b for b in (r.ge - step if r.ge is not None else None,
                        r.gt if r.gt is not None else None,
                        r.le + step if r.le is not None else None,
                        r.lt if r.lt is not None else None) if b is not None and b != r.off]
    if not r.optional:
        out.append(None)
    return out


def _good_values(r: Range) -> list:
    """Boundary values each declaration must accept."""
    step = 1 if r.kind is int else 1e-6
    out = [b for b in (r.ge, r.gt + step if r.gt is not None else None, r.le,
                       r.lt - step if r.lt is not None else None) if b is not None]
    out = [int(b) if r.kind is int else b for b in out]
    out += list(r.choices or ())
    if r.off is not None:
        out.append(r.off)
    if r.optional:
        out.append(None)
    if r.nonempty:
        out.append("a")
    return out


DECLARED = _declared()
IDS = [f"{cls.__name__}.{name}" for cls, name, _ in DECLARED]


def test_every_class_declares_ranges_and_every_number_field_has_one():
    assert {cls for cls, _, _ in DECLARED} == set(CLASSES)
    for cls in CLASSES[:9]:  # the trainer's config sections: a new number field declares its range
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if str(hints[f.name]) in ("int", "float"):
                assert field_range(f) is not None, f"{cls.__name__}.{f.name} declares no range"


@pytest.mark.parametrize("cls, name, r", DECLARED, ids=IDS)
def test_a_bad_value_names_the_class_the_field_and_the_range(cls, name, r):
    for bad in _bad_values(r):
        assert not r.ok(bad), (name, bad)
        with pytest.raises(ValueError) as e:
            cls(**{name: bad})
        msg = str(e.value)
        assert msg.startswith(f"{cls.__name__}.{name} must be {r.describe()}"), msg
        assert msg.endswith(f"got {bad!r}") and "\n" not in msg, msg


@pytest.mark.parametrize("cls, name, r", DECLARED, ids=IDS)
def test_boundary_values_pass_the_declared_check(cls, name, r):
    for good in _good_values(r):
        assert r.ok(good), (name, good)
        try:  # other fields' cross-checks may still refuse it; the declared range may not
            cls(**{name: good})
        except Exception as e:  # noqa: BLE001
            assert not str(e).startswith(f"{cls.__name__}.{name} must be {r.describe()}"), str(e)


@pytest.mark.parametrize("r, text", [
    (Range(kind=int, ge=1), "a positive int"),
    (Range(kind=int, ge=0), "an int >= 0"),
    (Range(kind=int), "an int"),
    (Range(ge=0), "a finite number >= 0"),
    (Range(gt=0), "a finite number > 0"),
    (Range(ge=0, le=1), "in [0, 1]"),
    (Range(ge=0, lt=1), "in [0, 1)"),
    (Range(gt=0, le=1), "in (0, 1]"),
    (Range(ge=1, off=0), "0 (off) or a finite number >= 1"),
    (Range(kind=int, ge=1, optional=True), "a positive int or None"),
    (Range(choices=("token", "sequence")), "one of 'token', 'sequence'"),
    (Range(nonempty=True), "a non-empty str"),
])
def test_the_wording_of_each_kind_of_range(r, text):
    assert r.describe() == text


def test_messages_tests_and_users_rely_on():
    for build, msg in [
        (lambda: LossConfig(alpha=2.0),
         "LossConfig.alpha must be in [0, 1] (0 forward KL, 1 reverse KL), got 2.0"),
        (lambda: LossConfig(is_clip=0.5), "LossConfig.is_clip must be 0 (off) or a finite number >= 1"),
        (lambda: SkillsConfig(window=0), "SkillsConfig.window must be a positive int, got 0"),
        (lambda: OptimConfig(memory_budget_gb=math.inf),
         "OptimConfig.memory_budget_gb must be a finite number of GB (0 = auto, < 0 = off), got inf"),
        (lambda: RolloutSettings(llamacpp_ctx=-1),
         "RolloutSettings.llamacpp_ctx must be an int >= 0 (0: the episode budget), got -1"),
        (lambda: RolloutConfig(max_turns=0), "RolloutConfig.max_turns must be a positive int or None"),
        (lambda: SamplingParams(temperature=-1.0),
         "SamplingParams.temperature must be a finite number >= 0 (0 = greedy), got -1.0"),
    ]:
        with pytest.raises(ValueError) as e:
            build()
        assert str(e.value).startswith(msg), str(e.value)


def test_a_declaration_is_checked_by_check_fields_alone():
    @dataclasses.dataclass(frozen=True)
    class Demo:
        n: int = _f(2, "how many", kind=int, ge=1, le=3)
        mode: str = _f("a", "which", choices=("a", "b"))
        plain: float = _f(0.5, "no range")

        def __post_init__(self) -> None:
            check_fields(self)

    assert Demo(n=3, mode="b", plain=-7.0).n == 3
    with pytest.raises(ValueError, match=r"^Demo\.n must be an int in \[1, 3\], got 4$"):
        Demo(n=4)
    with pytest.raises(ValueError, match=r"^Demo\.mode must be one of 'a', 'b', got 'c'$"):
        Demo(mode="c")
    with pytest.raises(TypeError, match="at most one lower bound"):
        Range(ge=0, gt=0)
    with pytest.raises(TypeError, match="a note explains a declared range"):
        _f(1, "x", note="(0 = off)")


def test_help_shows_the_declared_bounds(capsys, monkeypatch):
    from agentsd.distill.flags import parse_config

    f = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert help_with_range("optimizer steps", f["steps"]) == "optimizer steps (>= 1)"
    assert help_with_range("run algo", f["algo"]) == "run algo"  # choices: in the help text itself
    g = {f.name: f for f in dataclasses.fields(LossConfig)}
    assert help_with_range("clip", g["is_clip"]) == "clip (0 (off) or >= 1)"
    assert help_with_range("tau (>= 1)", g["curio_tau_max"]) == "tau (>= 1)"  # said once
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    blocks: dict[str, str] = {}  # flag -> the words of its help block (one panel a line at 80)
    flag = ""
    for line in re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).splitlines():
        words = line.split()
        if words and words[0].startswith("--"):
            flag = words[0]
        blocks[flag] = (blocks.get(flag, "") + " " + " ".join(words)).strip()
    assert "optimizer steps (one rollout batch each) (>= 1)" in blocks["--steps"]
    assert "(0 = greedy) (>= 0)" in blocks["--rollout.eval-temperature"]
    assert "(in (0, 1])" in blocks["--rollout.top-p"]
    assert "(>= 100)" in blocks["--teacher.context.max-view-chars"]  # a #: comment's help too


def _hand_checks(path: Path) -> list[tuple[str, str, str]]:
    """``(kind, field or '', message start)`` of each ``raise ValueError`` / ``_check(`` site."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_check":
            args = [a.value if isinstance(a, ast.Constant) else "" for a in node.args[1:4]]
            out.append(("check", f"{args[0]}.{args[1]}", str(args[2])))
        elif (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
              and getattr(node.exc.func, "id", "") == "ValueError" and node.exc.args):
            a = node.exc.args[0]
            parts = a.values if isinstance(a, ast.JoinedStr) else [a]
            text = "".join(p.value for p in parts if isinstance(p, ast.Constant))
            m = re.match(r"(\w+\.\w+) (.*)", text)
            out.append(("raise", m.group(1) if m else "", m.group(2) if m else text))
    return out


def test_no_declared_field_is_range_checked_by_hand():
    declared = {f"{cls.__name__}.{name}" for cls, name, _ in DECLARED}
    range_words = re.compile(r"must be (in [\[(]|an? (positive )?int|>=|>|<|one of|a finite number"
                             r"|a non-empty|'[^']*'( or|,))")
    sites = [s for p in (DISTILL / "config.py", DISTILL / "config_loss.py") for s in _hand_checks(p)]
    for _, field, msg in sites:
        assert not (field in declared and range_words.match(msg)), (field, msg)
    assert len(sites) <= HAND_CHECKS, f"{len(sites)} hand-written checks; declare the range instead"
    assert not hasattr(importlib.import_module("agentsd.distill.config_fields"), "_pos_int")


@pytest.mark.parametrize("module", ["agentsd.distill.config_fields", "agentsd.distill.config"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
