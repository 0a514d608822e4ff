"""One update, in three named stages: build the batch, evaluate the objective, step the optimizer.

- :func:`build_batch` (once per step): per-sequence weights (group advantages, pass-rate
  weights, success routing) and the teacher's rows (its own context + the student's exact
  tokens), so ``updates_per_step > 1`` never rebuilds them;
- :data:`OBJECTIVES`: one entry per loss term, each a function of the micro-batch's tensors
  that returns a per-token loss, with a flag saying whether it needs full-vocabulary logits.
  An algorithm is a list of terms (:func:`terms_for`); a new loss touches one function here
  and its tests;
- :func:`optimizer_step`: gradient clipping and the optimizer step (skipped, and reported, when
  nothing has a gradient, e.g. GRPO on a group with equal rewards).

The self-distillation family lives in these stages as options (CONTRIBUTING has the table):
feedback teachers (SD-Zero reviser, SDPO sibling) fill ``extra.feedback`` in :func:`build_batch`
before the teacher rows are built; TRACE's spans and SOD's turn boundaries come from each turn's
action span there too; the per-token and per-turn weights (SOD, UniSD agreement and divergence
clipping) and the loss kinds (π-Distill, TRACE's forward/reverse routing, AVSD's consensus) are
applied in the ``distill`` objective.

:func:`update` runs the three over micro-batches with gradients accumulated under one global
normalization (so micro-batching never changes the update).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentsd.distill.config import TrainConfig
from agentsd.trajectory import Trajectory

if TYPE_CHECKING:
    import torch

__all__ = ["StepData", "MicroBatch", "Objective", "OBJECTIVES", "terms_for", "build_batch",
           "update", "optimizer_step", "micro_batches", "turn_index", "turn_agrees",
           "trace_marks", "fill_feedback"]


@dataclass
class StepData:
    """The step's trajectories as per-sequence weights and teacher rows (built once a step)."""

    trajs: list[Trajectory]
    advantages: list[float]
    distill_w: list[float]
    grpo_w: list[float]
    sft_w: list[float]
    #: teacher rows per trajectory (empty when the algorithm has no teacher)
    rows: list[list[Any]] = field(default_factory=list)
    #: SOD: per token of each trajectory, the turn whose action it belongs to (-1 elsewhere);
    #: empty when SOD is off
    turns: list[list[int]] = field(default_factory=list)
    #: TRACE: per token, 1 on forward-KL (agreeing turns of successes) / reverse-KL (disagreeing
    #: turns) spans; empty when TRACE is off
    trace_fwd: list[list[float]] = field(default_factory=list)
    trace_rev: list[list[float]] = field(default_factory=list)
    #: TRACE: the KL channel's strength this step (1 during the warm-up, then annealed to 0)
    kl_scale: float = 1.0
    #: several teachers (``teacher.score_views``): rows per view, then per trajectory
    rows_by_view: list[list[list[Any]]] = field(default_factory=list)


@dataclass
class MicroBatch:
    """Padded tensors of one micro-batch and what the objectives read from them."""

    index: list[int]
    ids_BT: torch.Tensor
    mask_BT: torch.Tensor
    sampler_logp_BT: torch.Tensor
    tok_w_BT: torch.Tensor
    out: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None
    data: StepData
    #: padded per-token extras: with SOD ``turn_BT``, with TRACE ``trace_fwd_BT`` / ``trace_rev_BT``
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def per_seq(self, xs: Sequence[float]) -> torch.Tensor:
        import torch

        return torch.tensor([xs[i] for i in self.index], dtype=torch.float32,
                            device=self.ids_BT.device)


@dataclass(frozen=True)
class Objective:
    """A loss term: ``fn(mb, cfg, col)`` returns the weighted scalar loss of a micro-batch and
    appends diagnostics to ``col``; ``needs_teacher`` / ``needs_logits`` say what the forward
    must provide."""

    name: str
    fn: Callable[[MicroBatch, TrainConfig, dict[str, list[float]]], torch.Tensor]
    needs_teacher: bool = False
    needs_logits: bool = False
    doc: str = ""


def _token_loss(mb: MicroBatch, cfg: TrainConfig, t_lp: torch.Tensor, mask: torch.Tensor,
                direction: str = "") -> Any:
    """The per-token distillation loss of ``cfg.loss.kind`` on ``mask``; ``direction``
    (``"forward"`` / ``"reverse"``, TRACE) forces the KL direction."""
    from agentsd.distill import losses as L

    lc, lp = cfg.loss, mb.out["logp_BT"]
    if lc.kind in ("jsd", "pi_distill"):
        alpha = {"forward": 0.0, "reverse": 1.0}.get(direction, lc.alpha)
        return L.chunked_divergence(mb.out["logits_rows"], mb.teacher["teacher_logits_rows"],
                                    mask, alpha,
                                    lc.top_k or None, lc.token_clip or None, lc.chunk_size,
                                    pi_alpha=lc.pi_alpha if lc.kind == "pi_distill" else None)
    if direction == "forward":
        return L.sampled_token_forward_kl(lp, t_lp, mask, lc.is_clip or None)
    if lc.kind == "pg":
        return L.policy_gradient_distill(lp, t_lp, mb.sampler_logp_BT, mask, lc.pg_coef,
                                         lc.is_clip or None, lc.token_clip or None)
    return L.sampled_token_reverse_kl(lp, t_lp, mb.sampler_logp_BT, mask, lc.is_clip or None,
                                      lc.token_clip or None)


def _teacher_target(mb: MicroBatch, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's log-probs of the sampled tokens and, with several teachers under UniSD
    agreement, a per-token weight (AVSD: the consensus target, no weight)."""
    from agentsd.distill import losses as L

    lp, mask, tc = mb.out["logp_BT"], mb.mask_BT, cfg.teacher
    if "teacher_logp_NBT" not in mb.teacher:
        return mb.teacher["teacher_logp_BT"].to(lp.device), None
    t_n = mb.teacher["teacher_logp_NBT"].to(lp.device)
    if tc.combine == "avsd":
        return L.avsd_teacher_logp(lp, t_n, mask, tc.avsd_residual), None
    scale = tc.agreement_scale if tc.combine == "agreement" else 0.0
    return L.agreement_weights(t_n, mask, scale)


def _distill(mb: MicroBatch, cfg: TrainConfig, col: dict[str, list[float]]) -> torch.Tensor:
    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values

    lc, lp, mask = cfg.loss, mb.out["logp_BT"], mb.mask_BT
    t_lp, w = _teacher_target(mb, cfg)
    if w is not None:
        col["agree"] += masked_values(w, mask)
    if lc.trace:  # TRACE: forward KL on agreeing spans of successes, reverse KL on errors
        fwd, rev = mb.extra["trace_fwd_BT"], mb.extra["trace_rev_BT"]
        tf, tr = _token_loss(mb, cfg, t_lp, fwd, "forward"), _token_loss(mb, cfg, t_lp, rev, "reverse")
        tl = L.TokenLoss(loss_BT=mb.data.kl_scale * (tf.loss_BT + tr.loss_BT),
                         divergence_BT=tf.divergence_BT + tr.divergence_BT,
                         is_ratio_BT=tr.is_ratio_BT, is_clipped_BT=tr.is_clipped_BT,
                         token_clipped_BT=tr.token_clipped_BT)
        mask = fwd + rev
    else:
        tl = _token_loss(mb, cfg, t_lp, mask)
    tok_w = L.position_weights(mask, lc.position_weight, lc.position_start)
    if lc.turn_weight == "sod":  # SOD: weaker where this turn's student and teacher disagree
        sod = L.turn_weights(tl.divergence_BT, mb.extra["turn_BT"], mask, lc.sod_scale)
        col["sodw"] += masked_values(sod, mask)
        tok_w = tok_w * sod
    if lc.div_clip > 0:  # UniSD divergence clipping
        keep = L.divergence_clip_mask(tl.divergence_BT, mask, lc.div_clip)
        col["divclip"] += masked_values(1.0 - keep, mask)
        tok_w = tok_w * keep
    if w is not None:  # UniSD multi-teacher agreement
        tok_w = tok_w * w
    col["div"] += masked_values(tl.divergence_BT, mask)
    col["gap"] += masked_values(t_lp - lp.detach(), mask)
    if tl.is_ratio_BT is not None:
        col["ratio"] += masked_values(tl.is_ratio_BT, mask)
        col["isclip"] += masked_values(tl.is_clipped_BT, mask)
    if tl.token_clipped_BT is not None:
        col["tokclip"] += masked_values(tl.token_clipped_BT, mask)
    return (tl.loss_BT * tok_w * mb.tok_w_BT * mb.per_seq(mb.data.distill_w)[:, None]).sum()


def _grpo(mb: MicroBatch, cfg: TrainConfig, col: dict[str, list[float]]) -> torch.Tensor:
    from agentsd.distill import losses as L
    from agentsd.distill.metrics import masked_values

    gl = L.grpo_loss(mb.out["logp_BT"], mb.sampler_logp_BT, mb.per_seq(mb.data.advantages),
                     mb.mask_BT, cfg.loss.grpo_clip_eps)
    if mb.teacher is None:
        col["ratio"] += masked_values(gl.is_ratio_BT, mb.mask_BT)
        col["isclip"] += masked_values(gl.is_clipped_BT, mb.mask_BT)
    tok_w = mb.tok_w_BT
    if cfg.loss.trace:  # TRACE: GRPO on unmarked tokens, and on marked ones as the KL anneals
        marked = mb.extra["trace_fwd_BT"] + mb.extra["trace_rev_BT"]
        tok_w = tok_w * (1.0 - mb.data.kl_scale * marked)
    return (gl.loss_BT * tok_w * mb.per_seq(mb.data.grpo_w)[:, None]).sum()


def _sft(mb: MicroBatch, cfg: TrainConfig, col: dict[str, list[float]]) -> torch.Tensor:
    from agentsd.distill import losses as L

    sl = L.sft_loss(mb.out["logp_BT"], mb.mask_BT)
    return (sl.loss_BT * mb.tok_w_BT * mb.per_seq(mb.data.sft_w)[:, None]).sum()


#: every loss term the loop knows; ``distill`` reads ``cfg.loss.kind`` (reverse_kl, pg: sampled
#: tokens only; jsd: full-vocabulary or top-k logits; pi_distill: π-Distill, full vocabulary)
#: and the family's options (SOD turn weights, TRACE routing, UniSD / AVSD teachers)
OBJECTIVES: dict[str, Objective] = {
    "distill": Objective("distill", _distill, needs_teacher=True,
                         doc="teacher-student divergence on the student's action tokens"),
    "grpo": Objective("grpo", _grpo, doc="clipped surrogate on group-relative env-reward advantages"),
    "sft": Objective("sft", _sft, doc="negative log-likelihood of action tokens (demos, RFT)"),
}


def terms_for(cfg: TrainConfig) -> list[Objective]:
    """The loss terms an algorithm sums: opd/opsd distill (+ a GRPO blend), grpo, rft/sft nll."""
    if cfg.algo in ("opd", "opsd"):
        return [OBJECTIVES["distill"]] + ([OBJECTIVES["grpo"]] if cfg.loss.grpo_coef > 0
                                          or cfg.loss.success_routing or cfg.loss.trace else [])
    return [OBJECTIVES[{"grpo": "grpo", "rft": "sft", "sft": "sft"}[cfg.algo]]]


def needs_logits(cfg: TrainConfig) -> bool:
    return any(t.needs_teacher for t in terms_for(cfg)) and cfg.loss.kind in ("jsd", "pi_distill")


# ---------------------------------------------------------------------------------------------
# stage 1: the batch

def turn_index(traj: Trajectory) -> list[int]:
    """The turn each token of ``traj.token_ids()`` belongs to as an action token (-1 on prompt,
    env and tool tokens): SOD's turn boundaries, from each turn's ``action_ids`` span."""
    return [x for k, turn in enumerate(traj.turns)
            for x in (*([-1] * len(turn.prompt_ids)), *([k] * len(turn.action_ids)))]


def _normalized_action(text: str) -> str:
    """An action reduced to what the env acts on: its tool calls (name + arguments, key-sorted
    JSON), else its ``<answer>`` (case and spacing folded), else its whole text folded."""
    import json

    from agentsd.tools import parse_action

    p = parse_action(text or "")
    if p.ok and p.tool_calls:
        return json.dumps([[c.name, c.arguments] for c in p.tool_calls], sort_keys=True, default=str)
    body = p.answer if p.ok and p.answer is not None else (text or "")
    return " ".join(body.lower().split())


def turn_agrees(action_text: str, reference: str) -> bool:
    """TRACE's span test: the turn's parsed action equals the env's reference step (normalized
    texts compared; see :func:`_normalized_action`).

    >>> turn_agrees("I push. <answer> UP </answer>", "<answer>up</answer>")
    True
    """
    return _normalized_action(action_text) == _normalized_action(reference)


def trace_marks(traj: Trajectory) -> tuple[list[float], list[float]]:
    """TRACE spans of one trajectory, per token: forward-KL marks on the action tokens of turns
    that agree with the recorded reference (``Turn.privileged["reference"]``) in a successful
    rollout, reverse-KL marks on turns that disagree; turns without a reference and agreeing
    turns of failed rollouts stay unmarked (GRPO)."""
    fwd: list[float] = []
    rev: list[float] = []
    for turn in traj.turns:
        ref = (turn.privileged or {}).get("reference")
        agree = None if not ref else turn_agrees(turn.action_text, ref)
        f, r = float(bool(agree) and traj.success), float(agree is False)
        fwd += [0.0] * len(turn.prompt_ids) + [f] * len(turn.action_ids)
        rev += [0.0] * len(turn.prompt_ids) + [r] * len(turn.action_ids)
    return fwd, rev


def fill_feedback(trajs: list[Trajectory], mode: str, G: int) -> list[bool]:
    """Fill the ``feedback`` view (``Turn.privileged["extra"]["feedback"]`` of turn 0, so the
    teacher has read it before every action) from the step's groups (task-major, ``G`` a
    task), before the teacher rows are built. Returns, per trajectory, whether it has a teacher.

    - ``"reviser"`` (SD-Zero): the group's previous sample, an earlier attempt at the same task,
      described with its reward and the env's replies (:func:`agentsd.hints.failure_feedback`);
      with ``G == 1`` the trajectory's own attempt;
    - ``"sibling"`` (SDPO): the first *other* successful sample of the group; a trajectory
      without one is not distilled (``False``).
    """
    from agentsd.hints import failure_feedback

    keep = [True] * len(trajs)
    if mode == "none":
        return keep
    for s in range(0, len(trajs), G):
        group = trajs[s:s + G]
        for g, t in enumerate(group):
            if mode == "reviser":
                src = group[(g - 1) % len(group)]
            else:
                src = next((o for j, o in enumerate(group) if j != g and o.success), None)
                if src is None:
                    keep[s + g] = False
                    continue
            if t.turns:
                views = dict(t.turns[0].privileged or {})
                views["extra"] = {**(views.get("extra") or {}), "feedback": failure_feedback(src)}
                t.turns[0].privileged = views
    return keep


def build_batch(trajs: list[Trajectory], cfg: TrainConfig, G: int,
                teacher_rows: Callable[[Trajectory, int], list[Any]] | None = None,
                step: int = 0) -> StepData:
    """Per-sequence weights of the step's trajectories (task-major, ``G`` samples per task) and,
    with ``teacher_rows``, each trajectory's teacher rows (with ``teacher.score_views``, a list
    of rows per view), built after the feedback view is filled. ``step`` sets TRACE's KL
    schedule."""
    import torch

    from agentsd.distill import losses as L

    lc = cfg.loss
    n = len(trajs)
    has_teacher = fill_feedback(trajs, cfg.teacher.feedback, G) if cfg.uses_teacher else [True] * n
    rows = [teacher_rows(t, i) for i, t in enumerate(trajs)] if teacher_rows else []
    by_view: list[list[list[Any]]] = []
    if rows and cfg.teacher.score_views:
        by_view = [[r[v] for r in rows] for v in range(len(cfg.teacher.score_views))]
        rows = by_view[0]
    if cfg.algo == "sft":
        return StepData(trajs, [0.0] * n, [0.0] * n, [0.0] * n, [1.0] * n, rows)
    rewards = torch.tensor([t.total_reward for t in trajs], dtype=torch.float32)
    success = torch.tensor([float(t.success) for t in trajs])
    adv, pass_w = torch.zeros(n), torch.ones(n)
    for s in range(0, n, G):
        adv[s:s + G] = L.group_advantages(rewards[s:s + G], normalize_std=lc.grpo_std_norm)
        if lc.pass_rate_a or lc.pass_rate_b:
            pass_w[s:s + G] = L.pass_rate_weight(success[s:s + G].mean(), lc.pass_rate_a,
                                                 lc.pass_rate_b)
    if cfg.algo == "grpo":
        return StepData(trajs, adv.tolist(), [0.0] * n, [1.0] * n, [0.0] * n, rows)
    if cfg.algo == "rft":
        return StepData(trajs, adv.tolist(), [0.0] * n, [0.0] * n, success.tolist(), rows)
    grpo_w, distill_w = torch.full((n,), lc.grpo_coef), torch.full((n,), lc.distill_coef)
    if lc.trace and lc.grpo_coef == 0:
        grpo_w = torch.ones(n)  # TRACE: the tokens off the marked spans always learn from GRPO
    if lc.success_routing:
        g, d = L.route_by_success(success)
        grpo_w, distill_w = grpo_w * g, distill_w * d
    distill_w = distill_w * torch.tensor(has_teacher, dtype=torch.float32)
    data = StepData(trajs, adv.tolist(), (distill_w * pass_w).tolist(), grpo_w.tolist(),
                    [0.0] * n, rows, rows_by_view=by_view)
    if lc.turn_weight == "sod":  # SOD's turn boundaries (nothing else reads them)
        data.turns = [turn_index(t) for t in trajs]
    if lc.trace:
        marks = [trace_marks(t) for t in trajs]
        data.trace_fwd, data.trace_rev = [m[0] for m in marks], [m[1] for m in marks]
        data.kl_scale = L.trace_kl_scale(step, lc.trace_warmup_steps, lc.trace_anneal_steps)
    return data


def micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped (longest first) so each padded micro-batch holds at most ``max_tokens``
    tokens; a longer single sequence goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and lengths[out[-1][0]] * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _pad(seqs: Sequence[Sequence[float]], dtype: Any, fill: float = 0) -> Any:
    import torch

    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), fill, dtype=dtype)
    for b, s in enumerate(seqs):
        out[b, : len(s)] = torch.tensor(list(s), dtype=dtype)
    return out


# ---------------------------------------------------------------------------------------------
# stage 3: the optimizer step

def optimizer_step(model: Any, opt: Any, grad_clip: float) -> float:
    """Clip and step; returns the gradient norm (0.0 and no step when no parameter has a
    gradient, or only zero ones: AdamW would still decay the weights). The norm is global also
    for FSDP's sharded gradients."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not params:
        return 0.0
    if grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    else:
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    if norm == 0.0:
        return 0.0
    opt.step()
    return norm


# ---------------------------------------------------------------------------------------------
# the update

def update(model: Any, opt: Any, teacher: Any, data: StepData, cfg: TrainConfig, pad_id: int,
           autocast: Callable[[Any], Any]) -> tuple[dict[str, float], list[dict]]:
    """Forward/backward over micro-batches (stage 2 per term), then :func:`optimizer_step`.
    Returns metrics and per-trajectory token scores (for the report)."""
    import torch

    from agentsd.distill import distributed, fsdp
    from agentsd.distill.metrics import masked_values, summarize_values
    from agentsd.distill.teacher import forward_logprobs, score_rows

    terms = terms_for(cfg)
    use_teacher = any(t.needs_teacher for t in terms)
    want_logits = needs_logits(cfg)
    trajs = data.trajs
    # score with the distribution the sampler drew from (its temperature), so the importance
    # ratio compares like with like; top-p renormalization remains a (clipped, logged) mismatch
    temp = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    # each trajectory's sequences, built once (token_ids() etc. rebuild their lists per call)
    tok_ids = [t.token_ids() for t in trajs]
    lengths = [len(x) for x in tok_ids]
    n_action = [t.num_action_tokens() for t in trajs]
    denom = float(sum(n_action)) if cfg.loss.reduce == "token" else float(sum(1 for x in n_action if x))
    denom = max(distributed.sum_scalar(denom), 1.0)  # one normalization over every rank's tokens
    col: dict[str, list[float]] = {k: [] for k in ("div", "gap", "ratio", "isclip", "tokclip", "ent",
                                                   "sodw", "divclip", "agree")}
    totals = {t.name: 0.0 for t in terms}
    scores: list[dict] = [{} for _ in trajs]
    dev = next(model.parameters()).device
    opt.zero_grad(set_to_none=True)
    # FSDP: through the root unit's hooks (agentsd.distill.fsdp); each forward is a collective,
    # so every rank runs as many micro-batches, a rank short of data idle ones
    fwd = getattr(model, "fsdp_forward_logprobs", None) or functools.partial(forward_logprobs, model)
    batches = fsdp.pad_micro_batches(model, micro_batches(lengths, cfg.optim.max_tokens_per_micro_batch))
    for idx in batches:
        if not idx:
            fsdp.idle_pass(model, teacher, max(1, len(data.rows_by_view)) if use_teacher else 0)
            continue
        ts = [trajs[i] for i in idx]
        ids = _pad([tok_ids[i] for i in idx], torch.long, pad_id).to(dev)
        attn = _pad([[1] * lengths[i] for i in idx], torch.long).to(dev)
        mask = _pad([t.action_mask() for t in ts], torch.float32).to(dev)
        s_lp = _pad([t.sampler_logprobs() for t in ts], torch.float32).to(dev)
        # per-token weights realizing the chosen reduction with one global denominator
        tok_w = mask / denom
        if cfg.loss.reduce == "sequence":
            tok_w = mask / mask.sum(-1, keepdim=True).clamp_min(1.0) / denom
        t_out = None
        if use_teacher:
            def score(rows_per_traj: list[list[Any]], idx: list[int] = idx,
                      ) -> dict[str, torch.Tensor]:
                rows = [dataclasses.replace(r, traj_index=j) for j, i in enumerate(idx)
                        for r in rows_per_traj[i]]
                with teacher.scoring() as tm, fsdp.full_weights(tm), autocast(tm):
                    return score_rows(tm, rows, [lengths[i] for i in idx], pad_id,
                                      max_tokens=cfg.teacher.max_tokens_per_forward,
                                      want_logits=want_logits, chunk_size=cfg.loss.chunk_size,
                                      temperature=temp)

            t_out = score(data.rows)
            if data.rows_by_view:  # several teachers: one scoring per view
                t_out["teacher_logp_NBT"] = torch.stack(
                    [t_out["teacher_logp_BT"]] + [score(r)["teacher_logp_BT"]
                                                  for r in data.rows_by_view[1:]])
        extra = {"turn_BT": _pad([data.turns[i] for i in idx], torch.long, -1).to(dev)} \
            if data.turns else {}
        if data.trace_fwd:
            extra["trace_fwd_BT"] = _pad([data.trace_fwd[i] for i in idx], torch.float32).to(dev)
            extra["trace_rev_BT"] = _pad([data.trace_rev[i] for i in idx], torch.float32).to(dev)
        with autocast(model):
            # the head runs on action tokens only: every objective reads logp there alone
            out = fwd(ids, attn, chunk_size=cfg.loss.chunk_size, want_logits=want_logits,
                      want_entropy=True, temperature=temp, positions_BT=mask)
        mb = MicroBatch(idx, ids, mask, s_lp, tok_w, out, t_out, data, extra)
        total = out["logp_BT"].new_zeros(())
        for term in terms:
            if term.name == "grpo" and not any(data.grpo_w[i] for i in idx):
                continue
            if term.name == "sft" and not any(data.sft_w[i] for i in idx):
                continue
            v = term.fn(mb, cfg, col)
            totals[term.name] += float(v.detach())
            total = total + v
        col["ent"] += masked_values(out["entropy_BT"], mask)
        if not total.requires_grad and fsdp.sharded(model):  # FSDP: every backward is collective
            total = total + 0.0 * out["logp_BT"].sum()
        if total.requires_grad:
            total.backward()
        lp = out["logp_BT"]
        for j, i in enumerate(idx):
            scores[i] = {"student_logp": lp[j, : lengths[i]].detach().cpu().tolist()}
            if t_out is not None:
                scores[i]["teacher_logp"] = t_out["teacher_logp_BT"][j, : lengths[i]].cpu().tolist()
    distributed.all_reduce_grads([p for p in model.parameters() if p.requires_grad])
    grad_norm = optimizer_step(model, opt, cfg.optim.grad_clip)
    totals = {k: distributed.sum_scalar(v) for k, v in totals.items()}
    col = distributed.gather_lists(col)
    m = {f"loss/{k}": v for k, v in totals.items()}
    m["loss/total"] = sum(totals.values())
    m["optim/grad_norm"] = grad_norm
    m["optim/updated"] = float(grad_norm > 0)  # e.g. GRPO with equal rewards: zero gradient
    m.update(summarize_values(col["div"], "kl"))
    m.update(summarize_values(col["gap"], "gap"))
    m.update(summarize_values(col["ent"], "entropy", pcts=()))
    if col["ratio"]:
        m["is/ratio_mean"] = float(sum(col["ratio"]) / len(col["ratio"]))
        m["is/ratio_max"] = float(max(col["ratio"]))
        m["is/clip_frac"] = float(sum(col["isclip"]) / len(col["isclip"]))
    if col["tokclip"]:
        m["clip/token_frac"] = float(sum(col["tokclip"]) / len(col["tokclip"]))
    if col["divclip"]:
        m["clip/div_frac"] = float(sum(col["divclip"]) / len(col["divclip"]))
    if col["sodw"]:
        m["sod/turn_weight_min"] = float(min(col["sodw"]))
        m["sod/turn_weight_max"] = float(max(col["sodw"]))
    if col["agree"]:
        m["teacher/agreement_mean"] = float(sum(col["agree"]) / len(col["agree"]))
    if data.trace_fwd:
        n_tok = max(float(sum(n_action)), 1.0)
        m["trace/kl_scale"] = data.kl_scale
        m["trace/forward_frac"] = sum(map(sum, data.trace_fwd)) / n_tok
        m["trace/reverse_frac"] = sum(map(sum, data.trace_rev)) / n_tok
    return m, scores
