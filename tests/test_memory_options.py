"""``--model.gradient-checkpointing``: the decoder layers recompute in the backward pass and the
gradients are unchanged."""

import copy

import pytest
import torch

from agentsd.distill.config import ModelConfig, TrainConfig
from agentsd.distill.models import tiny_random_model
from agentsd.distill.teacher import forward_logprobs
from agentsd.distill.trainer import prepare_student

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients():
    torch.manual_seed(0)
    base = tiny_random_model(vocab_size=64, hidden_size=32, layers=2)
    ids = torch.randint(0, 64, (2, 12))
    grads, calls = [], []
    for gc in (False, True):
        cfg = TrainConfig(model=ModelConfig(name="tiny-random", gradient_checkpointing=gc))
        model = prepare_student(copy.deepcopy(base), cfg)
        mlp = model.get_base_model().model.layers[0].mlp
        n, orig = [0], mlp.forward

        def counted(*a, _orig=orig, _n=n, **k):
            _n[0] += 1
            return _orig(*a, **k)

        mlp.forward = counted
        forward_logprobs(model, ids, torch.ones_like(ids))["logp_BT"].sum().backward()
        calls.append(n[0])
        grads.append({k: p.grad for k, p in model.named_parameters() if p.requires_grad})
    assert calls == [1, 2]  # the checkpointed layer ran again in the backward pass
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the memory budget (agentsd.distill.memory): micro-batch size and checkpointing chosen for the user

def _smollm2_shaped(lora: bool = True):
    """SmolLM2-135M's architecture on the meta device (sizes without weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from agentsd.distill.models import with_lora
    from agentsd.policy.models import ModelNotFoundError, resolve_model

    try:
        ref = resolve_model("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"embedded model unavailable: {e}")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ref.path, **ref.from_pretrained_kwargs()))
    return with_lora(model, rank=16, alpha=32.0) if lora else model


def _with_optim(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **kw))


def test_budget_picks_the_largest_micro_batch_then_checkpointing():
    from agentsd.distill.memory import MIN_TOKENS, choose

    model, cfg = _smollm2_shaped(), TrainConfig()
    roomy = choose(model, _with_optim(cfg, memory_budget_gb=12.0))
    assert not roomy.gradient_checkpointing and roomy.max_tokens_per_micro_batch >= MIN_TOKENS
    assert roomy.max_tokens_per_micro_batch % 256 == 0
    tight = choose(model, _with_optim(cfg, memory_budget_gb=3.0))
    assert tight.gradient_checkpointing  # < MIN_TOKENS fit without recomputing
    fixed = tight.fixed_gb * 1024 ** 3
    used = fixed + tight.max_tokens_per_micro_batch * tight.act_mb_per_token_checkpointed * 2 ** 20
    assert used <= 3.0 * 1024 ** 3
    assert "budget 3.0 GB (--optim.memory-budget-gb)" in tight.line() and "\n" not in tight.line()
    auto = choose(model, cfg)  # 0: a share of the machine
    assert auto.source.startswith("auto:") and auto.budget_gb > 0
    assert choose(model, _with_optim(cfg, memory_budget_gb=-1.0)) is None  # off: flags as given


def test_explicit_flags_override_the_choice():
    import dataclasses

    from agentsd.distill.memory import choose

    model, cfg = _smollm2_shaped(), TrainConfig()
    kept = choose(model, _with_optim(cfg, memory_budget_gb=12.0, max_tokens_per_micro_batch=1024))
    assert kept.max_tokens_per_micro_batch == 1024 and not kept.gradient_checkpointing
    assert "--optim.max-tokens-per-micro-batch" in kept.kept
    # an explicit micro-batch too big for the budget without checkpointing turns it on
    big = choose(model, _with_optim(cfg, memory_budget_gb=4.0, max_tokens_per_micro_batch=8192))
    assert big.max_tokens_per_micro_batch == 8192 and big.gradient_checkpointing
    gc = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, gradient_checkpointing=True))
    on = choose(model, _with_optim(gc, memory_budget_gb=12.0))
    assert on.gradient_checkpointing and "--model.gradient-checkpointing" in on.kept


def test_a_budget_below_the_weights_is_one_line():
    from agentsd.distill.memory import choose

    with pytest.raises(ValueError, match=r"^--optim.memory-budget-gb 0.5: the weights") as e:
        choose(_smollm2_shaped(lora=False), _with_optim(TrainConfig(), memory_budget_gb=0.5))
    assert "\n" not in str(e.value)


def test_a_row_longer_than_the_micro_batch_is_one_line_naming_its_length_and_the_flag():
    from agentsd.distill.memory import check_rows, choose

    choice = choose(tiny_random_model(vocab_size=64), _with_optim(TrainConfig(), memory_budget_gb=2.0,
                                                                  max_tokens_per_micro_batch=512))
    check_rows([100, 512], 512, choice)
    with pytest.raises(ValueError) as e:
        check_rows([100, 700], 512, choice)
    msg = str(e.value)
    assert "a 700-token row" in msg and "--optim.max-tokens-per-micro-batch" in msg and "\n" not in msg
    check_rows([100, 700], 512, None)  # budget off: a long row goes alone, as before


def test_the_update_prints_its_choice_once_and_switches_checkpointing_on(capsys):
    from agentsd.distill.memory import resolve

    cfg = _with_optim(TrainConfig(model=ModelConfig(name="tiny-random")), memory_budget_gb=0.6)
    model = prepare_student(tiny_random_model(vocab_size=64, hidden_size=32, layers=2), cfg)
    import agentsd.distill.memory as memory

    saved = memory.MIN_TOKENS
    memory.MIN_TOKENS = 10 ** 9  # any budget is "tight": checkpointing is chosen
    try:
        first = resolve(model, cfg)
        again = resolve(model, cfg)
    finally:
        memory.MIN_TOKENS = saved
    assert first is again and first.gradient_checkpointing
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    out = capsys.readouterr().out
    assert out.count("memory: budget 0.6 GB") == 1
