"""Closed-form and torch.nn.functional checks for agentsd.distill.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agentsd.distill import losses as L


def _rand_logits(*shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


# ---- sampled-token reverse KL ---------------------------------------------------------------

def test_reverse_kl_zero_when_teacher_equals_student():
    lp = torch.log(torch.tensor([[0.3, 0.5, 0.9]])).requires_grad_()
    out = L.sampled_token_reverse_kl(lp, lp.detach(), lp.detach(), torch.ones(1, 3))
    L.masked_mean(out.loss_BT, torch.ones(1, 3)).backward()
    assert torch.all(out.loss_BT == 0) and torch.all(lp.grad == 0)


def test_reverse_kl_gradient_closed_form():
    # grad of rho * sg(lp - lt) * lp wrt lp is rho * (lp - lt); rho = min(exp(lp - ls), clip)
    lp = torch.tensor([[-1.0, -0.5, -2.0, -0.1]], requires_grad=True)
    lt = torch.tensor([[-2.0, -0.5, -0.2, -3.0]])
    ls = torch.tensor([[-1.0, -1.5, -2.0, -0.1]])  # ratio 1, e, 1, 1
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = L.sampled_token_reverse_kl(lp, lt, ls, mask, is_clip=2.0)
    out.loss_BT.sum().backward()
    rho = torch.tensor([1.0, 2.0, 1.0, 0.0])  # e > 2 is clipped; masked position contributes 0
    expected = rho * (lp.detach() - lt)[0] * mask[0]
    assert torch.allclose(lp.grad[0], expected)
    assert out.is_clipped_BT.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert math.isclose(float(out.is_ratio_BT[0, 1]), math.e, rel_tol=1e-6)


def test_reverse_kl_expected_gradient_is_kl_gradient():
    # Sampling y ~ pi and averaging rho * (log pi - log q) * grad log pi over all y (weighted by
    # pi) must give the exact gradient of KL(pi || q) wrt the logits.
    V = 7
    z = _rand_logits(V, seed=1).requires_grad_()
    q_log = torch.log_softmax(_rand_logits(V, seed=2), -1)
    lp_all = torch.log_softmax(z, -1)
    probs = lp_all.exp().detach()
    lp_V1 = lp_all.view(V, 1)  # one "sequence" per vocabulary entry, one position each
    out = L.sampled_token_reverse_kl(lp_V1, q_log.view(V, 1), lp_V1.detach(), torch.ones(V, 1))
    (out.loss_BT.view(V) * probs).sum().backward()
    grad_est = z.grad.clone()
    z.grad = None
    kl = (torch.log_softmax(z, -1).exp() * (torch.log_softmax(z, -1) - q_log)).sum()
    kl.backward()
    assert torch.allclose(grad_est, z.grad, atol=1e-6)


def test_token_clip_bounds_the_signal():
    lp = torch.tensor([[-0.1, -0.1]], requires_grad=True)
    lt = torch.tensor([[-10.0, -0.12]])
    out = L.sampled_token_reverse_kl(lp, lt, lp.detach(), torch.ones(1, 2), token_clip=0.05)
    out.loss_BT.sum().backward()
    assert torch.allclose(lp.grad, torch.tensor([[0.05, 0.02]]), atol=1e-6)
    assert out.token_clipped_BT.tolist() == [[1.0, 0.0]]


def test_policy_gradient_form_matches_reverse_kl_on_policy():
    g = torch.Generator().manual_seed(3)
    lp = (-torch.rand(2, 5, generator=g) * 3).requires_grad_()
    lt = -torch.rand(2, 5, generator=g) * 3
    mask = (torch.rand(2, 5, generator=g) > 0.3).float()
    a = L.sampled_token_reverse_kl(lp, lt, lp.detach(), mask)
    (ga,) = torch.autograd.grad(a.loss_BT.sum(), lp)
    b = L.policy_gradient_distill(lp, lt, lp.detach(), mask, coef=1.0)
    (gb,) = torch.autograd.grad(b.loss_BT.sum(), lp)
    assert torch.allclose(ga, gb)
    c = L.policy_gradient_distill(lp, lt, lp.detach(), mask, coef=0.5)
    (gc,) = torch.autograd.grad(c.loss_BT.sum(), lp)
    assert torch.allclose(gc, 0.5 * ga)


# ---- full-vocabulary generalized JSD --------------------------------------------------------

def test_jsd_endpoints_agree_with_kl_div():
    s, t = _rand_logits(4, 11, seed=4), _rand_logits(4, 11, seed=5)
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)  # KL(t || s)
    reverse = F.kl_div(lt, ls, log_target=True, reduction="none").sum(-1)  # KL(s || t)
    assert torch.allclose(L.generalized_jsd(s, t, alpha=0.0), forward, atol=1e-6)
    assert torch.allclose(L.generalized_jsd(s, t, alpha=1.0), reverse, atol=1e-6)


def test_jsd_half_is_symmetric_jsd_and_bounded_by_log2():
    s, t = _rand_logits(6, 9, seed=6, scale=5), _rand_logits(6, 9, seed=7, scale=5)
    p, q = F.softmax(s, -1), F.softmax(t, -1)
    m = 0.5 * (p + q)
    jsd = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    got = L.generalized_jsd(s, t, alpha=0.5)
    assert torch.allclose(got, jsd, atol=1e-6)
    assert torch.allclose(got, L.generalized_jsd(t, s, alpha=0.5), atol=1e-6)
    assert float(got.max()) <= math.log(2) + 1e-6


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_jsd_zero_for_identical_and_positive_otherwise(alpha):
    s = _rand_logits(3, 8, seed=8)
    assert torch.allclose(L.generalized_jsd(s, s.clone(), alpha), torch.zeros(3), atol=1e-6)
    assert bool((L.generalized_jsd(s, _rand_logits(3, 8, seed=9), alpha) > 0).all())


def test_jsd_rejects_alpha_out_of_range():
    with pytest.raises(ValueError, match="alpha"):
        L.generalized_jsd(torch.zeros(1, 2), torch.zeros(1, 2), alpha=1.5)


def test_topk_with_full_k_equals_full_and_never_exceeds_it():
    s, t = _rand_logits(5, 12, seed=10), _rand_logits(5, 12, seed=11)
    for alpha in (0.0, 0.5, 1.0):
        full = L.generalized_jsd(s, t, alpha)
        assert torch.allclose(L.topk_generalized_jsd(s, t, k=12, alpha=alpha), full, atol=1e-5)
        for k in (1, 3, 6):
            for by in ("student", "teacher"):
                assert bool((L.topk_generalized_jsd(s, t, k, alpha, by=by) <= full + 1e-6).all())


def test_topk_tail_bucket_closed_form():
    # V=3, k=1: bins {top token, rest}; reverse KL between the two Bernoullis
    ps, pt = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.3, 0.3])
    got = L.topk_generalized_jsd(ps.log(), pt.log(), k=1, alpha=1.0)
    expected = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert math.isclose(float(got), expected, rel_tol=1e-5)


def test_chunked_divergence_matches_unchunked_values_and_grads():
    B, T, V = 2, 9, 13
    s = _rand_logits(B, T, V, seed=12).requires_grad_()
    t = _rand_logits(B, T, V, seed=13)
    mask = torch.ones(B, T)
    mask[0, :3] = 0
    mask[1, -2:] = 0
    for top_k in (None, 4):
        out = L.chunked_divergence(s, t, mask, alpha=0.7, top_k=top_k, chunk_size=4)
        (g1,) = torch.autograd.grad(out.loss_BT.sum(), s)
        ref = (L.generalized_jsd(s, t, 0.7) if top_k is None
               else L.topk_generalized_jsd(s, t, top_k, 0.7)) * mask
        (g2,) = torch.autograd.grad(ref.sum(), s)
        assert torch.allclose(out.loss_BT, ref, atol=1e-6)
        assert torch.allclose(g1, g2, atol=1e-6)
        assert bool((g1[0, :3] == 0).all())  # masked positions get no gradient


def test_chunked_divergence_on_row_logits_equals_dense_logits():
    B, T, V = 2, 7, 11
    s = _rand_logits(B, T, V, seed=16).requires_grad_()
    t = _rand_logits(B, T, V, seed=17)
    mask = torch.zeros(B, T)
    mask[0, 2:5] = 1
    mask[1, 4:7] = 1
    t_dense = t.clone()
    t_dense[1, 6] = 0  # the teacher scored nothing there: dense logits hold zeros
    pos = mask.reshape(-1).nonzero().squeeze(-1)

    def rows(x, at):
        index = torch.full((B * T,), -1, dtype=torch.long)
        index[at] = torch.arange(at.numel())
        return L.RowLogits(x.reshape(B * T, V).index_select(0, at), index.view(B, T))

    t_pos = pos[pos != 6 + T]
    dense = L.chunked_divergence(s, t_dense, mask, alpha=0.3, chunk_size=2)
    sparse = L.chunked_divergence(rows(s, pos), rows(t, t_pos), mask, alpha=0.3, chunk_size=2)
    assert torch.allclose(dense.loss_BT, sparse.loss_BT, atol=1e-6) and float(dense.loss_BT[1, 6]) > 0
    (g1,) = torch.autograd.grad(dense.loss_BT.sum(), s)
    (g2,) = torch.autograd.grad(sparse.loss_BT.sum(), s)
    assert torch.allclose(g1, g2, atol=1e-6)
    with pytest.raises(ValueError, match="no logits row"):  # a student row missing is a bug
        L.chunked_divergence(rows(s, t_pos), rows(t, t_pos), mask)
    with pytest.raises(ValueError, match="cover"):
        L.chunked_divergence(rows(s, pos), rows(t, pos), mask[:, :5])


def test_chunked_divergence_token_clip_stops_gradient_above_cap():
    s = _rand_logits(1, 4, 5, seed=14, scale=4).requires_grad_()
    t = _rand_logits(1, 4, 5, seed=15, scale=4)
    full = L.generalized_jsd(s, t, 1.0).detach()
    cap = float(full.median())
    out = L.chunked_divergence(s, t, torch.ones(1, 4), alpha=1.0, token_clip=cap)
    (g,) = torch.autograd.grad(out.loss_BT.sum(), s)
    over = full[0] > cap
    assert bool((g[0][over] == 0).all()) and bool((g[0][~over].abs().sum(-1) > 0).all())
    assert torch.allclose(out.token_clipped_BT[0], over.float())


def test_selective_log_softmax_and_entropy_agree_with_functional():
    logits = _rand_logits(3, 7, 10, seed=16)
    ids = torch.randint(0, 10, (3, 7), generator=torch.Generator().manual_seed(0))
    ref = F.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(L.selective_log_softmax(logits, ids, chunk_size=5), ref, atol=1e-6)
    x = logits.clone().requires_grad_()
    (g1,) = torch.autograd.grad(L.selective_log_softmax(x, ids, chunk_size=4).sum(), x)
    (g2,) = torch.autograd.grad(F.log_softmax(x, -1).gather(-1, ids[..., None]).sum(), x)
    assert torch.allclose(g1, g2, atol=1e-6)
    p = F.softmax(logits, -1)
    assert torch.allclose(L.entropy_from_logits(logits, 4), -(p * p.log()).sum(-1), atol=1e-5)
    uniform = torch.zeros(1, 1, 10)
    assert math.isclose(float(L.entropy_from_logits(uniform)), math.log(10), rel_tol=1e-6)


# ---- weights and reductions -----------------------------------------------------------------

def test_masked_and_sequence_means():
    x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(L.masked_mean(x, m)) == pytest.approx(16 / 4)
    assert float(L.sequence_mean(x, m)) == pytest.approx((2 + 10) / 2)
    assert float(L.masked_mean(x, torch.zeros_like(m))) == 0.0
    assert float(L.masked_mean(x, m, torch.tensor([1.0, 0.0]))) == pytest.approx(6 / 4)


def test_position_weights():
    m = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
    w = L.position_weights(m, "linear", start=0.0)
    raw = torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 0.0, 1.0])
    assert torch.allclose(w[0], raw * 4 / raw.sum())
    assert float((w * m).sum()) == pytest.approx(4.0)  # mean 1 over action tokens
    assert torch.equal(L.position_weights(m, "none"), m)
    with pytest.raises(ValueError, match="kind"):
        L.position_weights(m, "cubic")


def test_pass_rate_weight_and_routing():
    w = L.pass_rate_weight(torch.tensor([0.0, 0.5, 1.0]), a=1.0, b=1.0)
    assert torch.allclose(w, torch.tensor([0.0, 0.25, 0.0]))
    assert float(L.pass_rate_weight(0.25, a=2.0, b=0.5)) == pytest.approx(0.0625 * 0.75 ** 0.5)
    with pytest.raises(ValueError):
        L.pass_rate_weight(1.5)
    g, d = L.route_by_success(torch.tensor([True, False, True]))
    assert g.tolist() == [1.0, 0.0, 1.0] and d.tolist() == [0.0, 1.0, 0.0]


# ---- GRPO / SFT / blend ---------------------------------------------------------------------

def test_group_advantages():
    a = L.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(a, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)
    assert torch.equal(L.group_advantages(torch.tensor([3.0, 3.0])), torch.zeros(2))
    assert torch.allclose(L.group_advantages(torch.tensor([2.0, 0.0]), normalize_std=False),
                          torch.tensor([1.0, -1.0]))


def test_grpo_loss_on_policy_gradient_and_clip():
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    out = L.grpo_loss(lp, lp.detach(), adv, torch.ones(2, 2))
    out.loss_BT.sum().backward()
    # on-policy the ratio is 1 and d(-r*A)/dlp = -A
    assert torch.allclose(lp.grad, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]))
    # ratio 2 with A > 0: clipped at 1.2, no gradient
    lp2 = torch.tensor([[math.log(0.5)]], requires_grad=True)
    out2 = L.grpo_loss(lp2, torch.tensor([[math.log(0.25)]]), torch.tensor([1.0]), torch.ones(1, 1))
    out2.loss_BT.sum().backward()
    assert float(out2.loss_BT.detach()) == pytest.approx(-1.2) and float(lp2.grad) == 0.0


def test_sft_loss_and_blend():
    lp = torch.tensor([[-1.0, -3.0]])
    out = L.sft_loss(lp, torch.tensor([[1.0, 0.0]]))
    assert out.loss_BT.tolist() == [[1.0, -0.0]]
    x, y = torch.tensor(2.0), torch.tensor(5.0)
    assert float(L.blend(x, y, 1.0, 0.1)) == pytest.approx(2.5)
    assert float(L.blend(x, None, 0.5)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        L.blend(None, None)
