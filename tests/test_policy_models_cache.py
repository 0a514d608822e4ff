"""The GGUF model cache of :mod:`agentsd.policy.models`.

Fast tests stand a tiny random Llama in for the dequantized GGUF model (``_load_weights`` and
``_source_tokenizer`` are patched), so building, reusing, detecting and rebuilding a cache entry
run in seconds. The slow test proves on the real SmolLM2 GGUF file that the cached model gives the
same logits and the same token ids as loading the GGUF file directly.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from agentsd.policy import models as M


class FakeQuantizer:
    """What transformers hangs on a GGUF-loaded model: save_pretrained refuses while it is set."""

    def is_serializable(self) -> bool:
        return False


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tok):
    """A ``.gguf`` path whose "dequantization" is a tiny random Llama; counts dequantizations."""
    from transformers import GgufConfig  # noqa: F401  (present in every supported transformers)

    gguf = tmp_path / "src" / "Tiny-1M.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setenv("AGENTSD_CACHE", str(tmp_path / "cache"))
    calls = {"weights": 0}

    def load_weights(ref, **kwargs):
        if ref.source != "gguf":  # not what load_model should ever do for a GGUF name
            raise AssertionError(ref)
        calls["weights"] += 1
        model = M.random_model(tok, hidden_size=32, num_layers=1, num_heads=2, seed=3)
        model.hf_quantizer = FakeQuantizer()
        model.config.quantization_config = {"quant_method": "gguf"}
        return model

    monkeypatch.setattr(M, "_load_weights", load_weights)
    monkeypatch.setattr(M, "_source_tokenizer", lambda ref: tok)
    M.load_tokenizer.cache_clear()
    yield gguf, calls
    M.load_tokenizer.cache_clear()


def _logits(model, tok):
    import torch

    ids = tok("#  @ $ . #\n", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def _entry(gguf: Path) -> Path:
    d = M.model_cache_dir(M.resolve_model(str(gguf)))
    assert d is not None
    return d


def test_cache_dir_key_follows_the_file_and_the_switch(fake_gguf, monkeypatch, tmp_path):
    gguf, _ = fake_gguf
    d1 = _entry(gguf)
    assert d1.parent == tmp_path / "cache" / "models" and d1.name.startswith("Tiny-1M-")
    gguf.write_bytes(b"GGUF fake, but longer")
    assert _entry(gguf) != d1
    monkeypatch.setenv("AGENTSD_CACHE", "off")
    assert M.model_cache_dir(M.resolve_model(str(gguf))) is None
    local = M.ModelRef("x", str(tmp_path), "local")
    monkeypatch.delenv("AGENTSD_CACHE")
    assert M.model_cache_dir(local) is None


def test_first_load_writes_the_cache_and_later_loads_read_it(fake_gguf, tok):
    gguf, calls = fake_gguf
    m1, _ = M.load_model(str(gguf), device="cpu")
    d = _entry(gguf)
    assert calls["weights"] == 1 and M._cache_problem(d) is None
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    M.load_tokenizer.cache_clear()
    m2, tok2 = M.load_model(str(gguf), device="cpu")
    assert calls["weights"] == 1  # read from the cache, not dequantized again
    assert not getattr(m2, "is_quantized", False)
    import torch

    assert torch.equal(_logits(m1, tok), _logits(m2, tok))
    text = "<|im_start|>user\n#  @ $ .#\n   ##<|im_end|>"
    assert tok2(text).input_ids == tok(text).input_ids


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_manifest", "bad_manifest"])
def test_a_damaged_entry_is_detected_and_rebuilt(fake_gguf, tok, damage):
    gguf, calls = fake_gguf
    ref_model, _ = M.load_model(str(gguf), device="cpu")
    want = _logits(ref_model, tok)
    del ref_model  # its weights are mmapped from the file damaged below (touching them: SIGBUS)
    d = _entry(gguf)
    weights = d / "model.safetensors"
    if damage == "truncate":  # what a full disk or a copy cut short leaves
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif damage == "garbage":  # same size, so only loading it can tell
        weights.write_bytes(b"\x00" * weights.stat().st_size)
    elif damage == "no_manifest":  # what a writer killed before its last file leaves
        (d / M._MANIFEST).unlink()
    else:
        (d / M._MANIFEST).write_text("{not json")
    M.load_tokenizer.cache_clear()
    with pytest.warns(UserWarning, match="corrupt or incomplete.*rebuilding"):
        model, _ = M.load_model(str(gguf), device="cpu")
    assert calls["weights"] == 2 and M._cache_problem(d) is None
    import torch

    assert torch.equal(_logits(model, tok), want)


def test_an_interrupted_build_leaves_no_entry(fake_gguf, monkeypatch):
    gguf, _ = fake_gguf

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_write_entry", killed)
    with pytest.raises(KeyboardInterrupt):
        M.load_model(str(gguf), device="cpu")
    d = _entry(gguf)
    assert not d.exists() and list(d.parent.iterdir()) == []


def test_temp_folders_of_dead_builders_are_removed(fake_gguf):
    gguf, _ = fake_gguf
    d = _entry(gguf)
    d.parent.mkdir(parents=True)
    dead = d.parent / f".{d.name}.tmp-{_dead_pid()}-abc"
    alive = d.parent / f".{d.name}.tmp-{os.getppid()}-abc"  # another process still writing
    for p in (dead, alive):
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"half")
    M.load_model(str(gguf), device="cpu")
    assert not dead.exists() and alive.exists() and M._cache_problem(d) is None


def test_an_unwritable_cache_falls_back_to_the_gguf_file(fake_gguf, monkeypatch, tmp_path):
    gguf, calls = fake_gguf
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AGENTSD_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="cannot write the model cache"):
        model, _ = M.load_model(str(gguf), device="cpu")
    assert calls["weights"] == 1 and model is not None


def test_cache_off_loads_the_gguf_file_every_time(fake_gguf, monkeypatch):
    gguf, calls = fake_gguf
    monkeypatch.setenv("AGENTSD_CACHE", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.load_model(str(gguf), device="cpu")
        M.load_model(str(gguf), device="cpu")
    assert calls["weights"] == 2


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_cached_smollm2_equals_the_gguf_load(tmp_path, monkeypatch):
    """The real embedded model: first load (dequantize + write), cached load and a direct GGUF
    load give identical logits, and the cached tokenizer gives the GGUF tokenizer's ids."""
    import torch

    try:
        ref = M.resolve_model("smollm2")
    except M.ModelNotFoundError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("AGENTSD_CACHE", str(tmp_path))
    M.load_tokenizer.cache_clear()
    try:
        first, _ = M.load_model("smollm2", device="cpu")
        M.load_tokenizer.cache_clear()
        cached, cached_tok = M.load_model("smollm2", device="cpu")
    finally:
        M.load_tokenizer.cache_clear()
    gguf_model, gguf_tok = M._load_weights(ref), M._source_tokenizer(ref)
    assert M._cache_problem(M.model_cache_dir(ref)) is None
    msgs = [{"role": "system", "content": "Solve the level."},
            {"role": "user", "content": "#####\n#@ $.#\n#####\n\nReply <answer>Right</answer>."}]
    ids = gguf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
    assert cached_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"] == ids
    assert (cached_tok.eos_token_id, cached_tok.pad_token_id) == (gguf_tok.eos_token_id,
                                                                  gguf_tok.pad_token_id)
    x = torch.tensor([ids])
    with torch.no_grad():
        want = gguf_model(x).logits
        assert torch.equal(first(x).logits, want)
        assert torch.equal(cached(x).logits, want)
