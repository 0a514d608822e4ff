"""The update stage: teacher scores, the objective, backward, the optimizer step, the metrics.

:func:`update` runs over the step's :class:`~agentsd.distill.batch.Batch` in micro-batches,
each through the same named stages::

    mb      = micro_batch(batch, idx)                 # padded tensors
    teacher = teacher_scores(teacher, mb)             # no grad; one scoring per view (UniSD/AVSD)
    out     = student_forward(model, mb)              # with grad, on action tokens only
    terms   = [term.fn(mb, cfg) for term in terms_for(cfg)]   # each its loss and its stats
    backward(sum of the terms' losses)                # accumulated under one global normalization

The micro-batch size and gradient checkpointing come from the memory budget
(:mod:`agentsd.distill.memory`, ``--optim.memory-budget-gb``); with ``--optim.share-prefix``
the rows' common prefixes are computed once (:mod:`agentsd.distill.prefix`), the student's
with gradients flowing through the one prefix computation. Then :func:`optimizer_step`
(gradient clipping; skipped, and reported, when nothing has a gradient, e.g. GRPO on a group
with equal rewards) and :func:`summarize_stats` (the terms' stats as metrics). Micro-batching
(and sharing) never changes the update. The batch itself is built once a step
(:mod:`agentsd.distill.batch`), the loss terms live in :mod:`agentsd.distill.objectives`; both
are importable from here as before.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentsd.distill.batch import (
    Batch,
    MicroBatch,
    StepData,
    build_batch,
    fill_feedback,
    micro_batch,
    micro_batches,
    trace_marks,
    turn_agrees,
    turn_index,
)
from agentsd.distill.config import TrainConfig
from agentsd.distill.objectives import OBJECTIVES, Objective, Term, applies, needs_logits, terms_for

if TYPE_CHECKING:
    import torch

__all__ = ["Batch", "StepData", "MicroBatch", "Objective", "Term", "OBJECTIVES", "terms_for",
           "needs_logits", "build_batch", "update", "optimizer_step", "micro_batches",
           "teacher_scores", "student_forward", "summarize_stats", "turn_index", "turn_agrees",
           "trace_marks", "fill_feedback"]

#: the diagnostics every rank collects (the same keys everywhere: they are gathered)
_STATS = ("div", "gap", "ratio", "isclip", "tokclip", "ent", "sodw", "divclip", "agree")


@dataclass(frozen=True)
class _Plan:
    """What every micro-batch of one update shares."""

    terms: list[Objective]
    use_teacher: bool
    want_logits: bool
    #: the sampler's temperature: score with the distribution it drew from, so the importance
    #: ratio compares like with like (top-p renormalization remains a clipped, logged mismatch)
    temperature: float
    tok_ids: list[list[int]]
    lengths: list[int]
    n_action: list[int]
    #: the loss normalization over every rank's tokens (or sequences)
    denom: float
    device: Any
    forward: Callable[..., dict[str, Any]]
    #: shared-prefix forwards (``optim.share_prefix``): the student's and the teacher's, each
    #: with its own forward size; ``None`` runs the unshared path
    share_student: Any = None
    share_teacher: Any = None


def _plan(model: Any, data: Batch, cfg: TrainConfig, max_tokens: int) -> _Plan:
    from agentsd.distill import distributed
    from agentsd.distill.teacher import forward_logprobs

    terms = terms_for(cfg)
    tok_ids = [t.token_ids() for t in data.trajs]  # built once (token_ids() rebuilds per call)
    n_action = [t.num_action_tokens() for t in data.trajs]
    denom = float(sum(n_action)) if cfg.loss.reduce == "token" else float(sum(1 for x in n_action if x))
    if "stepw" in data.family.get("tok", {}):  # OPAD step-level sampling: steps (episodes) count
        denom = float(sum(map(sum, data.family["tok"]["stepw"])))
    # FSDP: through the root unit's hooks (agentsd.distill.fsdp)
    fwd = getattr(model, "fsdp_forward_logprobs", None) or functools.partial(forward_logprobs, model)
    return _Plan(terms, any(t.needs_teacher for t in terms), needs_logits(cfg),
                 cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0, tok_ids,
                 [len(x) for x in tok_ids], n_action, max(distributed.sum_scalar(denom), 1.0),
                 next(model.parameters()).device, fwd, *_sharing(model, cfg, max_tokens))


def _sharing(model: Any, cfg: TrainConfig, max_tokens: int) -> tuple[Any, Any]:
    """The student's and the teacher's :class:`~agentsd.distill.prefix.Sharing` (``None``: off).
    FSDP's student forward stays unshared: every layer's forward is a collective and the
    number of node forwards differs by rank (the teacher scores inside ``full_weights``, where
    forwards make no collective, so it still shares)."""
    from agentsd.distill import fsdp
    from agentsd.distill.prefix import Sharing

    oc = cfg.optim
    if not oc.share_prefix:
        return None, None
    student = Sharing(min_tokens=oc.share_prefix_min_tokens, max_tokens=max_tokens)
    teacher = Sharing(min_tokens=oc.share_prefix_min_tokens,
                      max_tokens=cfg.teacher.max_tokens_per_forward)
    if fsdp.sharded(model):
        student.fallback("FSDP shards the student (the shared forward's collectives would differ "
                         "by rank); the teacher still shares")
        student.enabled = False
    return student, teacher


def _share_metrics(plan: _Plan) -> dict[str, float]:
    """``prefix/shared_tokens`` and ``prefix/total_tokens``: tokens the update's forwards did
    not recompute, of all the rows' tokens (student and teacher), summed over ranks; absent
    when nothing was shared and nothing fell back."""
    from agentsd.distill import distributed

    shares = [s for s in (plan.share_student, plan.share_teacher) if s is not None]
    if not shares:
        return {}
    m = {k: distributed.sum_scalar(sum(s.metrics()[k] for s in shares))
         for k in ("prefix/shared_tokens", "prefix/total_tokens")}
    # quiet when nothing was worth sharing (short rows): the metrics of such runs stay as before
    fell_back = distributed.sum_scalar(float(any(s.fell_back for s in shares)))
    return m if m["prefix/shared_tokens"] > 0 or fell_back > 0 else {}


# ---------------------------------------------------------------------------------------------
# the stages of one micro-batch

def teacher_scores(teacher: Any, mb: MicroBatch, plan: _Plan, cfg: TrainConfig, pad_id: int,
                   autocast: Callable[[Any], Any]) -> dict[str, torch.Tensor]:
    """The teacher's log-probs (and logits, for full-vocabulary losses) of the micro-batch's
    student tokens, from the batch's teacher rows; with several teachers
    (``teacher.score_views``) also ``teacher_logp_NBT``, one scoring per view."""
    import torch

    from agentsd.distill import fsdp
    from agentsd.distill.teacher import score_rows

    def score(rows_per_traj: list[list[Any]]) -> dict[str, torch.Tensor]:
        rows = [dataclasses.replace(r, traj_index=j) for j, i in enumerate(mb.index)
                for r in rows_per_traj[i]]
        with teacher.scoring() as tm, fsdp.full_weights(tm), autocast(tm):
            return score_rows(tm, rows, [plan.lengths[i] for i in mb.index], pad_id,
                              max_tokens=cfg.teacher.max_tokens_per_forward,
                              want_logits=plan.want_logits, chunk_size=cfg.loss.chunk_size,
                              temperature=plan.temperature, share=plan.share_teacher)

    out = score(mb.data.rows)
    if mb.data.rows_by_view:
        out["teacher_logp_NBT"] = torch.stack(
            [out["teacher_logp_BT"]] + [score(r)["teacher_logp_BT"] for r in mb.data.rows_by_view[1:]])
    if mb.data.family.get("rows"):  # more teachers (CEPO's wrong-answer teacher)
        from agentsd.distill.family_more import score_extra_rows

        out.update(score_extra_rows(mb.data.family, score))
    return out


def student_forward(mb: MicroBatch, plan: _Plan, cfg: TrainConfig, model: Any,
                    autocast: Callable[[Any], Any]) -> dict[str, torch.Tensor]:
    """The student's log-probs (with grad) and entropies; the head runs on action tokens only,
    as every objective reads them there alone."""
    share = plan.share_student
    if share is not None and not share.enabled:
        share.count(int(mb.attn_BT.sum()), int(mb.attn_BT.sum()))
        share = None
    kw = {"share": share} if share is not None else {}
    with autocast(model):
        return plan.forward(mb.ids_BT, mb.attn_BT, chunk_size=cfg.loss.chunk_size,
                            want_logits=plan.want_logits, want_entropy=True,
                            temperature=plan.temperature, positions_BT=mb.mask_BT, **kw)


def _backward(model: Any, mb: MicroBatch, losses: Sequence[torch.Tensor]) -> None:
    from agentsd.distill import fsdp

    total = mb.out["logp_BT"].new_zeros(())
    for v in losses:
        total = total + v
    if not total.requires_grad and fsdp.sharded(model):  # FSDP: every backward is collective
        total = total + 0.0 * mb.out["logp_BT"].sum()
    if total.requires_grad:
        total.backward()


def _scores(mb: MicroBatch, plan: _Plan) -> dict[int, dict[str, list[float]]]:
    """Per trajectory of the micro-batch, its token log-probs (student, teacher) for the report."""
    lp, out = mb.out["logp_BT"], {}
    for j, i in enumerate(mb.index):
        out[i] = {"student_logp": lp[j, : plan.lengths[i]].detach().cpu().tolist()}
        if mb.teacher is not None:
            out[i]["teacher_logp"] = mb.teacher["teacher_logp_BT"][j, : plan.lengths[i]].cpu().tolist()
    return out


# ---------------------------------------------------------------------------------------------
# the optimizer step and the metrics

def optimizer_step(model: Any, opt: Any, grad_clip: float, min_norm: float = 0.0) -> tuple[float, bool]:
    """Clip and step; returns the gradient norm and whether a step was taken: none when no
    parameter has a gradient or the norm is at most ``min_norm`` (only zeros when 0: AdamW
    would still decay the weights; and AdamW turns even a 1e-6 noise gradient into a full-size
    step). The norm is global also for FSDP's sharded gradients."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not params:
        return 0.0, False
    if grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    else:
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    if norm <= min_norm:
        return norm, False
    opt.step()
    return norm, True


def _frac(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def summarize_stats(col: dict[str, list[float]]) -> dict[str, float]:
    """The loss terms' collected per-token stats as metrics (a name absent when nothing was
    collected under it).

    >>> m = summarize_stats({"div": [0.5, 1.5], "ratio": [1.0, 3.0], "isclip": [0.0, 1.0]})
    >>> m["kl/mean"], m["is/ratio_max"], m["is/clip_frac"]
    (1.0, 3.0, 0.5)
    """
    from agentsd.distill.metrics import summarize_values

    m = {**summarize_values(col.get("div", []), "kl"), **summarize_values(col.get("gap", []), "gap"),
         **summarize_values(col.get("ent", []), "entropy", pcts=())}
    if col.get("ratio"):
        m["is/ratio_mean"] = _frac(col["ratio"])
        m["is/ratio_max"] = float(max(col["ratio"]))
        m["is/clip_frac"] = _frac(col["isclip"])
    if col.get("tokclip"):
        m["clip/token_frac"] = _frac(col["tokclip"])
    if col.get("divclip"):
        m["clip/div_frac"] = _frac(col["divclip"])
    if col.get("sodw"):
        m["sod/turn_weight_min"] = float(min(col["sodw"]))
        m["sod/turn_weight_max"] = float(max(col["sodw"]))
    if col.get("agree"):
        m["teacher/agreement_mean"] = _frac(col["agree"])
    from agentsd.distill.family_more import summarize  # issue 25's methods

    return {**m, **summarize(col)}


def _trace_metrics(data: Batch, n_action: Sequence[int]) -> dict[str, float]:
    if not data.trace_fwd:
        return {}
    n_tok = max(float(sum(n_action)), 1.0)
    return {"trace/kl_scale": data.kl_scale,
            "trace/forward_frac": sum(map(sum, data.trace_fwd)) / n_tok,
            "trace/reverse_frac": sum(map(sum, data.trace_rev)) / n_tok}


def _metrics(totals: dict[str, float], col: dict[str, list[float]], grad_norm: float,
             data: Batch, plan: _Plan, stepped: bool) -> dict[str, float]:
    """The update's metrics, every rank's values reduced."""
    from agentsd.distill import distributed

    totals = {k: distributed.sum_scalar(v) for k, v in totals.items()}
    m = {f"loss/{k}": v for k, v in totals.items()}
    m["loss/total"] = sum(totals.values())
    m["optim/grad_norm"] = grad_norm
    # 0 when no step was taken: GRPO with equal rewards (a zero gradient), or a norm at most
    # optim.min_grad_norm (a teacher that reads like the student)
    m["optim/updated"] = float(stepped)
    return {**m, **summarize_stats(distributed.gather_lists(col)), **_trace_metrics(data, plan.n_action),
            **_share_metrics(plan)}


# ---------------------------------------------------------------------------------------------
# the update

def update(model: Any, opt: Any, teacher: Any, data: Batch, cfg: TrainConfig, pad_id: int,
           autocast: Callable[[Any], Any]) -> tuple[dict[str, float], list[dict]]:
    """One optimizer update over ``data`` (see the module docstring). Returns metrics and
    per-trajectory token scores (for the report)."""
    from agentsd.distill import distributed, fsdp, memory
    from agentsd.distill.metrics import masked_values

    choice = memory.resolve(model, cfg)  # once per model: printed and logged
    max_tokens = choice.max_tokens_per_micro_batch if choice else cfg.optim.max_tokens_per_micro_batch
    plan = _plan(model, data, cfg, max_tokens)
    memory.check_rows(plan.lengths, max_tokens, choice)
    if cfg.loss.tsd_rerank_weight > 0:  # TSD-KD: the teacher ranks every group's candidates first
        from agentsd.distill.family_more import rerank_batch

        data = rerank_batch(model, teacher, data, plan, cfg, pad_id, autocast, max_tokens)
    col: dict[str, list[float]] = {k: [] for k in _STATS}
    totals = {t.name: 0.0 for t in plan.terms}
    scores: list[dict] = [{} for _ in data.trajs]
    opt.zero_grad(set_to_none=True)
    # FSDP: each forward is a collective, so every rank runs as many micro-batches, a rank short
    # of data idle ones
    share = plan.share_student
    shared_ids = plan.tok_ids if share is not None and share.enabled else None
    for idx in fsdp.pad_micro_batches(model, micro_batches(
            plan.lengths, max_tokens, shared_ids, cfg.optim.share_prefix_min_tokens)):
        if not idx:
            fsdp.idle_pass(model, teacher, max(1, len(data.rows_by_view)) if plan.use_teacher else 0)
            continue
        mb = micro_batch(data, idx, plan.tok_ids, plan.denom, cfg, pad_id, plan.device)
        if plan.use_teacher:
            mb = dataclasses.replace(mb, teacher=teacher_scores(teacher, mb, plan, cfg, pad_id, autocast))
        mb = dataclasses.replace(mb, out=student_forward(mb, plan, cfg, model, autocast))
        terms: list[tuple[str, Term]] = [(t.name, t.fn(mb, cfg)) for t in plan.terms if applies(t, mb)]
        for name, term in terms:
            totals[name] += float(term.loss.detach())
            for k, v in term.stats.items():
                col.setdefault(k, []).extend(v)
        col["ent"] += masked_values(mb.out["entropy_BT"], mb.mask_BT)
        _backward(model, mb, [term.loss for _, term in terms])
        for i, s in _scores(mb, plan).items():
            scores[i] = s
    distributed.all_reduce_grads([p for p in model.parameters() if p.requires_grad])
    grad_norm, stepped = optimizer_step(model, opt, cfg.optim.grad_clip, cfg.optim.min_grad_norm)
    return _metrics(totals, col, grad_norm, data, plan, stepped), scores

