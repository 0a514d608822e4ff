"""The output-head log-prob paths (agentsd.distill.head) against the plain full-logits
computation: values, entropy, gradients (autograd and finite differences), positions."""

import pytest
import torch

from agentsd.distill.head import token_logprobs
from agentsd.distill.teacher import forward_logprobs


def _reference(head, h, y, tau):
    logits = head(h).double() / tau
    lp = torch.log_softmax(logits, -1)
    return lp.gather(-1, y[:, None]).squeeze(-1), -(lp.exp() * lp).sum(-1)


def _head(V=37, D=8, bias=False, trainable=False, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(D, V, bias=bias)
    head.requires_grad_(trainable)
    return head


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_values_entropy_and_gradients_match_full_logits(trainable, bias, tau):
    head = _head(bias=bias, trainable=trainable)
    h = torch.randn(11, 8, requires_grad=True)
    y = torch.randint(0, 37, (11,))
    g = torch.randn(11)  # an arbitrary upstream gradient (the loss's weights)
    lp, ent = token_logprobs(head, h, y, chunk_size=4, temperature=tau, want_entropy=True)
    (lp * g).sum().backward()
    grad_h = h.grad.clone()
    grads_w = [p.grad.clone() for p in head.parameters() if p.requires_grad]
    h.grad = None
    head.zero_grad()
    ref_lp, ref_ent = _reference(head, h, y, tau)
    (ref_lp * g.double()).sum().backward()
    torch.testing.assert_close(lp.double(), ref_lp.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_h, h.grad, atol=1e-5, rtol=1e-4)
    for got, p in zip(grads_w, [p for p in head.parameters() if p.requires_grad]):
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-4)
    assert not ent.requires_grad


def test_frozen_head_gradient_matches_finite_differences():
    head = _head().double()
    h = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 37, (5,))
    assert torch.autograd.gradcheck(lambda x: token_logprobs(head, x, y, chunk_size=2,
                                                             temperature=0.8)[0], (h,))


def test_no_grad_and_empty_input():
    head = _head()
    with torch.no_grad():
        lp, _ = token_logprobs(head, torch.randn(3, 8), torch.tensor([0, 1, 2]))
    assert lp.shape == (3,) and bool((lp < 0).all())
    lp, ent = token_logprobs(head, torch.randn(0, 8), torch.zeros(0, dtype=torch.long))
    assert lp.shape == (0,) and ent.shape == (0,)


def test_positions_compute_only_the_asked_rows_with_the_same_values_and_gradients():
    from agentsd.distill.models import tiny_random_model, with_lora

    torch.manual_seed(0)
    model = with_lora(tiny_random_model(vocab_size=64, hidden_size=32, layers=2), rank=4).train()
    ids = torch.randint(0, 64, (2, 9))
    attn = torch.ones_like(ids)
    pos = torch.zeros(2, 9)
    pos[0, 3:7] = 1
    pos[1, 5:] = 1
    params = [p for p in model.parameters() if p.requires_grad]

    def run(positions):
        model.zero_grad()
        out = forward_logprobs(model, ids, attn, chunk_size=3, want_entropy=True,
                               positions_BT=positions)
        ((out["logp_BT"] * pos).sum()).backward()
        return out, [p.grad.clone() for p in params]

    full, g_full = run(None)
    part, g_part = run(pos)
    torch.testing.assert_close(part["logp_BT"] * pos, full["logp_BT"] * pos)
    torch.testing.assert_close(part["entropy_BT"] * pos, full["entropy_BT"] * pos)
    assert float(part["logp_BT"].detach()[pos == 0].abs().sum()) == 0.0
    assert float(full["logp_BT"].detach()[:, 1:].abs().min()) > 0  # the full run did fill them
    for a, b in zip(g_part, g_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(float(g.abs().sum()) > 0 for g in g_part)


def test_a_token_far_below_the_rest_keeps_an_exact_log_prob():
    """p(y) underflows in fp32 (log p(y) ~ -200): the value must come from the logsumexp, and
    the gradient stays finite."""
    head = _head(V=5, D=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[100.0, 0], [-100.0, 0], [0, 1], [0, -1], [1, 1]]))
    h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    y = torch.tensor([1])
    lp, _ = token_logprobs(head, h, y)
    ref, _ = _reference(head, h, y, 1.0)
    assert abs(float(lp.detach()) - float(ref.detach())) < 1e-3 and float(lp.detach()) < -150
    lp.sum().backward()
    assert bool(torch.isfinite(h.grad).all())
