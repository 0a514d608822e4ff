"""The step's batch: built once a step (:func:`build_batch`), frozen, read by every later stage.

A :class:`Batch` carries what the teacher-scoring, objective and metrics stages need, as
per-trajectory lists in the step's task-major order (``G`` samples a task):

- ``trajs``: the student's trajectories, as sampled (never written to);
- ``advantages``, ``distill_w``, ``grpo_w``, ``sft_w``: per-sequence weights (group
  advantages, PACED pass-rate weights, SRPO success routing, the feedback teachers' skips);
- ``rows`` / ``rows_by_view``: the teacher's rows (its own context + the student's exact tokens;
  one list per view with several teachers);
- ``skills``, ``feedback``: the skills each row shows and the feedback view it reads;
- ``turns`` (SOD), ``trace_fwd`` / ``trace_rev`` and ``kl_scale`` (TRACE): per-token spans.

:class:`MicroBatch` is one padded slice of it, with the student's and teacher's outputs once
they are computed (:func:`micro_batch`, then ``dataclasses.replace``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentsd.distill.config import TrainConfig
from agentsd.teacher_context import feedback_for, with_feedback_view
from agentsd.trajectory import Trajectory

if TYPE_CHECKING:
    import torch

__all__ = ["Batch", "StepData", "MicroBatch", "build_batch", "micro_batch", "micro_batches",
           "turn_index", "turn_agrees", "trace_marks", "fill_feedback"]


@dataclass(frozen=True, kw_only=True)
class Batch:
    """The step's trajectories as per-sequence weights, teacher rows and spans (see the module
    docstring). Frozen: a stage that needs something else returns a new value."""

    trajs: list[Trajectory]
    advantages: list[float]
    distill_w: list[float]
    grpo_w: list[float]
    sft_w: list[float]
    #: teacher rows per trajectory (empty when the algorithm has no teacher)
    rows: list[list[Any]] = field(default_factory=list)
    #: several teachers (``teacher.score_views``): rows per view, then per trajectory
    rows_by_view: list[list[list[Any]]] = field(default_factory=list)
    #: names of the skills each trajectory's teacher row shows
    skills: list[list[str]] = field(default_factory=list)
    #: the feedback view each teacher row reads (SD-Zero reviser, SDPO sibling), or None
    feedback: list[str | None] = field(default_factory=list)
    #: SOD: per token, the turn whose action it belongs to (-1 elsewhere); empty when SOD is off
    turns: list[list[int]] = field(default_factory=list)
    #: TRACE: per token, 1 on forward-KL (agreeing turns of successes) / reverse-KL (disagreeing
    #: turns) spans; empty when TRACE is off
    trace_fwd: list[list[float]] = field(default_factory=list)
    trace_rev: list[list[float]] = field(default_factory=list)
    #: TRACE: the KL channel's strength this step (1 during the warm-up, then annealed to 0)
    kl_scale: float = 1.0
    #: issue 25's methods (CEPO's wrong-answer rows, ground-truth marks, OPAD's step weights;
    #: TSD-KD's re-ranking adds its values in the update): see
    #: :func:`agentsd.distill.family_more.batch_extras`; empty when none is on
    family: dict[str, Any] = field(default_factory=dict)


#: the former name of :class:`Batch` (deprecated)
StepData = Batch


@dataclass(frozen=True)
class MicroBatch:
    """Padded tensors of one micro-batch, and the student's (``out``) and teacher's
    (``teacher``) outputs once computed."""

    index: list[int]
    ids_BT: torch.Tensor
    attn_BT: torch.Tensor
    mask_BT: torch.Tensor
    sampler_logp_BT: torch.Tensor
    #: per-token weights realizing the chosen reduction with one global denominator
    tok_w_BT: torch.Tensor
    data: Batch
    #: padded per-token extras: with SOD ``turn_BT``, with TRACE ``trace_fwd_BT`` / ``trace_rev_BT``
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    out: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: dict[str, torch.Tensor] | None = None

    def per_seq(self, xs: Sequence[float]) -> torch.Tensor:
        import torch

        return torch.tensor([xs[i] for i in self.index], dtype=torch.float32,
                            device=self.ids_BT.device)


# ---------------------------------------------------------------------------------------------
# spans: SOD's turns, TRACE's forward / reverse marks

def turn_index(traj: Trajectory) -> list[int]:
    """The turn each token of ``traj.token_ids()`` belongs to as an action token (-1 on prompt,
    env and tool tokens): SOD's turn boundaries, from each turn's ``action_ids`` span."""
    return [x for k, turn in enumerate(traj.turns)
            for x in (*([-1] * len(turn.prompt_ids)), *([k] * len(turn.action_ids)))]


def _normalized_action(text: str) -> str:
    """An action reduced to what the env acts on: its tool calls (name + arguments, key-sorted
    JSON), else its ``<answer>`` (case and spacing folded), else its whole text folded."""
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


def _spans(trajs: Sequence[Trajectory], cfg: TrainConfig, step: int) -> dict[str, Any]:
    """SOD's turn boundaries and TRACE's marks and KL schedule (only what is switched on)."""
    from agentsd.distill import losses as L

    lc, out = cfg.loss, {}
    if lc.turn_weight == "sod":
        out["turns"] = [turn_index(t) for t in trajs]
    if lc.trace:
        marks = [trace_marks(t) for t in trajs]
        out.update(trace_fwd=[m[0] for m in marks], trace_rev=[m[1] for m in marks],
                   kl_scale=L.trace_kl_scale(step, lc.trace_warmup_steps, lc.trace_anneal_steps))
    return out


# ---------------------------------------------------------------------------------------------
# the feedback teachers (deprecated in-place form)

def fill_feedback(trajs: list[Trajectory], mode: str, G: int) -> list[bool]:
    """Write the ``feedback`` view (:func:`agentsd.teacher_context.feedback_for`) into turn 0 of
    each trajectory, in place; returns whether each has a teacher. Deprecated: the trainer
    builds teacher rows from copies (:func:`agentsd.teacher_context.with_feedback_view`) and
    leaves the trajectories as sampled."""
    texts, keep = feedback_for(trajs, mode, G)
    for t, text in zip(trajs, texts, strict=True):
        if text is not None and t.turns:
            t.turns[0].privileged = with_feedback_view(t, text).turns[0].privileged
    return keep


# ---------------------------------------------------------------------------------------------
# weights

def _group_stats(trajs: Sequence[Trajectory], cfg: TrainConfig, G: int) -> tuple[Any, Any, Any]:
    """``(advantages, pass-rate weights, success)`` tensors over the step's groups."""
    import torch

    from agentsd.distill import losses as L

    lc, n = cfg.loss, len(trajs)
    rewards = torch.tensor([t.total_reward for t in trajs], dtype=torch.float32)
    success = torch.tensor([float(t.success) for t in trajs])
    adv, pass_w = torch.zeros(n), torch.ones(n)
    for s in range(0, n, G):
        adv[s:s + G] = L.group_advantages(rewards[s:s + G], normalize_std=lc.grpo_std_norm)
        if lc.pass_rate_a or lc.pass_rate_b:
            pass_w[s:s + G] = L.pass_rate_weight(success[s:s + G].mean(), lc.pass_rate_a,
                                                 lc.pass_rate_b)
    return adv, pass_w, success


def _weights(trajs: Sequence[Trajectory], cfg: TrainConfig, G: int,
             has_teacher: Sequence[bool]) -> dict[str, list[float]]:
    """Per-sequence weights of each loss term: ``advantages``, ``distill_w``, ``grpo_w``,
    ``sft_w``."""
    import torch

    from agentsd.distill import losses as L

    lc, n = cfg.loss, len(trajs)
    zeros = [0.0] * n
    if cfg.algo == "sft":
        return dict(advantages=zeros, distill_w=zeros, grpo_w=zeros, sft_w=[1.0] * n)
    adv, pass_w, success = _group_stats(trajs, cfg, G)
    if cfg.algo == "grpo":
        return dict(advantages=adv.tolist(), distill_w=zeros, grpo_w=[1.0] * n, sft_w=zeros)
    if cfg.algo == "rft":
        return dict(advantages=adv.tolist(), distill_w=zeros, grpo_w=zeros, sft_w=success.tolist())
    grpo_w, distill_w = torch.full((n,), lc.grpo_coef), torch.full((n,), lc.distill_coef)
    if lc.trace and lc.grpo_coef == 0:
        grpo_w = torch.ones(n)  # TRACE: the tokens off the marked spans always learn from GRPO
    if lc.success_routing:  # SRPO
        g, d = L.route_by_success(success)
        grpo_w, distill_w = grpo_w * g, distill_w * d
    distill_w = distill_w * torch.tensor(has_teacher, dtype=torch.float32)
    return dict(advantages=adv.tolist(), distill_w=(distill_w * pass_w).tolist(),
                grpo_w=grpo_w.tolist(), sft_w=zeros)


# ---------------------------------------------------------------------------------------------
# the stage

def build_batch(trajs: list[Trajectory], cfg: TrainConfig, G: int,
                teacher_rows: Callable[[Trajectory, int], list[Any]] | None = None,
                step: int = 0, skills: Sequence[Sequence[str]] = ()) -> Batch:
    """The step's :class:`Batch` (task-major trajectories, ``G`` samples per task). With
    ``teacher_rows(traj, index)``, each trajectory's teacher rows (with
    ``teacher.score_views``, a list of rows per view), built from the trajectory as the teacher
    reads it (its feedback view filled in, :func:`agentsd.teacher_context.with_feedback_view`).
    ``step`` sets TRACE's KL schedule; ``skills`` are the names each row shows."""
    n = len(trajs)
    feedback, has_teacher = (feedback_for(trajs, cfg.teacher.feedback, G) if cfg.uses_teacher
                             else ([None] * n, [True] * n))
    rows = ([teacher_rows(with_feedback_view(t, fb), i)
             for i, (t, fb) in enumerate(zip(trajs, feedback, strict=True))] if teacher_rows else [])
    by_view: list[list[list[Any]]] = []
    if rows and cfg.teacher.score_views:
        by_view = [[r[v] for r in rows] for v in range(len(cfg.teacher.score_views))]
        rows = by_view[0]
    spans = _spans(trajs, cfg, step) if cfg.uses_teacher else {}
    from agentsd.distill.family_more import batch_extras

    family = batch_extras(trajs, cfg, G, feedback, teacher_rows, step) if cfg.uses_teacher else {}
    return Batch(trajs=list(trajs), **_weights(trajs, cfg, G, has_teacher), rows=rows,
                 rows_by_view=by_view, skills=[list(s) for s in skills], feedback=feedback,
                 family=family, **spans)


# ---------------------------------------------------------------------------------------------
# micro-batches

def micro_batches(lengths: Sequence[int], max_tokens: int,
                  tok_ids: Sequence[Sequence[int]] | None = None,
                  min_shared: int = 0) -> list[list[int]]:
    """Indices grouped (longest first) so each padded micro-batch holds at most ``max_tokens``
    tokens; a longer single sequence goes alone.

    With ``tok_ids`` (shared-prefix forwards, :mod:`agentsd.distill.prefix`) a micro-batch is
    charged the tokens its forward computes: rows in token order, each adding what it does not
    share with the one before, where the micro-batch saves at least ``min_shared`` tokens (its
    forward shares), else its padded size. When no micro-batch would share, the grouping is
    the unshared one. Within a micro-batch the order is always longest first.
    """
    plain = _by_length(lengths, max_tokens)
    if tok_ids is None:
        return plain
    groups = _by_prefix(lengths, max_tokens, tok_ids, min_shared)
    if not any(saved >= max(min_shared, 1) for _, saved in groups):
        return plain
    return [sorted(g, key=lambda i: (-lengths[i], i)) for g, _ in groups]


def _by_prefix(lengths: Sequence[int], max_tokens: int, tok_ids: Sequence[Sequence[int]],
               min_shared: int) -> list[tuple[list[int], int]]:
    """Greedy groups in token order, each with the tokens its shared forward saves."""
    from agentsd.distill.prefix import _lcp

    order = sorted(range(len(lengths)), key=lambda i: (list(tok_ids[i]), i))
    out: list[tuple[list[int], int]] = []
    cur: list[int] = []
    computed = longest = 0
    for i in order:
        new = lengths[i] - (_lcp(tok_ids[cur[-1]], tok_ids[i], 0) if cur else 0)
        c, lg = computed + new, max(longest, lengths[i])
        saved = sum(lengths[j] for j in cur) + lengths[i] - c
        cost = c if saved >= max(min_shared, 1) else lg * (len(cur) + 1)
        if cur and cost > max_tokens:
            out.append((cur, sum(lengths[j] for j in cur) - computed))
            cur, c, lg = [], lengths[i], lengths[i]
        cur.append(i)
        computed, longest = c, lg
    if cur:
        out.append((cur, sum(lengths[j] for j in cur) - computed))
    return out


def _by_length(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
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


def micro_batch(data: Batch, idx: list[int], tok_ids: Sequence[Sequence[int]], denom: float,
                cfg: TrainConfig, pad_id: int, device: Any) -> MicroBatch:
    """The padded inputs of micro-batch ``idx`` (``tok_ids``: every trajectory's token ids,
    ``denom``: the global loss normalization over every rank's tokens)."""
    import torch

    ts = [data.trajs[i] for i in idx]
    ids = _pad([tok_ids[i] for i in idx], torch.long, pad_id).to(device)
    attn = _pad([[1] * len(tok_ids[i]) for i in idx], torch.long).to(device)
    mask = _pad([t.action_mask() for t in ts], torch.float32).to(device)
    s_lp = _pad([t.sampler_logprobs() for t in ts], torch.float32).to(device)
    tok_w = mask / denom
    if cfg.loss.reduce == "sequence":
        tok_w = mask / mask.sum(-1, keepdim=True).clamp_min(1.0) / denom
    extra = {}
    if data.turns:
        extra["turn_BT"] = _pad([data.turns[i] for i in idx], torch.long, -1).to(device)
    if data.trace_fwd:
        extra["trace_fwd_BT"] = _pad([data.trace_fwd[i] for i in idx], torch.float32).to(device)
        extra["trace_rev_BT"] = _pad([data.trace_rev[i] for i in idx], torch.float32).to(device)
    if data.family:
        from agentsd.distill.family_more import padded

        extra.update(padded(data.family, idx, device))
    if "stepw_BT" in extra:  # OPAD step-level sampling: each (sampled) step its tokens' mean
        tok_w = extra["stepw_BT"] / denom
    return MicroBatch(idx, ids, attn, mask, s_lp, tok_w, data, extra)
