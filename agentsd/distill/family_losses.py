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
           "agreement_weights", "avsd_teacher_logp", "divergence_clip_mask", "cepo_advantages",
           "cepo_loss", "curio_temperatures", "curio_divergence", "gt_mix_teacher_logp",
           "confidence_teacher_logp", "opad_divergence", "tsd_select_mask", "vpd_teacher_loss",
           "rerank_pairs", "tsd_rerank_loss"]


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


# ---------------------------------------------------------------------------------------------
# issue 25: CEPO, CurioSFT, ground-truth target mixing, MAD-OPD / OPAD, TSD-KD, VPD

def cepo_advantages(logp_BT: torch.Tensor, pos_logp_BT: torch.Tensor, neg_logp_BT: torch.Tensor,
                    mask_BT: torch.Tensor) -> torch.Tensor:
    """CEPO (contrastive evidence policy optimization) token credit from two teachers scoring
    the student's sampled token ``y``: the correct-answer teacher ``T+`` (the usual privileged
    context) and a wrong-answer teacher ``T-`` (the same context with a rejected rollout of the
    group in place of the answer). With the evidence of each against the student,
    ``e+ = log pT+(y) - log pθ(y)`` and ``e- = log pT-(y) - log pθ(y)``::

        A = relu(min(e+, -e-)) - relu(min(-e+, e-))

    A token earns credit only when ``T+`` favours it *and* ``T-`` disfavours it (the smaller of
    the two margins), blame only in the mirrored case; a filler token both teachers rate alike
    (``e+`` and ``e-`` of one sign) gets exactly 0. Detached, zero off the mask; ``[B, T]``.
    """
    import torch

    lp = logp_BT.detach().float()
    ep = pos_logp_BT.detach().float() - lp
    en = neg_logp_BT.detach().float() - lp
    credit = torch.relu(torch.minimum(ep, -en)) - torch.relu(torch.minimum(-ep, en))
    return credit * mask_BT.to(credit.dtype)


def cepo_loss(logp_BT: torch.Tensor, pos_logp_BT: torch.Tensor, neg_logp_BT: torch.Tensor,
              sampler_logp_BT: torch.Tensor, mask_BT: torch.Tensor, coef: float = 1.0,
              is_clip: float | None = 2.0) -> TokenLoss:
    """CEPO's per-token policy-gradient loss ``-rho * coef * A * log pθ(y)`` with ``A`` from
    :func:`cepo_advantages` and the importance weight ``rho`` of :mod:`losses`.
    ``divergence_BT`` is the contrastive evidence ``log pT+ - log pT-`` (what the credit reads)."""
    from agentsd.distill.losses import importance_weights

    rho, ratio, clipped = importance_weights(logp_BT, sampler_logp_BT, is_clip)
    adv = cepo_advantages(logp_BT, pos_logp_BT, neg_logp_BT, mask_BT).to(logp_BT.dtype)
    m = mask_BT.to(logp_BT.dtype)
    return TokenLoss(loss_BT=-rho * coef * adv * logp_BT * m,
                     divergence_BT=(pos_logp_BT - neg_logp_BT).detach() * m,
                     is_ratio_BT=ratio * m, is_clipped_BT=clipped * m)


def curio_temperatures(entropy_N: torch.Tensor, tau_max: float = 2.0,
                       entropy_target: float = 1.0) -> torch.Tensor:
    """CurioSFT's per-token temperature, chosen by the student's own entropy ``H`` (nats)::

        tau = 1 + (tau_max - 1) * clamp(1 - H / entropy_target, 0, 1)

    ``tau_max`` where the student is certain (``H = 0``), 1 (no change) once ``H`` reaches
    ``entropy_target``: the sharper the prediction, the more it is flattened. Detached."""
    import torch

    if tau_max < 1 or entropy_target <= 0:
        raise ValueError(f"CurioSFT needs tau_max >= 1 and entropy_target > 0, got {tau_max}, "
                         f"{entropy_target}")
    h = entropy_N.detach().float()
    return 1.0 + (tau_max - 1.0) * torch.clamp(1.0 - h / entropy_target, 0.0, 1.0)


def curio_divergence(student_logits_NV: torch.Tensor, tau_max: float = 2.0,
                     entropy_target: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CurioSFT (entropy-preserving SFT by self-distillation) at ``N`` positions: the forward
    KL from the student's own temperature-scaled distribution (stop-gradient) to the student::

        q = softmax(sg(z) / tau),  tau = curio_temperatures(H(softmax(z)))
        loss = KL(q || softmax(z)) = sum_v q(v) (log q(v) - log_softmax(z)(v))

    ``tau = 1`` gives ``q = p``: zero loss and zero gradient, so a token the student is unsure
    of is left to the NLL term; ``tau > 1`` pulls the student toward a flatter copy of itself,
    keeping entropy an SFT step would remove. Returns ``(loss_N, tau_N)``."""
    import torch

    z = student_logits_NV.float()
    logp = torch.log_softmax(z, dim=-1)
    with torch.no_grad():
        h = -(logp.exp() * logp).sum(-1)
        tau = curio_temperatures(h, tau_max, entropy_target)
        logq = torch.log_softmax(z.detach() / tau[:, None], dim=-1)
    return (logq.exp() * (logq - logp)).sum(-1), tau


def gt_mix_teacher_logp(teacher_logp_BT: torch.Tensor, gt_BT: torch.Tensor, mask_BT: torch.Tensor,
                        weight: float = 0.0, floor: float = 0.0,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth target mixing ("Even your Teacher Needs Guidance", Borup & Andersen 2021):
    the distillation target is ``m = (1 - lam) pT + lam * e_gt`` where the ground truth is
    known. ``gt_BT`` marks the sampled tokens that *are* the ground-truth token (the action
    tokens of turns that match the env's reference step), so there the target log-prob of the
    sampled token is ``log((1 - lam) pT(y) + lam)``; elsewhere it is the teacher's.

    ``lam`` is ``weight`` (fixed) or, with ``floor`` > 0, the closed-form smallest weight that
    gives the ground truth at least ``floor`` of the target's mass::

        lam = clamp((floor - pT(y)) / (1 - pT(y)), 0, 1)     (so m(y) = max(pT(y), floor))

    zero where the teacher already trusts the ground truth that much: guidance only where the
    teacher's own smoothing would pull the student off it. Returns ``(target_logp_BT, lam_BT)``,
    detached, zero off the mask."""
    import torch

    t = teacher_logp_BT.detach().float()
    m = mask_BT.to(t.dtype)
    g = gt_BT.to(t.dtype) * m
    p = t.exp().clamp(max=1.0)
    if floor > 0:
        lam = ((floor - p) / (1.0 - p).clamp_min(1e-12)).clamp(0.0, 1.0)
    else:
        lam = torch.full_like(p, float(weight))
    lam = lam * g
    mixed = torch.log(((1.0 - lam) * p + lam).clamp_min(1e-30))
    return torch.where(g > 0, mixed, t) * m, lam


def confidence_teacher_logp(teacher_logp_NBT: torch.Tensor, mask_BT: torch.Tensor,
                            scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD-OPD's confidence-weighted teachers: ``N`` teachers (privileged views) score the same
    sampled token; each is weighted by its confidence in it, the probability it gives it, and
    the target is the weighted mixture::

        w_n = softmax_n(scale * log pT_n(y)),   pT(y) = sum_n w_n pT_n(y)

    ``scale = 0`` is the plain mixture (mean of probabilities), ``scale -> inf`` the most
    confident teacher (``max_n``). Without a debate round, the confidence is the one each view
    shows on the token. Returns ``(teacher_logp_BT, max_n w_n)`` (detached, zero off the
    mask)."""
    import torch

    t = teacher_logp_NBT.detach().float()
    m = mask_BT.to(t.dtype)
    logw = torch.log_softmax(scale * t, dim=0)
    return torch.logsumexp(logw + t, dim=0) * m, logw.exp().amax(0) * m


def opad_divergence(tags: tuple[str, ...] | list[str]) -> tuple[str, float]:
    """OPAD's task-adaptive divergence from an env's tags: reverse KL (``loss.kind``
    ``reverse_kl``) for code, where one right program is the mode to seek, the symmetric JSD
    (``jsd``, ``alpha = 0.5``) for agentic tasks, where several action sequences succeed.

    >>> opad_divergence(("code", "sandbox")), opad_divergence(("tool-use", "multi-turn"))
    (('reverse_kl', 1.0), ('jsd', 0.5))
    """
    return ("reverse_kl", 1.0) if "code" in tags else ("jsd", 0.5)


def tsd_select_mask(logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                    margin: float = 0.0) -> torch.Tensor:
    """TSD-KD (token-selective dual distillation): distill only the tokens where the teacher is
    relatively more confident than the student in the sampled token::

        keep = [log pT(y) - log pθ(y) > margin]

    Returns a 0/1 ``[B, T]`` mask (detached; the input mask where kept)."""
    gap = (teacher_logp_BT - logp_BT).detach()
    return mask_BT.to(gap.dtype) * (gap > margin).to(gap.dtype)


def rerank_pairs(teacher_G: torch.Tensor, valid_G: torch.Tensor | None = None,
                 margin: float = 0.0) -> torch.Tensor:
    """TSD-KD's indirect feedback, the teacher's ranking of one task's ``G`` candidates (the
    student's own samples) by their teacher scores ``t`` (each candidate's mean teacher log-prob
    per action token, in the teacher's context)::

        P[i, j] = 1  if  t_i - t_j > margin  (candidates i and j both valid), else 0

    ``P[i, j] = 1`` reads "the teacher ranks ``i`` above ``j``"; ties (within ``margin``) and
    invalid candidates make no pair. ``[G, G]`` 0/1, detached.

    >>> import torch
    >>> rerank_pairs(torch.tensor([-1.0, -3.0, -1.0])).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    import torch

    t = teacher_G.detach().float()
    v = torch.ones_like(t) if valid_G is None else valid_G.detach().float()
    return ((t[:, None] - t[None, :]) > margin).float() * v[:, None] * v[None, :]


def tsd_rerank_loss(student_G: torch.Tensor, teacher_G: torch.Tensor,
                    valid_G: torch.Tensor | None = None, margin: float = 0.0) -> torch.Tensor:
    """TSD-KD's ranking loss: a pairwise Bradley-Terry loss on the student's candidate scores
    ``s`` (each candidate's mean log-prob per action token under the student) over the pairs the
    teacher orders (:func:`rerank_pairs`)::

        L = sum_ij P[i, j] * softplus(s_j - s_i) / max(sum_ij P[i, j], 1)
          = mean over teacher-ordered pairs (i above j) of -log sigmoid(s_i - s_j)

    Its gradient pushes up every candidate the teacher ranks higher and down every one it ranks
    lower: ``dL/ds_i = (sum_j P[j, i] sigmoid(s_i - s_j) - sum_j P[i, j] sigmoid(s_j - s_i)) /
    |P|``, negative on the teacher's top candidate, positive on its bottom one. All candidates
    tied: no pair, ``L = 0`` with zero gradient; a strict order with the student indifferent
    (all ``s`` equal): ``L = log 2``. Only the order of ``t`` counts, not its gaps. Scalar.

    Mean log-probs, not sums: a summed log-prob falls with every extra token, so the teacher
    would rank the shorter candidate higher whatever it said; the mean compares how much the
    teacher endorses each candidate's choices per token, and the student's score is normalized
    the same way.
    """
    import torch

    P = rerank_pairs(teacher_G, valid_G, margin).to(student_G.dtype)
    diff = student_G[None, :] - student_G[:, None]  # [i, j] = s_j - s_i
    return (P * torch.nn.functional.softplus(diff)).sum() / P.sum().clamp_min(1.0)


def vpd_teacher_loss(teacher_logp_BT: torch.Tensor, old_logp_BT: torch.Tensor,
                     advantages_B: torch.Tensor, mask_BT: torch.Tensor, clip_eps: float = 0.2,
                     kl_coef: float = 0.1) -> torch.Tensor:
    """VPD's E-step objective (Variational Policy Distillation) for the teacher's own weights,
    on the student's sampled tokens in the teacher's context: a trust-region policy gradient on
    the trajectories' outcomes, token mean over the mask::

        r = pT(y) / pT_old(y)
        loss = -min(r A, clip(r, 1 - eps, 1 + eps) A) + kl_coef * (r - 1 - log r)

    ``A`` is each trajectory's group advantage, ``pT_old`` the teacher before the step (the
    scores it distilled with), ``r - 1 - log r`` the k3 estimate of KL(pT_old || pT). At
    ``pT = pT_old`` the loss is ``-mean A`` and its gradient the plain policy gradient. Scalar.
    """
    import torch

    r = torch.exp((teacher_logp_BT - old_logp_BT.detach()).clamp(-50.0, 50.0))
    adv = advantages_B.detach().to(r.dtype)[:, None]
    surrogate = torch.minimum(r * adv, r.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    k3 = r - 1.0 - torch.log(r)
    m = mask_BT.to(r.dtype)
    return ((-surrogate + kl_coef * k3) * m).sum() / m.sum().clamp_min(1.0)
