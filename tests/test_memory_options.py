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
