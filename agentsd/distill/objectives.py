"""The objective: one entry per loss term (:data:`OBJECTIVES`), an algorithm a list of them
(:func:`terms_for`).

Each term is a function of one micro-batch's tensors (:class:`~agentsd.distill.batch.MicroBatch`,
the student's and teacher's outputs filled in) that returns a :class:`Term`: its weighted scalar
loss *and* its own diagnostics, as lists of per-token values under a name (``div``, ``ratio``,
…) that :func:`agentsd.distill.update.step_metrics` summarizes. A new loss is one function
here, one entry in :data:`OBJECTIVES`, and its tests.

The self-distillation family's per-token options are applied in ``distill``: SOD turn weights,
UniSD agreement and divergence clipping, AVSD's consensus target, TRACE's forward/reverse
routing and π-Distill (``loss.kind``); issue 25's: MAD-OPD's confidence-weighted teachers and
ground-truth target mixing (the target), OPAD's task-adaptive divergence (the kind), CEPO's
contrastive token credit (the loss), TSD-KD's token selection (the weights). CurioSFT is its own
term (``curio``, summed with ``sft``), and so is TSD-KD's re-ranking (``tsd_rerank``, summed with
``distill``; its values come from a scoring pass before the micro-batches,
:func:`agentsd.distill.family_more.rerank_batch`); VPD's E-step runs after the update
(:func:`agentsd.distill.family_more.vpd_e_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentsd.distill.batch import MicroBatch
from agentsd.distill.config import TrainConfig

if TYPE_CHECKING:
    import torch

__all__ = ["Term", "Objective", "OBJECTIVES", "terms_for", "needs_logits"]


@dataclass(frozen=True)
class Term:
    """One loss term's value on a micro-batch: the scalar ``loss`` (weighted, to be summed and
    back-propagated) and its diagnostics (name -> per-token values)."""

    loss: torch.Tensor
    stats: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """A loss term: ``fn(mb, cfg)`` returns its :class:`Term` on a micro-batch;
    ``needs_teacher`` / ``needs_logits`` say what the forward must provide."""

    name: str
    fn: Callable[[MicroBatch, TrainConfig], Term]
    needs_teacher: bool = False
    needs_logits: bool = False
    doc: str = ""


def _token_loss(mb: MicroBatch, cfg: TrainConfig, t_lp: torch.Tensor, mask: torch.Tensor,
                direction: str = "") -> Any:
    """The per-token distillation loss of ``cfg.loss.kind`` on ``mask``; ``direction``
    (``"forward"`` / ``"reverse"``, TRACE) forces the KL direction."""
    from agentsd.distill import losses as L
    from agentsd.distill.family_more import loss_kind

    lc, lp = cfg.loss, mb.out["logp_BT"]
    kind, alpha0 = loss_kind(cfg)  # OPAD (loss.task_divergence): by the env's tags
    if kind in ("jsd", "pi_distill"):
        alpha = {"forward": 0.0, "reverse": 1.0}.get(direction, alpha0)
        return L.chunked_divergence(mb.out["logits_rows"], mb.teacher["teacher_logits_rows"],
                                    mask, alpha,
                                    lc.top_k or None, lc.token_clip or None, lc.chunk_size,
                                    pi_alpha=lc.pi_alpha if kind == "pi_distill" else None)
    if direction == "forward":
        return L.sampled_token_forward_kl(lp, t_lp, mask, lc.is_clip or None)
    if kind == "pg":
        return L.policy_gradient_distill(lp, t_lp, mb.sampler_logp_BT, mask, lc.pg_coef,
                                         lc.is_clip or None, lc.token_clip or None)
    return L.sampled_token_reverse_kl(lp, t_lp, mb.sampler_logp_BT, mask, lc.is_clip or None,
                                      lc.token_clip or None)


def _teacher_target(mb: MicroBatch, cfg: TrainConfig, stats: dict[str, list[float]],
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's log-probs of the sampled tokens and, with several teachers under UniSD
    agreement, a per-token weight (AVSD: the consensus target, MAD-OPD: the confidence-weighted
    mixture, no weight); then ground-truth target mixing where the ground truth is known."""
    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values

    lp, mask, tc, lc = mb.out["logp_BT"], mb.mask_BT, cfg.teacher, cfg.loss
    agree_w = None
    if "teacher_logp_NBT" not in mb.teacher:
        t_lp = mb.teacher["teacher_logp_BT"].to(lp.device)
    elif tc.combine == "avsd":
        t_lp = L.avsd_teacher_logp(lp, mb.teacher["teacher_logp_NBT"].to(lp.device), mask,
                                   tc.avsd_residual)
    elif tc.combine == "confidence":  # MAD-OPD
        t_lp, top_w = L.confidence_teacher_logp(mb.teacher["teacher_logp_NBT"].to(lp.device), mask,
                                                tc.confidence_scale)
        stats["confw"] = masked_values(top_w, mask)
    else:
        scale = tc.agreement_scale if tc.combine == "agreement" else 0.0
        t_lp, agree_w = L.agreement_weights(mb.teacher["teacher_logp_NBT"].to(lp.device), mask, scale)
    if lc.gt_mix > 0 or lc.gt_floor > 0:  # "Even your Teacher Needs Guidance"
        gt = mb.extra["gt_BT"]
        t_lp, lam = L.gt_mix_teacher_logp(t_lp, gt, mask, lc.gt_mix, lc.gt_floor)
        stats["gtlam"] = masked_values(lam, gt * mask)
    return t_lp, agree_w


def _routed_loss(mb: MicroBatch, cfg: TrainConfig, t_lp: torch.Tensor) -> tuple[Any, Any]:
    """The per-token loss and the tokens it covers: TRACE's forward KL on agreeing spans of
    successes plus reverse KL on errors (scaled by the KL schedule), else ``loss.kind`` on
    every action token."""
    from agentsd.distill import losses as L

    if cfg.loss.cepo:  # CEPO: credit from the contrast of the correct- and wrong-answer teachers
        mask = mb.mask_BT * mb.extra["cepo_has_B"][:, None]
        lc = cfg.loss
        return L.cepo_loss(mb.out["logp_BT"], t_lp, mb.teacher["cepo_neg_logp_BT"].to(t_lp.device),
                           mb.sampler_logp_BT, mask, lc.cepo_coef, lc.is_clip or None), mask
    if not cfg.loss.trace:
        return _token_loss(mb, cfg, t_lp, mb.mask_BT), mb.mask_BT
    fwd, rev = mb.extra["trace_fwd_BT"], mb.extra["trace_rev_BT"]
    tf, tr = _token_loss(mb, cfg, t_lp, fwd, "forward"), _token_loss(mb, cfg, t_lp, rev, "reverse")
    tl = L.TokenLoss(loss_BT=mb.data.kl_scale * (tf.loss_BT + tr.loss_BT),
                     divergence_BT=tf.divergence_BT + tr.divergence_BT,
                     is_ratio_BT=tr.is_ratio_BT, is_clipped_BT=tr.is_clipped_BT,
                     token_clipped_BT=tr.token_clipped_BT)
    return tl, fwd + rev


def _token_weights(mb: MicroBatch, cfg: TrainConfig, tl: Any, mask: torch.Tensor,
                   agree_w: torch.Tensor | None, stats: dict[str, list[float]],
                   t_lp: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token distillation weights: position weights, SOD's turn weights, UniSD divergence
    clipping, multi-teacher agreement and TSD-KD's token selection (each logged under its own
    name)."""
    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values

    lc = cfg.loss
    tok_w = L.position_weights(mask, lc.position_weight, lc.position_start)
    if lc.turn_weight == "sod":  # SOD: weaker where this turn's student and teacher disagree
        sod = L.turn_weights(tl.divergence_BT, mb.extra["turn_BT"], mask, lc.sod_scale)
        stats["sodw"] = masked_values(sod, mask)
        tok_w = tok_w * sod
    if lc.div_clip > 0:  # UniSD divergence clipping
        keep = L.divergence_clip_mask(tl.divergence_BT, mask, lc.div_clip)
        stats["divclip"] = masked_values(1.0 - keep, mask)
        tok_w = tok_w * keep
    if agree_w is not None:  # UniSD multi-teacher agreement
        tok_w = tok_w * agree_w
    if lc.tsd_select and t_lp is not None:  # TSD-KD: the teacher relatively more confident
        keep = L.tsd_select_mask(mb.out["logp_BT"], t_lp, mask, lc.tsd_margin)
        stats["tsdkeep"] = masked_values(keep, mask)
        tok_w = tok_w * keep
    return tok_w


def _distill(mb: MicroBatch, cfg: TrainConfig) -> Term:
    from agentsd.distill.metrics import masked_values

    lp = mb.out["logp_BT"]
    stats: dict[str, list[float]] = {}
    t_lp, agree_w = _teacher_target(mb, cfg, stats)
    if agree_w is not None:
        stats["agree"] = masked_values(agree_w, mb.mask_BT)
    tl, mask = _routed_loss(mb, cfg, t_lp)
    if cfg.loss.cepo:
        from agentsd.distill import losses as L

        stats["cepo"] = masked_values(L.cepo_advantages(
            lp, t_lp, mb.teacher["cepo_neg_logp_BT"].to(lp.device), mask), mask)
    tok_w = _token_weights(mb, cfg, tl, mask, agree_w, stats, t_lp)
    stats["div"] = masked_values(tl.divergence_BT, mask)
    stats["gap"] = masked_values(t_lp - lp.detach(), mask)
    if tl.is_ratio_BT is not None:
        stats["ratio"] = masked_values(tl.is_ratio_BT, mask)
        stats["isclip"] = masked_values(tl.is_clipped_BT, mask)
    if tl.token_clipped_BT is not None:
        stats["tokclip"] = masked_values(tl.token_clipped_BT, mask)
    loss = (tl.loss_BT * tok_w * mb.tok_w_BT * mb.per_seq(mb.data.distill_w)[:, None]).sum()
    return Term(loss, stats)


def _grpo(mb: MicroBatch, cfg: TrainConfig) -> Term:
    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values

    gl = L.grpo_loss(mb.out["logp_BT"], mb.sampler_logp_BT, mb.per_seq(mb.data.advantages),
                     mb.mask_BT, cfg.loss.grpo_clip_eps)
    stats = {}
    if mb.teacher is None:
        stats = {"ratio": masked_values(gl.is_ratio_BT, mb.mask_BT),
                 "isclip": masked_values(gl.is_clipped_BT, mb.mask_BT)}
    tok_w = mb.tok_w_BT
    if cfg.loss.trace:  # TRACE: GRPO on unmarked tokens, and on marked ones as the KL anneals
        marked = mb.extra["trace_fwd_BT"] + mb.extra["trace_rev_BT"]
        tok_w = tok_w * (1.0 - mb.data.kl_scale * marked)
    return Term((gl.loss_BT * tok_w * mb.per_seq(mb.data.grpo_w)[:, None]).sum(), stats)


def _curio(mb: MicroBatch, cfg: TrainConfig) -> Term:
    """CurioSFT: the student distilled toward its own per-token temperature-scaled distribution
    on the demonstrations' action tokens, summed with the NLL (:func:`_sft`)."""
    from agentsd.distill.family_more import curio_loss
    from agentsd.distill.metrics import masked_values

    lc, mask = cfg.loss, mb.mask_BT
    logits = mb.out["logits_rows"] if "logits_rows" in mb.out else mb.out["logits_BTV"]
    loss_BT, tau_BT = curio_loss(logits, mask, lc.curio_tau_max, lc.curio_entropy_target,
                                 lc.chunk_size)
    stats = {"curiotau": masked_values(tau_BT, mask), "curiokl": masked_values(loss_BT, mask)}
    w = mb.tok_w_BT * mb.per_seq(mb.data.sft_w)[:, None]
    return Term(lc.curio_coef * (loss_BT * mask * w).sum(), stats)


def _tsd_rerank(mb: MicroBatch, cfg: TrainConfig) -> Term:
    """TSD-KD's ranking loss through each trajectory's student score ``s`` (mean log-prob per
    action token): ``sum c * (s - sg(s0)) + share``, whose gradient over the update's
    micro-batches is the ranking loss's and whose value sums to it (``c``, ``s0``, ``share``
    from :func:`agentsd.distill.family_more.rerank_batch`)."""
    lp, m, x = mb.out["logp_BT"].float(), mb.mask_BT, mb.extra
    s_B = (lp * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    loss = (x["rerank_coef_B"] * (s_B - x["rerank_s0_B"]) + x["rerank_loss_B"]).sum()
    st = mb.data.family["rerank_stats"]
    return Term(loss, {"rerankagree": [v for i in mb.index for v in st["agree"][i]],
                       "rerankin": [st["ranked"][i] for i in mb.index]})


def _sft(mb: MicroBatch, cfg: TrainConfig) -> Term:
    from agentsd.distill import losses as L

    sl = L.sft_loss(mb.out["logp_BT"], mb.mask_BT)
    return Term((sl.loss_BT * mb.tok_w_BT * mb.per_seq(mb.data.sft_w)[:, None]).sum())


#: every loss term the loop knows; ``distill`` reads ``cfg.loss.kind`` (reverse_kl, pg: sampled
#: tokens only; jsd: full-vocabulary or top-k logits; pi_distill: π-Distill, full vocabulary)
#: and the family's options (SOD turn weights, TRACE routing, UniSD / AVSD teachers)
OBJECTIVES: dict[str, Objective] = {
    "distill": Objective("distill", _distill, needs_teacher=True,
                         doc="teacher-student divergence on the student's action tokens"),
    "grpo": Objective("grpo", _grpo, doc="clipped surrogate on group-relative env-reward advantages"),
    "sft": Objective("sft", _sft, doc="negative log-likelihood of action tokens (demos, RFT)"),
    "curio": Objective("curio", _curio, needs_logits=True,
                       doc="CurioSFT: KL toward the student's own entropy-tempered distribution"),
    "tsd_rerank": Objective("tsd_rerank", _tsd_rerank,
                            doc="TSD-KD: pairwise ranking loss on the student's candidate scores "
                                "in the teacher's order"),
}

#: each term's per-sequence weight in the batch: a micro-batch where all are 0 skips the term
_WEIGHT = {"grpo": "grpo_w", "sft": "sft_w", "curio": "sft_w"}


def terms_for(cfg: TrainConfig) -> list[Objective]:
    """The loss terms an algorithm sums: opd/opsd distill (+ a GRPO blend), grpo, rft/sft nll."""
    if cfg.algo in ("opd", "opsd"):
        rerank = [OBJECTIVES["tsd_rerank"]] if cfg.loss.tsd_rerank_weight > 0 else []
        return [OBJECTIVES["distill"], *rerank] + (
            [OBJECTIVES["grpo"]] if cfg.loss.grpo_coef > 0 or cfg.loss.success_routing
            or cfg.loss.trace else [])
    curio = [OBJECTIVES["curio"]] if cfg.loss.curio_sft and cfg.algo in ("sft", "rft") else []
    return [OBJECTIVES[{"grpo": "grpo", "rft": "sft", "sft": "sft"}[cfg.algo]]] + curio


def needs_logits(cfg: TrainConfig) -> bool:
    """Whether the objective needs full-vocabulary logits (jsd, π-Distill, OPAD's JSD, CurioSFT),
    not only log-probs."""
    from agentsd.distill.family_more import loss_kind

    terms = terms_for(cfg)
    return any(t.needs_logits for t in terms) or (
        any(t.needs_teacher for t in terms) and not cfg.loss.cepo
        and loss_kind(cfg)[0] in ("jsd", "pi_distill"))


def applies(term: Objective, mb: MicroBatch) -> bool:
    """Whether ``term`` has any weight on ``mb`` (GRPO / SFT on no sequence of it: skipped)."""
    name = _WEIGHT.get(term.name)
    return name is None or any(getattr(mb.data, name)[i] for i in mb.index)
