"""Per-token distillation and RL losses: pure functions of tensors.

Every function takes token-level tensors of shape ``[B, T]`` (``B`` sequences, ``T`` positions;
position ``t`` holds the log-probability of token ``t`` given tokens ``< t``) and a ``mask_BT``
that is 1 on the student's sampled action tokens and 0 on prompt, env and tool tokens and
padding. Nothing here knows about models or trajectories.

Divergence directions are named in words:

- ``"reverse"`` KL(student || teacher): mode seeking; what on-policy distillation minimizes.
- ``"forward"`` KL(teacher || student): mass covering; what SFT on teacher samples minimizes.

The default objective (Skill-SD / SDPO style) is the *sampled-token reverse KL*: on each action
token ``y`` sampled by the student,

    loss_t = rho_t * sg(log pi_theta(y) - log pi_T(y)) * log pi_theta(y),
    rho_t  = min(sg(pi_theta(y) / pi_sampler(y)), is_clip),

whose gradient is ``rho * (log pi_theta - log pi_T) * grad log pi_theta``, an unbiased (up to the
clip) single-sample estimate of the gradient of KL(pi_theta || pi_T) at that position.

Per-token results come back as ``*_BT`` tensors; reduce them with :func:`masked_mean` (token mean)
or :func:`sequence_mean`. Full-vocabulary divergences are computed over chunks of ``T`` under
activation checkpointing so ``B x T x V`` fp32 temporaries never exist all at once.

    >>> import torch
    >>> lp = torch.tensor([[-1.0, -2.0]]); m = torch.ones(1, 2)
    >>> out = sampled_token_reverse_kl(lp, lp, lp, m)
    >>> float(out.loss_BT.abs().sum())  # student == teacher: no signal
    0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported inside functions so `import agentsd` stays light
    import torch

__all__ = [
    "TokenLoss", "RowLogits", "masked_mean", "sequence_mean", "importance_weights", "sampled_token_reverse_kl",
    "policy_gradient_distill", "generalized_jsd", "topk_generalized_jsd", "chunked_divergence",
    "selective_log_softmax", "entropy_from_logits", "position_weights", "pass_rate_weight",
    "route_by_success", "group_advantages", "grpo_loss", "sft_loss", "blend",
]


@dataclass
class RowLogits:
    """Logits at some positions of a ``[B, T]`` grid only: ``values_NV`` holds one row per such
    position and ``index_BT`` (long) the row of each position, ``-1`` where there is none. A
    full-vocabulary loss reads the action positions alone, so this holds ``N x V`` floats where
    dense logits would hold ``B x T x V`` (on a multi-turn episode, 10-100x more)."""

    values_NV: torch.Tensor
    index_BT: torch.Tensor

    @property
    def shape_BT(self) -> tuple[int, int]:
        return tuple(self.index_BT.shape)  # type: ignore[return-value]

    @classmethod
    def dense(cls, logits_BTV: torch.Tensor) -> RowLogits:
        """Every position of ``[B, T, V]`` logits as a row (a view, no copy)."""
        import torch

        B, T, V = logits_BTV.shape
        return cls(logits_BTV.reshape(B * T, V),
                   torch.arange(B * T, device=logits_BTV.device).view(B, T))

    def at(self, flat_pos: torch.Tensor, missing: str = "error") -> torch.Tensor:
        """The rows at flat ``b * T + t`` positions. A position without a row raises
        (``missing="error"``) or reads all-zero logits, a uniform distribution (``"zero"``, what
        dense logits hold where nothing was scored)."""
        rows = self.index_BT.reshape(-1).index_select(0, flat_pos)
        absent = rows < 0
        if not bool(absent.any()):
            return self.values_NV.index_select(0, rows)
        if missing == "error":
            raise ValueError(f"{int(absent.sum())} masked position(s) have no logits row; the "
                             "forward must compute logits at every position the loss reads")
        if self.values_NV.shape[0] == 0:
            return self.values_NV.new_zeros(rows.numel(), self.values_NV.shape[-1])
        return self.values_NV.index_select(0, rows.clamp(min=0)).masked_fill(absent[:, None], 0.0)


@dataclass
class TokenLoss:
    """A per-token loss and the diagnostics that explain it (all ``[B, T]``, zero off the mask).

    ``loss_BT`` is what to reduce and differentiate; ``divergence_BT`` is the (detached)
    per-token divergence estimate being minimized; ``is_ratio_BT`` the unclipped importance
    ratio pi_theta / pi_sampler; ``is_clipped_BT`` and ``token_clipped_BT`` flag where a clip
    was active (as floats, so their masked mean is a fraction).
    """

    loss_BT: torch.Tensor
    divergence_BT: torch.Tensor
    is_ratio_BT: torch.Tensor | None = None
    is_clipped_BT: torch.Tensor | None = None
    token_clipped_BT: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------
# reductions and weights

def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor, weights_B: torch.Tensor | None = None,
                ) -> torch.Tensor:
    """Token mean of ``x_BT`` over ``mask_BT`` (every action token counts equally), optionally
    with a per-sequence weight ``weights_B``. An all-zero mask gives 0, not NaN."""
    m = mask_BT.to(x_BT.dtype)
    if weights_B is not None:
        m = m * weights_B.to(x_BT.dtype)[:, None]
    return (x_BT * m).sum() / mask_BT.to(x_BT.dtype).sum().clamp_min(1.0)


def sequence_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor, weights_B: torch.Tensor | None = None,
                  ) -> torch.Tensor:
    """Mean over sequences of each sequence's token mean (long and short sequences count
    equally); sequences with no action token are skipped."""
    m = mask_BT.to(x_BT.dtype)
    n_B = m.sum(-1)
    per_B = (x_BT * m).sum(-1) / n_B.clamp_min(1.0)
    if weights_B is not None:
        per_B = per_B * weights_B.to(x_BT.dtype)
    has_B = (n_B > 0).to(x_BT.dtype)
    return (per_B * has_B).sum() / has_B.sum().clamp_min(1.0)


def importance_weights(logp_BT: torch.Tensor, sampler_logp_BT: torch.Tensor, is_clip: float | None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rho = min(sg(pi_theta / pi_sampler), is_clip)``.

    Returns ``(rho_BT, ratio_BT, clipped_BT)``: the clipped weight (no gradient), the raw ratio
    and a float flag where the clip was active. ``is_clip=None`` disables the clip.
    """
    import torch

    ratio = torch.exp((logp_BT.detach() - sampler_logp_BT.detach()).clamp(max=50.0))
    if is_clip is None:
        return ratio, ratio, torch.zeros_like(ratio)
    return ratio.clamp(max=is_clip), ratio, (ratio > is_clip).to(ratio.dtype)


def position_weights(mask_BT: torch.Tensor, kind: str = "none", start: float = 0.5) -> torch.Tensor:
    """Per-token weights by position among a sequence's action tokens (PW-OPSD: the teacher's
    targets are more reliable later in a trajectory).

    ``kind``: ``"none"`` (all ones), ``"linear"`` (from ``start`` at the first action token to 1
    at the last) or ``"sqrt"`` (the same ramp through a square root). Weights are renormalized
    so their mean over each sequence's action tokens is 1, leaving the loss scale unchanged.
    """
    import torch

    m = mask_BT.to(torch.float32)
    if kind == "none":
        return m
    if kind not in ("linear", "sqrt"):
        raise ValueError(f"position weight kind must be 'none', 'linear' or 'sqrt', got {kind!r}")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"position weight start must be in [0, 1], got {start}")
    idx = torch.cumsum(m, dim=-1) - 1.0  # 0-based index among action tokens
    n = m.sum(-1, keepdim=True)
    frac = idx / (n - 1.0).clamp_min(1.0)
    if kind == "sqrt":
        frac = frac.clamp_min(0.0).sqrt()
    w = (start + (1.0 - start) * frac) * m
    return w * (n / w.sum(-1, keepdim=True).clamp_min(1e-12))


def pass_rate_weight(p: torch.Tensor | float, a: float = 1.0, b: float = 1.0) -> torch.Tensor:
    """PACED per-problem weight ``p^a (1 - p)^b`` for a task's pass rate ``p`` in [0, 1]: no
    signal when the task is always or never solved."""
    import torch

    p = torch.as_tensor(p, dtype=torch.float32)
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError("pass rates must lie in [0, 1]")
    return p.pow(a) * (1.0 - p).pow(b)


def route_by_success(success_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SRPO routing: successful samples go to GRPO, failed samples to distillation.

    Returns ``(grpo_weight_B, distill_weight_B)`` as 0/1 floats.
    """
    s = success_B.to(_float_dtype(success_B))
    return s, 1.0 - s


def _float_dtype(x: torch.Tensor):
    import torch

    return x.dtype if x.is_floating_point() else torch.float32


# ---------------------------------------------------------------------------------------------
# sampled-token losses (need only the log-probability of the sampled token)

def _clip_tokens(x_BT: torch.Tensor, token_clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-wise clip to ``[-token_clip, token_clip]``; returns the clipped values and a 0/1
    mask of the positions that were clipped (all zero when ``token_clip`` is None)."""
    if token_clip is None:
        return x_BT, _zeros_like(x_BT)
    return x_BT.clamp(-token_clip, token_clip), (x_BT.abs() > token_clip).to(x_BT.dtype)


def sampled_token_reverse_kl(logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor,
                             sampler_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                             is_clip: float | None = 2.0, token_clip: float | None = None,
                             ) -> TokenLoss:
    """The sampled-token reverse KL (see the module docstring).

    ``token_clip`` bounds the per-token signal ``|log pi_theta - log pi_T|`` (point-wise clip:
    stylistic tokens the teacher dislikes strongly cannot dominate the update).

    Shapes: all ``[B, T]``; ``logp_BT`` carries the gradient, the others are treated as
    constants.
    """
    rho, ratio, is_clipped = importance_weights(logp_BT, sampler_logp_BT, is_clip)
    gap = (logp_BT - teacher_logp_BT).detach()
    gap, tok_clipped = _clip_tokens(gap, token_clip)
    m = mask_BT.to(logp_BT.dtype)
    return TokenLoss(
        loss_BT=rho * gap * logp_BT * m,
        divergence_BT=(logp_BT - teacher_logp_BT).detach() * m,
        is_ratio_BT=ratio * m, is_clipped_BT=is_clipped * m, token_clipped_BT=tok_clipped * m,
    )


def policy_gradient_distill(logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor,
                            sampler_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                            coef: float = 1.0, is_clip: float | None = 2.0,
                            token_clip: float | None = None) -> TokenLoss:
    """Distillation as a policy gradient with a per-token advantage
    ``A_t = -coef * (log pi_sampler(y) - log pi_T(y))`` (the teacher's log-ratio as a dense
    reward); loss ``-rho * A * log pi_theta``.

    On-policy (sampler == student) with ``coef=1`` its gradient equals that of
    :func:`sampled_token_reverse_kl`; off-policy the advantage uses the sampler's log-prob, so
    it needs no student forward to compute.
    """
    rho, ratio, is_clipped = importance_weights(logp_BT, sampler_logp_BT, is_clip)
    adv = (-coef * (sampler_logp_BT - teacher_logp_BT)).detach()
    adv, tok_clipped = _clip_tokens(adv, token_clip)
    m = mask_BT.to(logp_BT.dtype)
    return TokenLoss(
        loss_BT=-rho * adv * logp_BT * m,
        divergence_BT=(logp_BT - teacher_logp_BT).detach() * m,
        is_ratio_BT=ratio * m, is_clipped_BT=is_clipped * m, token_clipped_BT=tok_clipped * m,
    )


def _zeros_like(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros_like(x)


# ---------------------------------------------------------------------------------------------
# full-vocabulary and top-k divergences

def generalized_jsd(student_logits_TV: torch.Tensor, teacher_logits_TV: torch.Tensor,
                    alpha: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """Per-position generalized Jensen-Shannon divergence between two categorical
    distributions given as logits ``[..., V]``; returns ``[...]``.

    ``alpha`` moves from forward to reverse KL: ``alpha=0`` is exactly KL(teacher || student),
    ``alpha=1`` exactly KL(student || teacher); in between it is
    ``alpha * KL(T || M) + (1 - alpha) * KL(S || M)`` with the mixture
    ``M = alpha * T + (1 - alpha) * S`` (the GKD generalized JSD; ``alpha=0.5`` is the
    symmetric JSD). Gradients flow into the student only.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 forward KL, 1 reverse KL), got {alpha}")
    s = torch.log_softmax(student_logits_TV.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits_TV.detach().float() / temperature, dim=-1)
    return _jsd_from_logp(s, t, alpha)


def _jsd_from_logp(s: torch.Tensor, t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Generalized JSD from normalized log-probabilities (``-inf`` allowed for empty bins)."""
    import torch

    def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
        p = p_log.exp()
        # 0 * log 0 := 0; masking avoids -inf - -inf = nan on empty bins
        term = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p))
        return term.sum(-1)

    if alpha == 0.0:
        return kl(t, s)
    if alpha == 1.0:
        return kl(s, t)
    m = torch.logsumexp(torch.stack([t + math.log(alpha), s + math.log(1.0 - alpha)]), dim=0)
    return alpha * kl(t, m) + (1.0 - alpha) * kl(s, m)


def topk_generalized_jsd(student_logits_TV: torch.Tensor, teacher_logits_TV: torch.Tensor,
                         k: int, alpha: float = 1.0, by: str = "student",
                         temperature: float = 1.0) -> torch.Tensor:
    """:func:`generalized_jsd` over the ``k`` most likely tokens plus one *tail bucket* holding
    the leftover mass of each distribution (so both stay normalized over ``k + 1`` bins).

    ``by`` picks whose top-k defines the bins (``"student"`` or ``"teacher"``). Merging bins can
    only lose information, so the result never exceeds the full-vocabulary divergence, and it
    equals it when ``k`` covers the vocabulary. Returns ``[...]``.
    """
    import torch

    if by not in ("student", "teacher"):
        raise ValueError(f"top-k 'by' must be 'student' or 'teacher', got {by!r}")
    s = torch.log_softmax(student_logits_TV.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits_TV.detach().float() / temperature, dim=-1)
    if k >= s.shape[-1]:  # the bins cover the vocabulary: no tail needed
        return _jsd_from_logp(s, t, alpha)
    idx = (s if by == "student" else t).detach().topk(k, dim=-1).indices
    s_k, t_k = s.gather(-1, idx), t.gather(-1, idx)
    return _jsd_from_logp(_with_tail(s_k), _with_tail(t_k), alpha)


def _with_tail(logp_K: torch.Tensor) -> torch.Tensor:
    """Append log(1 - sum exp(logp_K)) as a (K+1)-th bin. The leftover mass is floored at 1e-30
    so rounding (a head summing to 1 - 1e-8 on one side, 1 + 1e-8 on the other) cannot make a
    KL infinite; the floor changes a divergence by at most ~1e-6."""
    import torch

    head = torch.logsumexp(logp_K, dim=-1, keepdim=True).clamp(max=0.0)
    tail = torch.log((-torch.expm1(head)).clamp_min(1e-30))
    return torch.cat([logp_K, tail], dim=-1)


def chunked_divergence(student_logits_BTV: torch.Tensor | RowLogits,
                       teacher_logits_BTV: torch.Tensor | RowLogits, mask_BT: torch.Tensor,
                       alpha: float = 1.0, top_k: int | None = None, token_clip: float | None = None,
                       chunk_size: int = 256,
                       temperature: float = 1.0, pi_alpha: float | None = None) -> TokenLoss:
    """Full-vocabulary (``top_k=None``) or top-k generalized JSD at every masked position
    (with ``pi_alpha`` set: :func:`pi_distill_divergence` over the full vocabulary instead),
    computed ``chunk_size`` positions at a time under activation checkpointing, so the fp32
    log-softmax temporaries of only one chunk are alive in the forward or backward pass.

    ``token_clip`` caps each position's divergence (positions above it contribute no gradient).
    Only masked positions are computed. Either side may be dense ``[B, T, V]`` logits or a
    :class:`RowLogits` (rows at some positions only; a teacher position without a row reads
    all-zero logits, as dense ones would). Returns a :class:`TokenLoss` with ``[B, T]`` tensors.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    B, T = mask_BT.shape
    student, teacher = (x if isinstance(x, RowLogits) else RowLogits.dense(x)
                        for x in (student_logits_BTV, teacher_logits_BTV))
    for who, x in (("student", student), ("teacher", teacher)):
        if x.shape_BT != (B, T):
            raise ValueError(f"{who} logits cover {x.shape_BT} positions, the mask {(B, T)}")
    if student.values_NV.shape[-1] != teacher.values_NV.shape[-1]:
        raise ValueError(f"teacher logits have {teacher.values_NV.shape[-1]} classes, the "
                         f"student's {student.values_NV.shape[-1]}")
    pos = mask_BT.reshape(-1).nonzero().squeeze(-1)

    def div(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if pi_alpha is not None:
            from agentsd.distill.family_losses import pi_distill_divergence

            return pi_distill_divergence(s, t, pi_alpha, temperature)
        if top_k is None:
            return generalized_jsd(s, t, alpha, temperature)
        return topk_generalized_jsd(s, t, top_k, alpha, temperature=temperature)

    out = torch.zeros(B * T, dtype=torch.float32, device=student.values_NV.device)
    for i in range(0, pos.numel(), chunk_size):
        p = pos[i:i + chunk_size]
        s, t = student.at(p), teacher.at(p, missing="zero")
        d = checkpoint(div, s, t, use_reentrant=False) if s.requires_grad else div(s, t)
        out = out.index_put((p,), d)
    d_BT = out.view(B, T)
    clipped = torch.zeros_like(d_BT)
    loss = d_BT
    if token_clip is not None:
        clipped = (d_BT.detach() > token_clip).to(d_BT.dtype)
        loss = torch.where(clipped.bool(), d_BT.detach().clamp(max=token_clip), d_BT)
    m = mask_BT.to(d_BT.dtype)
    return TokenLoss(loss_BT=loss * m, divergence_BT=d_BT.detach() * m,
                     token_clipped_BT=clipped * m)


def selective_log_softmax(logits_BTV: torch.Tensor, ids_BT: torch.Tensor, chunk_size: int = 256,
                          ) -> torch.Tensor:
    """``log_softmax(logits)[..., ids]`` in fp32 without a ``B x T x V`` fp32 copy: rows are
    processed ``chunk_size`` at a time under activation checkpointing. Returns ``[B, T]``."""
    import torch
    from torch.utils.checkpoint import checkpoint

    B, T, V = logits_BTV.shape
    flat, ids = logits_BTV.reshape(B * T, V), ids_BT.reshape(B * T, 1)

    def pick(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return (x.gather(-1, i) - torch.logsumexp(x, dim=-1, keepdim=True)).squeeze(-1)

    parts = []
    for i in range(0, B * T, chunk_size):
        x, j = flat[i:i + chunk_size], ids[i:i + chunk_size]
        parts.append(checkpoint(pick, x, j, use_reentrant=False) if x.requires_grad else pick(x, j))
    return torch.cat(parts).view(B, T) if parts else flat.new_zeros(B, T, dtype=torch.float32)


def entropy_from_logits(logits_BTV: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """Per-position entropy (nats) of ``softmax(logits)``, detached, chunked. ``[B, T]``."""
    import torch

    B, T, V = logits_BTV.shape
    flat = logits_BTV.detach().reshape(B * T, V)
    parts = []
    for i in range(0, B * T, chunk_size):
        lp = torch.log_softmax(flat[i:i + chunk_size].float(), dim=-1)
        parts.append(-(lp.exp() * lp).sum(-1))
    return torch.cat(parts).view(B, T) if parts else flat.new_zeros(B, T, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# RL and SFT baselines

def group_advantages(rewards_G: torch.Tensor, normalize_std: bool = True, eps: float = 1e-6,
                     ) -> torch.Tensor:
    """GRPO group-relative advantages for the ``G`` samples of one task:
    ``(r - mean(r)) / (std(r) + eps)`` (population std), or only centred when
    ``normalize_std=False``. A group whose rewards are all equal gets zeros."""
    r = rewards_G.float()
    a = r - r.mean()
    if normalize_std:
        a = a / (r.std(unbiased=False) + eps)
    return a


def grpo_loss(logp_BT: torch.Tensor, sampler_logp_BT: torch.Tensor, advantages_B: torch.Tensor,
              mask_BT: torch.Tensor, clip_eps: float = 0.2) -> TokenLoss:
    """The clipped-surrogate GRPO loss per token:
    ``-min(r * A, clip(r, 1 - eps, 1 + eps) * A)``, ``r = pi_theta / pi_sampler``, with one
    sequence-level advantage ``A`` broadcast over its action tokens."""
    import torch

    ratio = torch.exp((logp_BT - sampler_logp_BT.detach()).clamp(max=50.0))
    adv = advantages_B.detach().to(logp_BT.dtype)[:, None]
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    m = mask_BT.to(logp_BT.dtype)
    return TokenLoss(loss_BT=-torch.minimum(unclipped, clipped) * m,
                     divergence_BT=torch.zeros_like(logp_BT).detach(),
                     is_ratio_BT=ratio.detach() * m,
                     is_clipped_BT=(clipped.detach() < unclipped.detach()).to(logp_BT.dtype) * m)


def sft_loss(logp_BT: torch.Tensor, mask_BT: torch.Tensor) -> TokenLoss:
    """Negative log-likelihood of the action tokens (rejection-sampling fine-tuning trains
    with it on successful trajectories only)."""
    m = mask_BT.to(logp_BT.dtype)
    return TokenLoss(loss_BT=-logp_BT * m, divergence_BT=-logp_BT.detach() * m)


def blend(distill: torch.Tensor | None, grpo: torch.Tensor | None, distill_coef: float = 1.0,
          grpo_coef: float = 0.0) -> torch.Tensor:
    """``distill_coef * distill + grpo_coef * grpo`` over the scalar losses that are present."""
    terms = [c * x for c, x in ((distill_coef, distill), (grpo_coef, grpo))
             if x is not None and c != 0.0]
    if not terms:
        raise ValueError("blend needs at least one loss with a non-zero coefficient")
    return sum(terms[1:], terms[0])


#: the self-distillation family's weights and losses live in :mod:`agentsd.distill.family_losses`
#: and are importable from here too (resolved on first use: that module imports this one)
_FAMILY = ("turn_weights", "pi_distill_divergence", "sampled_token_forward_kl", "trace_kl_scale",
           "agreement_weights", "avsd_teacher_logp", "divergence_clip_mask", "cepo_advantages",
           "cepo_loss", "curio_temperatures", "curio_divergence", "gt_mix_teacher_logp",
           "confidence_teacher_logp", "opad_divergence", "tsd_select_mask", "vpd_teacher_loss",
           "rerank_pairs", "tsd_rerank_loss")


def __getattr__(name: str) -> Any:
    if name in _FAMILY:
        from agentsd.distill import family_losses

        return getattr(family_losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
