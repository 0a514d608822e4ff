"""``agentsd export``: the merged Hugging Face folder loads with ``AutoModelForCausalLM`` and
computes the trained student's logits (tiny random model; the embedded GGUF model under
``slow``); without ``--merge`` the PEFT adapter folder is copied; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from agentsd.distill.config import ModelConfig, OptimConfig, RolloutSettings, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(out, lora=True) -> TrainConfig:
    return TrainConfig(algo="sft", steps=1, out_dir=str(out), eval_every=0, eval_at_start=False,
                       eval_at_end=False, progress=False, tensorboard=False, samples_to_keep=0,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4, lora=lora),
                       rollout=RolloutSettings(tasks_per_step=1, samples_per_task=2, max_turns=1,
                                               max_tokens=4, eval_tasks=1),
                       optim=OptimConfig(lr=0.05))


IDS = torch.tensor([[1, 17, 300, 4, 2000, 9]])


def _trained(tmp_path, lora=True):
    """A 1-step SFT run's config and its student's logits on ``IDS``."""
    from agentsd.distill.trainer import build_student, train

    cfg = _cfg(tmp_path / "run", lora)
    model, tok = build_student(cfg)
    before = _logits(model)
    train(cfg, model=model, tokenizer=tok)
    after = _logits(model)
    assert not torch.allclose(before, after, atol=1e-5), "training changed nothing"
    return cfg, after


def _logits(model):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(IDS).logits
    model.train(was)
    return out


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_merged_export_loads_with_transformers_and_matches_the_student(tmp_path, lora):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentsd.distill.export import export_merged

    cfg, want = _trained(tmp_path, lora)
    out = export_merged(cfg.out_dir, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert not hasattr(loaded, "peft_config")
    assert torch.allclose(_logits(loaded), want, atol=1e-5)
    assert AutoTokenizer.from_pretrained(str(out)).encode("hi")
    meta = json.loads((out / "agentsd_export.json").read_text())
    assert meta["step"] == 1 and meta["merged"] is True
    assert not list(out.glob("*.bin")) and list(out.glob("*.safetensors"))


def test_adapter_export_loads_with_peft_and_full_runs_need_merge(tmp_path):
    from peft import PeftModel

    from agentsd.distill.export import export_adapter
    from agentsd.distill.models import tiny_random_model
    from agentsd.policy.models import load_tokenizer

    cfg, want = _trained(tmp_path)
    out = export_adapter(cfg.out_dir, tmp_path / "adapter")
    tok = load_tokenizer("smollm2")
    base = tiny_random_model(vocab_size=len(tok), hidden_size=16, seed=cfg.seed, init_std=0.02,
                             eos_token_id=tok.eos_token_id)
    assert torch.allclose(_logits(PeftModel.from_pretrained(base, str(out))), want, atol=1e-5)
    with pytest.raises(ValueError, match="already exists and is not empty"):
        export_adapter(cfg.out_dir, out)
    full, _ = _trained(tmp_path / "f", lora=False)
    with pytest.raises(ValueError, match="--merge"):
        export_adapter(full.out_dir, tmp_path / "a2")


def test_export_without_checkpoint_is_one_line_exit_2(tmp_path):
    (tmp_path / "run").mkdir()
    r = subprocess.run([sys.executable, "-m", "agentsd", "export", str(tmp_path / "run"), "--merge",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no checkpoint" in lines[0] and "agentsd train" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_merged_export_of_the_embedded_gguf_model(tmp_path):
    """smollm2 (GGUF): a LoRA student with a non-zero adapter, checkpointed and exported; the
    folder loads without gguf_file= and computes the student's logits."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from agentsd.distill.checkpoint import save_checkpoint
    from agentsd.distill.config import config_to_dict
    from agentsd.distill.export import export_merged
    from agentsd.distill.trainer import build_student

    cfg = dataclasses.replace(_cfg(tmp_path / "run"), model=ModelConfig(name="smollm2", lora_rank=4,
                                                                          device="cpu"))
    model, _ = build_student(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    save_checkpoint(run, 1, model, opt, {"teacher": None, "bandit": None})
    want = _logits(model)
    del model, opt
    out = export_merged(run, tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert torch.allclose(_logits(loaded), want, atol=1e-4)
