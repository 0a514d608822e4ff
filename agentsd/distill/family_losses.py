"""The self-distillation family's per-turn and per-token weights, routed and entropy-regularized
losses, and the combination of several teachers: pure functions of tensors, as in
:mod:`agentsd.distill.losses` (shapes and conventions there; each function cites its paper,
PAPERS.md has the one-line summaries). All of them are importable from
:mod:`agentsd.distill.losses` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentsd.distill.losses import TokenLoss

if TYPE_CHECKING:
    import torch

__all__ = ["turn_weights", "pi_distill_divergence", "sampled_token_forward_kl", "trace_kl_scale",
           "agreement_weights", "avsd_teacher_logp", "divergence_clip_mask"]


def turn_weights(divergence_BT: torch.Tensor, turn_BT: torch.Tensor, mask_BT: torch.Tensor,
                 scale: float = 1.0) -> torch.Tensor:
    """SOD (step-wise on-policy distillation for small language model agents) per-turn weights.

    A wrong tool call cascades: later turns diverge more and their teacher targets are less
    reliable, so each turn's distillation strength decreases in that turn's divergence::

        d_k = mean of divergence_BT over turn k's action tokens
        w_k = exp(-scale * d_k) / Z,   Z = sum_j n_j exp(-scale * d_j) / sum_j n_j

    applied to every token of turn ``k`` (``n_j``: turn ``j``'s action tokens). ``Z`` makes the
    token mean of the weights over each sequence 1 (the loss scale is unchanged); ``scale=0``
    gives all ones. ``turn_BT`` holds the turn index of each action token (any value off the
    mask). Detached: the weights steer the gradient, they are not optimized.
    Returns ``[B, T]`` weights, zero off the mask.
    """
    import torch

    m = mask_BT.to(torch.float32)
    d = divergence_BT.detach().to(torch.float32) * m
    idx = (turn_BT.long() * mask_BT.long()).clamp_min(0)
    K = int(idx.max()) + 1 if idx.numel() else 1
    sums = torch.zeros(m.shape[0], K, device=m.device).scatter_add(1, idx, d)
    counts = torch.zeros(m.shape[0], K, device=m.device).scatter_add(1, idx, m)
    mean_K = sums / counts.clamp_min(1.0)
    present = counts > 0
    # shift by the smallest divergence per sequence: Z cancels it, exp cannot overflow
    shift = torch.where(present, mean_K, torch.full_like(mean_K, float("inf"))).amin(-1, keepdim=True)
    raw_K = torch.exp(-scale * (mean_K - shift.clamp(max=1e30))) * present
    w = raw_K.gather(1, idx) * m
    return w * (m.sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp_min(1e-12))


def pi_distill_divergence(student_logits_TV: torch.Tensor, teacher_logits_TV: torch.Tensor,
                          alpha: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """π-Distill (Privileged Information Distillation) per-position objective over the full
    vocabulary::

        H(pS, pT) - alpha * H(pS) = -sum_v pS(v) log pT(v) + alpha * sum_v pS(v) log pS(v)

    (cross-entropy of the student against the teacher minus an entropy bonus). ``alpha=1`` is
    exactly the reverse KL(student || teacher); ``alpha<1`` keeps ``(1 - alpha) * H(pS)`` of
    entropy pressure even where the two agree. Gradients flow into the student only.
    Returns ``[...]``.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"π-Distill alpha must be in [0, 1], got {alpha}")
    s = torch.log_softmax(student_logits_TV.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits_TV.detach().float() / temperature, dim=-1)
    p = s.exp()
    return (p * (alpha * s - t)).sum(-1)


def sampled_token_forward_kl(logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor,
                             mask_BT: torch.Tensor, ratio_clip: float | None = 2.0) -> TokenLoss:
    """Forward KL(teacher || student) from the student's own sampled tokens (TRACE's channel on
    the key spans of successful rollouts, when only sampled-token log-probs are scored).

    ``grad KL(pT || pθ) = -sum_v pT(v) grad log pθ(v) = -E_{y~pθ}[w(y) grad log pθ(y)]`` with
    ``w = pT(y) / pθ(y)``; since ``E_{y~pθ}[grad log pθ(y)] = 0``, the baseline 1 can be
    subtracted::

        loss_t = -(min(sg(w_t), ratio_clip) - 1) * log pθ(y_t)

    zero when student and teacher agree, and (up to the clip) an unbiased estimate of the
    forward-KL gradient on-policy. ``divergence_BT`` is ``w * (log pT - log pθ)``, an unbiased
    estimate of the forward KL itself.
    """
    import torch

    w = torch.exp((teacher_logp_BT - logp_BT).detach().clamp(max=50.0))
    wc = w if ratio_clip is None else w.clamp(max=ratio_clip)
    m = mask_BT.to(logp_BT.dtype)
    clipped = torch.zeros_like(w) if ratio_clip is None else (w > ratio_clip).to(w.dtype)
    return TokenLoss(loss_BT=-(wc - 1.0) * logp_BT * m,
                     divergence_BT=(w * (teacher_logp_BT - logp_BT).detach()) * m,
                     is_ratio_BT=w * m, is_clipped_BT=clipped * m)


def trace_kl_scale(step: int, warmup_steps: int, anneal_steps: int) -> float:
    """TRACE (token-routed alignment) schedule of the KL channel: 1 for ``step <= warmup_steps``,
    then linearly to 0 over ``anneal_steps`` more steps (at once when ``anneal_steps == 0``).

    >>> [trace_kl_scale(s, 2, 2) for s in (1, 2, 3, 4, 5)]
    [1.0, 1.0, 0.5, 0.0, 0.0]
    """
    if step <= warmup_steps:
        return 1.0
    if anneal_steps <= 0:
        return 0.0
    return max(0.0, 1.0 - (step - warmup_steps) / anneal_steps)


def agreement_weights(teacher_logp_NBT: torch.Tensor, mask_BT: torch.Tensor, scale: float = 1.0,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """UniSD multi-teacher agreement: ``N`` teachers (privileged views) score the same token;
    the target is their mean log-probability and the token's weight falls with their spread::

        log pT(y) = mean_n log pT_n(y),   w = exp(-scale * std_n log pT_n(y))

    (population std). Identical teachers give weight 1. Returns ``(teacher_logp_BT, w_BT)``,
    both detached and zero off the mask.
    """
    import torch

    t = teacher_logp_NBT.detach().float()
    m = mask_BT.to(t.dtype)
    spread = t.std(dim=0, unbiased=False) if t.shape[0] > 1 else torch.zeros_like(t[0])
    return t.mean(0) * m, torch.exp(-scale * spread) * m


def avsd_teacher_logp(logp_BT: torch.Tensor, teacher_logp_NBT: torch.Tensor, mask_BT: torch.Tensor,
                      residual_bound: float = 0.5) -> torch.Tensor:
    """AVSD (adaptive-view self-distillation) consensus target from ``N`` privileged views.

    Per token, each view's gap ``g_n = log pθ(y) - log pT_n(y)``; the consensus direction is
    ``c = mean_n g_n`` and a view's residual ``r_n = g_n - c`` is added only where it points the
    same way as the consensus, bounded by ``residual_bound``::

        g = c + mean_n [sign(r_n) == sign(c)] * clamp(r_n, -bound, bound)

    Returns the effective teacher log-prob ``log pθ - g`` (detached, ``[B, T]``), which plugs into
    any sampled-token loss. Identical views give ``g = c`` (the plain teacher).
    """
    import torch

    lp = logp_BT.detach().float()
    gaps = lp.unsqueeze(0) - teacher_logp_NBT.detach().float()
    c = gaps.mean(0)
    r = gaps - c
    aligned = (torch.sign(r) == torch.sign(c)).to(r.dtype)
    g = c + (aligned * r.clamp(-residual_bound, residual_bound)).mean(0)
    return (lp - g) * mask_BT.to(lp.dtype)


def divergence_clip_mask(divergence_BT: torch.Tensor, mask_BT: torch.Tensor, max_divergence: float,
                         ) -> torch.Tensor:
    """UniSD divergence clipping: tokens whose divergence estimate exceeds ``max_divergence`` in
    absolute value are dropped from distillation (an unreliable teacher target is worse than
    none). Returns a 0/1 ``[B, T]`` mask (the input mask where kept)."""
    return mask_BT.to(divergence_BT.dtype) * (divergence_BT.detach().abs() <= max_divergence).to(
        divergence_BT.dtype)
