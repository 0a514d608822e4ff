"""Warm-start demonstrations from a named split (``demos.split``): the oracle plays that split's
seeds *with its kwargs*, so ToolWorld-Lite's ``warm`` split gives warm templates only, and
``demos.teacher_frac`` still renders a share in the teacher's context."""

from __future__ import annotations

import pytest

import agentsd
from agentsd.distill.config import DemoConfig, RolloutSettings, TrainConfig
from agentsd.distill.episodes import demos, split_seeds_at, train_seeds

ID = "ToolWorld-Lite-v0"


@pytest.fixture(scope="module")
def tok():
    from agentsd.policy.models import load_tokenizer

    return load_tokenizer("smollm2")


def _cfg(**demo):
    return TrainConfig(algo="sft", seed=5, rollout=RolloutSettings(env=ID, tasks_per_step=3,
                                                                   samples_per_task=2),
                       demos=DemoConfig(**demo))


def test_demos_from_the_warm_split_are_warm_templates(tok):
    from agentsd.envs.toolworld.lite import GROUPS

    ds = demos(_cfg(split="warm", teacher_frac=0.0), 1, tok, None)
    lo, hi = agentsd.spec(ID).splits["warm"].seeds
    assert len(ds) == 6 and all(lo <= d.seed < hi for d in ds)
    assert all(d.spec_kwargs == {"group": "warm"} for d in ds)
    assert all(d.task_id.split("-")[0] in GROUPS["warm"] for d in ds)
    assert not {d.task_id.split("-")[0] for d in ds} & set(GROUPS["train"])
    assert all(d.success for d in ds)  # the oracle's


def test_train_split_demos_are_unchanged_and_seeds_are_a_function_of_seed_and_step(tok):
    cfg = _cfg()
    assert cfg.demos.split == "train"
    assert split_seeds_at(cfg, 2, 4, "train") == train_seeds(cfg, 2, 4)
    assert split_seeds_at(cfg, 2, 4, "warm") == split_seeds_at(cfg, 2, 4, "warm")
    assert split_seeds_at(cfg, 2, 4, "warm") != split_seeds_at(cfg, 3, 4, "warm")
    assert all(d.spec_kwargs == {"group": "train"} for d in demos(cfg, 1, tok, None))


def test_teacher_frac_applies_to_another_split(tok):
    from agentsd.teacher_context import REFERENCE_LEAD

    def hinted(frac):
        ds = demos(_cfg(split="warm", teacher_frac=frac), 1, tok, None)
        return [any(REFERENCE_LEAD in str(m.get("content")) for m in d.turns[0].observation)
                for d in ds]

    assert all(hinted(1.0)) and not any(hinted(0.0))


def test_a_bad_split_is_one_line():
    with pytest.raises(ValueError, match=r"demos\.split is not a split of ToolWorld-Lite-v0 "
                                         r"\(it has: test, test_templates, train, warm\)"):
        _cfg(split="nope")
    with pytest.raises(ValueError, match=r"DemoConfig\.split .*held-out 'test' split"):
        DemoConfig(split="test")
