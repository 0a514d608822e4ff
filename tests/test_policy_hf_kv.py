"""KV reuse across the turns of an episode and the static-cache path of the ``hf`` backend.

Reusing an episode's kept keys/values must change nothing but speed: the same greedy tokens as a
full prefill, and sampled-token log-probs equal to those of one full forward pass over the whole
sequence. Checked on a tiny random Llama (fast) and on the embedded SmolLM2 (``slow``).
"""

from __future__ import annotations

import pytest

from agentsd.policy import HFPolicy, SamplingParams
from agentsd.policy.models import random_model
from agentsd.rollout import RolloutConfig, Task, run_rollouts


@pytest.fixture(scope="module")
def model(tok):
    return random_model(tok, seed=0)


def _play(policy, tok, params, keys):
    """Three turns of four 'episodes' of different lengths; one ends after turn 1, one joins at
    turn 2 (so a batch mixes rows with and without a kept cache). Returns every generation."""
    obs = [tok.encode(t) for t in ("Hello there, how are you doing today?", "Hi",
                                   "a b c d e f g h", "Late joiner with a long first prompt here")]
    hist = {0: obs[0], 1: obs[1], 2: obs[2]}
    gens = []
    for turn in range(3):
        if turn == 1:
            hist.pop(1)  # finished: its cache is released
            policy.release([1]) if keys else None
        if turn == 2:
            hist[3] = obs[3]
        ids = sorted(hist)
        out = policy.generate([hist[i] for i in ids], params,
                              cache_keys=ids if keys else None)
        gens.append(out)
        for i, g in zip(ids, out):
            hist[i] = hist[i] + g.token_ids + tok.encode(f" observation {turn}" * (i + 1))
    return gens, hist


def test_greedy_tokens_with_kv_reuse_equal_full_prefill(model, tok):
    params = SamplingParams(temperature=0, max_tokens=8)
    reuse = HFPolicy(model, tok)
    with_kv, _ = _play(reuse, tok, params, keys=True)
    without, _ = _play(HFPolicy(model, tok), tok, params, keys=False)
    for a_turn, b_turn in zip(with_kv, without):
        for a, b in zip(a_turn, b_turn):
            assert a.token_ids == b.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    # turns 2 and 3 of the continuing episodes came from their kept caches
    assert [g.meta["kv_reused_tokens"] > 0 for g in with_kv[1]] == [True, True]
    assert [g.meta["kv_reused_tokens"] > 0 for g in with_kv[2]] == [True, True, False]
    s = reuse.kv_stats
    assert s.reused_tokens > s.prefilled_tokens and s.prefix_mismatches == 0


def test_sampled_logprobs_with_kv_reuse_match_a_full_forward(model, tok, score):
    params = SamplingParams(temperature=0.8, top_k=0, max_tokens=6, seed=3)
    policy = HFPolicy(model, tok)
    gens, hist = _play(policy, tok, params, keys=True)
    # rebuild each turn's prompt from the final histories and score the sampled tokens
    for turn in range(1, 3):
        for g in gens[turn]:
            assert g.meta["kv_reused_tokens"] > 0 or turn == 2
    [g2_0, g2_2, _] = gens[2]
    for g, full in ((g2_0, hist[0]), (g2_2, hist[2])):
        start = _index_of(full, g.token_ids)
        assert g.logprobs == pytest.approx(
            score(policy.model, full[:start], g.token_ids, temperature=0.8), abs=1e-4)


def _index_of(seq, sub):
    return next(i for i in range(len(seq) - len(sub), -1, -1) if seq[i:i + len(sub)] == sub)


def test_kv_reuse_through_a_lora_adapter(tok):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(random_model(tok, seed=4), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    params = SamplingParams(temperature=0, max_tokens=6)
    with_kv, _ = _play(HFPolicy(model, tok), tok, params, keys=True)
    without, _ = _play(HFPolicy(model, tok), tok, params, keys=False)
    assert [[g.token_ids for g in t] for t in with_kv] == [[g.token_ids for g in t] for t in without]
    assert with_kv[2][0].meta["kv_reused_tokens"] > 0


def test_a_prompt_that_does_not_extend_the_kept_tokens_is_counted_and_still_exact(model, tok):
    params = SamplingParams(temperature=0, max_tokens=5)
    policy, plain = HFPolicy(model, tok), HFPolicy(model, tok)
    p = tok.encode("The quick brown fox jumps over the lazy dog")
    [g] = policy.generate([p], params, cache_keys=["ep"])
    # the next prompt rewrites the kept tokens from position 4 on (as a chat template that
    # re-tokenizes the turn boundary would): only the common prefix is reused
    changed = p[:4] + tok.encode(" cat sat on the mat") + g.token_ids
    [g2] = policy.generate([changed], params, cache_keys=["ep"])
    assert policy.kv_stats.prefix_mismatches == 1 and g2.meta["kv_reused_tokens"] == 4
    [ref] = plain.generate([changed], params)
    assert g2.token_ids == ref.token_ids
    assert g2.logprobs == pytest.approx(ref.logprobs, abs=1e-4)


def test_rows_that_stop_early_keep_their_cache_for_the_next_turn(tok):
    model = random_model(tok, seed=1)
    prompts, params = [tok.encode("x y"), tok.encode("a much longer prompt")], \
        SamplingParams(temperature=0, max_tokens=10)
    free = HFPolicy(model, tok).generate(prompts, params)
    # declare a token row 0 emits an EOS, so row 0 leaves the batch mid-call
    k = next(i for i in range(1, 9) if free[0].token_ids[i] not in free[0].token_ids[:i]
             and free[0].token_ids[i] not in free[1].token_ids)
    eos = [free[0].token_ids[k]]
    reuse, plain = HFPolicy(model, tok, eos_token_ids=eos), HFPolicy(model, tok, eos_token_ids=eos)
    hist = [list(p) for p in prompts]
    for turn in range(3):
        a = reuse.generate(hist, params, cache_keys=["e0", "e1"])
        b = plain.generate(hist, params)
        assert [g.token_ids for g in a] == [g.token_ids for g in b]
        assert [g.logprobs for g in a] == [pytest.approx(g.logprobs, abs=1e-4) for g in b]
        if turn == 0:
            assert a[0].finish_reason == "stop" and a[1].finish_reason == "length"
        else:
            assert all(g.meta["kv_reused_tokens"] > 0 for g in a)
        hist = [h + g.token_ids + tok.encode(f" next {turn}") for h, g in zip(hist, a)]
    assert reuse.kv_stats.prefix_mismatches == 0


def test_kept_caches_stay_within_the_byte_budget(model, tok):
    params = SamplingParams(temperature=0, max_tokens=3)
    probe = HFPolicy(model, tok)
    probe.generate([tok.encode("one two three")], params, cache_keys=["p"])
    one = probe._kv_bytes
    policy = HFPolicy(model, tok, kv_budget_bytes=int(2.5 * one))
    prompts = [tok.encode(w) for w in ("one two three", "four five six", "seven eight nine")]
    policy.generate(prompts, params, cache_keys=["a", "b", "c"])
    assert list(policy._kv) == ["b", "c"] and policy.kv_stats.evictions == 1
    assert policy._kv_bytes == 2 * one
    with pytest.raises(ValueError, match="kv_budget_bytes"):
        HFPolicy(model, tok, kv_budget_bytes=-1)
    policy.release()
    assert policy._kv_bytes == 0


def test_keys_are_checked_and_released(model, tok):
    policy = HFPolicy(model, tok)
    params = SamplingParams(temperature=0, max_tokens=2)
    with pytest.raises(ValueError, match="2 keys for 1 prompts"):
        policy.generate([[1, 2]], params, cache_keys=["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        policy.generate([[1, 2], [3]], params, cache_keys=["a", "a"])
    policy.generate([[1, 2], [3]], params, cache_keys=["a", "b"])
    assert set(policy._kv) == {"a", "b"}
    policy.release(["a"])
    assert set(policy._kv) == {"b"}
    policy.release()
    assert not policy._kv


def test_sliding_window_models_reuse_exactly(tok, score):
    from transformers import MistralConfig

    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        sliding_window=8, eos_token_id=tok.eos_token_id)
    model = random_model(tok, config=cfg)
    params = SamplingParams(temperature=0, max_tokens=6)
    p = tok.encode("one two three four five six seven eight nine ten eleven twelve")
    for impl in ("growing", "dynamic"):
        policy = HFPolicy(model, tok, cache_implementation=impl)
        [g] = policy.generate([p], params, cache_keys=["x"])
        p2 = p + g.token_ids + tok.encode(" and a few more words")
        [g2] = policy.generate([p2], params, cache_keys=["x"])
        assert g2.meta["kv_reused_tokens"] == len(p) + 5  # longer than the window
        assert g2.logprobs == pytest.approx(score(model, p2, g2.token_ids), abs=1e-4)


def test_models_with_non_attention_layers_fall_back_to_full_prefill(tok, monkeypatch):
    import agentsd.policy.hf as hf

    model = random_model(tok, seed=2)
    # as a hybrid (linear-attention) model's config would name them
    monkeypatch.setattr(hf, "_non_attention_layers", lambda m: ["linear_attention"])
    with pytest.warns(UserWarning, match="KV reuse needs attention layers only"):
        policy = HFPolicy(model, tok)
    assert not policy.supports_kv_reuse
    params = SamplingParams(temperature=0, max_tokens=4)
    [g] = policy.generate([tok.encode("a b c")], params, cache_keys=["x"])
    [g2] = policy.generate([tok.encode("a b c") + g.token_ids], params, cache_keys=["x"])
    assert g2.meta["kv_reused_tokens"] == 0 and not policy._kv


# ---- static cache / torch.compile ------------------------------------------------------------

def test_static_cache_matches_the_dynamic_cache(model, tok):
    prompts = [tok.encode("Hello there, how are you doing today?"), tok.encode("Hi")]
    params = SamplingParams(temperature=0, max_tokens=10)
    policy = HFPolicy(model, tok, cache_implementation="static")
    static = policy.generate(prompts, params)
    again = policy.generate(prompts, params)  # the same cache, reset: nothing left over
    assert [g.token_ids for g in again] == [g.token_ids for g in static]
    dynamic = HFPolicy(model, tok).generate(prompts, params)
    for a, b in zip(static, dynamic):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    sampled = SamplingParams(temperature=1.0, max_tokens=6, seed=5)
    [s] = HFPolicy(model, tok, cache_implementation="static").generate(prompts[:1], sampled)
    [d] = HFPolicy(model, tok).generate(prompts[:1], sampled)
    assert s.token_ids == d.token_ids


def test_static_cache_ignores_keys_and_stops_rows_independently(tok):
    model = random_model(tok, seed=1)
    prompts, params = [tok.encode("x"), tok.encode("y z")], SamplingParams(max_tokens=10, seed=0)
    free = HFPolicy(model, tok).generate(prompts, params)
    # declare a token row 0 sampled an EOS: row 0 must stop there while row 1 runs on
    k = next(i for i in range(2, 10) if free[0].token_ids[i] not in free[0].token_ids[:i])
    eos = [free[0].token_ids[k]]
    pol = HFPolicy(model, tok, eos_token_ids=eos, cache_implementation="static")
    assert not pol.supports_kv_reuse
    gens = pol.generate(prompts, params, cache_keys=["a", "b"])
    ref = HFPolicy(model, tok, eos_token_ids=eos).generate(prompts, params)
    assert [g.token_ids for g in gens] == [g.token_ids for g in ref]
    assert gens[0].token_ids == free[0].token_ids[:k + 1] and gens[0].finish_reason == "stop"
    assert len(gens[1].token_ids) == 10 and not pol._kv


def test_compile_options_are_validated(model, tok):
    assert HFPolicy(model, tok).cache_implementation == "growing"
    with pytest.raises(ValueError, match="cache_implementation must be"):
        HFPolicy(model, tok, cache_implementation="paged")
    with pytest.raises(ValueError, match="needs cache_implementation='static'"):
        HFPolicy(model, tok, compile=True)
    if model.device.type == "cpu":
        with pytest.raises(ValueError, match="compile=True is GPU-only"):
            HFPolicy(model, tok, cache_implementation="static", compile=True)


# ---- through the rollout engine ----------------------------------------------------------------

def _sokoban(policy, kv_reuse, params, n=3):
    return run_rollouts(policy, tasks=[Task("Sokoban-Easy-v0", s) for s in range(n)],
                        params=params, config=RolloutConfig(max_turns=3, batch_wait_s=3600.0,
                                                            kv_reuse=kv_reuse))


def test_rollouts_with_kv_reuse_equal_rollouts_without(model, tok):
    params = SamplingParams(temperature=0, max_tokens=12)
    policy = HFPolicy(model, tok)
    on, off = _sokoban(policy, True, params), _sokoban(policy, False, params)
    assert [t.token_ids() for t in on.trajectories] == [t.token_ids() for t in off.trajectories]
    for a, b in zip(on.trajectories, off.trajectories):
        assert a.sampler_logprobs() == pytest.approx(b.sampler_logprobs(), abs=1e-4)
    assert max(len(t.turns) for t in on.trajectories) > 1
    assert on.summary.kv_reused_tokens > 0 and on.summary.kv_prefix_mismatches == 0
    assert off.summary.kv_reused_tokens == 0
    assert on.summary.prefill_tokens < off.summary.prefill_tokens
    assert not policy._kv  # every episode's cache is released when it ends


@pytest.mark.slow
def test_real_model_rollouts_with_kv_reuse_equal_rollouts_without():
    from agentsd.policy.models import ModelNotFoundError

    try:
        policy = HFPolicy.from_pretrained("smollm2", device="cpu")
    except ModelNotFoundError as e:
        pytest.skip(str(e))
    params = SamplingParams(temperature=0, max_tokens=24)
    on, off = _sokoban(policy, True, params, n=2), _sokoban(policy, False, params, n=2)
    assert [t.token_ids() for t in on.trajectories] == [t.token_ids() for t in off.trajectories]
    for a, b in zip(on.trajectories, off.trajectories):
        assert a.sampler_logprobs() == pytest.approx(b.sampler_logprobs(), abs=1e-3)
    assert on.summary.kv_reused_tokens > 0 and on.summary.kv_prefix_mismatches == 0
    # sampled: the recorded log-probs are those of a full forward over the episode's sequence
    sampled = _sokoban(policy, True, SamplingParams(temperature=1.0, max_tokens=16, seed=0), n=2)
    for t in sampled.trajectories:
        ids, mask = t.token_ids(), t.action_mask()
        lp = [x for x, m in zip(_full_logprobs(policy.model, ids), mask[1:]) if m]
        assert lp == pytest.approx(
            [x for x, m in zip(t.sampler_logprobs()[1:], mask[1:]) if m], abs=2e-3)


def _full_logprobs(model, ids):
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
