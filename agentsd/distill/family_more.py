"""The stage-side parts of issue 25's methods (their pure math is in
:mod:`agentsd.distill.family_losses`): what each needs from the batch, the teacher or the step.

- **CEPO** (contrastive evidence policy optimization): the wrong-answer teacher. For each
  trajectory, a rejected rollout of its group (the first failed *other* sample, else the
  trajectory itself when it failed; groups without a failure get none and are not distilled)
  replaces every answer-carrying view the teacher reads (:data:`ANSWER_VIEWS`: the reference
  reply, the answer, the solution, the plan, the next step); the rest of the context (skills,
  notes, hidden tests, feedback) stays, so the two teachers differ in the answer only. Its rows
  ride in the batch (``Batch.family["rows"]["cepo_neg"]``) and are scored next to the usual
  teacher's (:func:`score_extra_rows`).
- **Ground-truth target mixing**: the tokens whose ground truth is known, the action tokens of
  turns that match the env's reference step (TRACE's span test, success or not).
- **OPAD**: the divergence picked from the env's tags (:func:`loss_kind`).
- **CurioSFT**: the self-distillation term over the student's logits rows (:func:`curio_loss`).
- **VPD**: the teacher's E-step (:func:`vpd_e_step`): what the teacher's own weights are here.
  With the shared-weights design the teacher is the student's network with its own copy of the
  trainable tensors (``teacher.mode`` ``ema`` or ``sync``: the adapter for LoRA). After each
  student update (the M-step, the usual distillation toward the teacher), that copy takes
  ``teacher.vpd_steps`` SGD steps on :func:`~agentsd.distill.family_losses.vpd_teacher_loss`:
  a clipped policy gradient on the group advantages of the step's trajectories, scored in the
  teacher's own context (its rows), with a KL penalty to the teacher before the step. This is
  an honest reduction of the paper's variational E-step (a trust-region update of the
  feedback-reading posterior toward reward), not its exact estimator.
- **TSD-KD** token selection is applied in :mod:`agentsd.distill.objectives`. Its indirect
  feedback, the teacher re-ranking the student's own candidates (``loss.tsd_rerank_weight``),
  needs every candidate of a group scored before any micro-batch's objective runs (a group's
  samples fall in different micro-batches), so :func:`rerank_batch` runs a scoring pass first
  (no grad: the teacher's and the student's mean log-prob per action token of every
  trajectory, one extra forward of each) and puts into the batch, per trajectory, the ranking
  loss's gradient with respect to that trajectory's student score (:func:`rerank_terms`, from
  :func:`~agentsd.distill.family_losses.tsd_rerank_loss`). The ``tsd_rerank`` term is then
  ``sum_i c_i * (s_i - sg(s_i)) + l_i`` per micro-batch: its gradient summed over the
  micro-batches is exactly the ranking loss's, and its value sums to the loss (``l_i``: each
  ranked candidate's share). The scores are taken at the weights the update starts from, with
  dropout off.
- **OPAD step-level sampling** (``loss.step_sampling``): PAPERS.md names it ("step-level
  sampling for agentic stability") without a definition, so this is the natural reading: an
  episode's steps (turns with action tokens) are the samples, not the trajectory.
  ``per-step-mean`` weighs each step's action tokens ``1/n_k`` (every step counts once,
  whatever its length) and divides by the batch's number of steps; ``one-step`` keeps one step
  per episode, drawn uniformly from ``(seed, step, task seed, sample)`` (:func:`sampled_step`),
  and divides by the number of episodes. The weights (:func:`step_weights`) ride in the batch
  (``Batch.family["tok"]["stepw"]``) and replace the token normalization of every term.

:func:`summarize` turns their per-token diagnostics into metrics.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from agentsd.trajectory import Trajectory

__all__ = ["ANSWER_VIEWS", "rejected_for", "wrong_answer_view", "batch_extras", "padded",
           "score_extra_rows", "loss_kind", "curio_loss", "vpd_e_step", "summarize", "STATS",
           "step_weights", "sampled_step", "rerank_terms", "rerank_batch"]

#: views that carry the task's answer: CEPO's wrong-answer teacher reads a rejected rollout there
ANSWER_VIEWS = ("reference", "answer", "solution", "plan", "next_step")
#: the per-token diagnostics these methods collect (summarized by :func:`summarize`)
STATS = ("cepo", "tsdkeep", "gtlam", "confw", "curiotau", "curiokl", "rerankagree", "rerankin")


# ---------------------------------------------------------------------------------------------
# the batch stage: CEPO's wrong-answer rows, ground-truth marks

def rejected_for(trajs: Sequence[Trajectory], G: int) -> list[int | None]:
    """For each trajectory (task-major, ``G`` a task) the index of the rejected rollout its
    wrong-answer teacher reads: the first failed other sample of its group, else itself when it
    failed, else ``None`` (a group that never failed has no wrong answer to contrast).

    >>> from agentsd.trajectory import Trajectory
    >>> ts = [Trajectory(env_id="e", success=s) for s in (True, False, True, True)]
    >>> rejected_for(ts, 2)
    [1, 1, None, None]
    """
    out: list[int | None] = []
    for s in range(0, len(trajs), G):
        group = range(s, min(s + G, len(trajs)))
        for i in group:
            other = next((j for j in group if j != i and not trajs[j].success), None)
            out.append(other if other is not None else (i if not trajs[i].success else None))
    return out


def wrong_answer_view(traj: Trajectory, rejected: Trajectory) -> Trajectory:
    """``traj`` as CEPO's wrong-answer teacher reads it: a copy whose recorded views
    (``Turn.privileged``) have every answer-carrying view it holds replaced by ``rejected``'s
    attempt (turn ``k``'s reference reply by the rejected rollout's action at turn ``k``, or its
    last; the answer by its last action; the solution, plan and next step by its actions). Views
    the turn does not hold are not added; ``traj`` is unchanged."""
    acts = [t.action_text for t in rejected.turns] or [""]
    turns = []
    for k, turn in enumerate(traj.turns):
        views = dict(turn.privileged or {})
        wrong = {"reference": acts[min(k, len(acts) - 1)], "answer": acts[-1],
                 "solution": "\n".join(acts), "plan": list(acts),
                 "next_step": "\n".join(acts[min(k, len(acts) - 1):])}
        views.update({v: wrong[v] for v in ANSWER_VIEWS if views.get(v) not in (None, "", [])})
        turns.append(dataclasses.replace(turn, privileged=views))
    return dataclasses.replace(traj, turns=turns)


def _gt_marks(traj: Trajectory) -> list[float]:
    """1 on the action tokens of turns whose action matches the recorded reference step."""
    from agentsd.distill.batch import turn_agrees

    out: list[float] = []
    for turn in traj.turns:
        ref = (turn.privileged or {}).get("reference")
        on = float(bool(ref) and turn_agrees(turn.action_text, ref))
        out += [0.0] * len(turn.prompt_ids) + [on] * len(turn.action_ids)
    return out


def _action_steps(traj: Trajectory) -> list[int]:
    return [k for k, turn in enumerate(traj.turns) if turn.action_ids]


def sampled_step(traj: Trajectory, words: Sequence[int]) -> int | None:
    """OPAD ``one-step``: the turn (index into ``traj.turns``) whose action the update keeps,
    drawn uniformly over the turns with action tokens by a generator seeded with ``words``
    (``(seed, step, task seed, sample)``: reproducible, resumable, the same on every rank);
    ``None`` without any action token."""
    import numpy as np

    steps = _action_steps(traj)
    if not steps:
        return None
    rng = np.random.default_rng([int(w) % 2**32 for w in words])
    return steps[int(rng.integers(len(steps)))]


def step_weights(traj: Trajectory, mode: str, pick: int | None = None) -> list[float]:
    """OPAD step-level sampling's per-token weights on ``traj.token_ids()``, before the batch's
    normalization: ``per-step-mean`` puts ``1/n_k`` on each of turn ``k``'s ``n_k`` action
    tokens (every step sums to 1, the episode to its number of steps); ``one-step`` does so on
    turn ``pick`` only (the episode sums to 1, or 0 with ``pick=None``); 0 on prompt and env
    tokens.

    >>> from agentsd.trajectory import Trajectory, Turn
    >>> t = Trajectory(env_id="e", turns=[Turn(prompt_ids=[1], action_ids=[2, 3]),
    ...                                   Turn(prompt_ids=[4], action_ids=[5, 6, 7, 8])])
    >>> step_weights(t, "per-step-mean"), step_weights(t, "one-step", pick=1)
    ([0.0, 0.5, 0.5, 0.0, 0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25])
    """
    out: list[float] = []
    for k, turn in enumerate(traj.turns):
        n = len(turn.action_ids)
        on = n > 0 and (mode == "per-step-mean" or k == pick)
        out += [0.0] * len(turn.prompt_ids) + [1.0 / n if on else 0.0] * n
    return out


def _step_sampling(trajs: Sequence[Trajectory], cfg: Any, G: int, step: int) -> list[list[float]]:
    mode = cfg.loss.step_sampling
    return [step_weights(t, mode, sampled_step(t, (cfg.seed, step, t.seed or 0, i % G))
                         if mode == "one-step" else None) for i, t in enumerate(trajs)]


def batch_extras(trajs: Sequence[Trajectory], cfg: Any, G: int, feedback: Sequence[str | None],
                 teacher_rows: Callable[[Trajectory, int], list[Any]] | None,
                 step: int = 0) -> dict[str, Any]:
    """What these methods add to the step's batch (``Batch.family``): ``rows`` (extra teachers'
    rows per trajectory, by name), ``seq`` (per-sequence values), ``tok`` (per-token values:
    ground-truth marks, OPAD's step weights, drawn from ``step``). Empty when none of them is
    on."""
    from agentsd.teacher_context import with_feedback_view

    lc, out = cfg.loss, {}
    if lc.cepo and teacher_rows is not None:
        rej = rejected_for(trajs, G)
        out.setdefault("rows", {})["cepo_neg"] = [
            [] if j is None else teacher_rows(with_feedback_view(wrong_answer_view(t, trajs[j]),
                                                                 feedback[i]), i)
            for i, (t, j) in enumerate(zip(trajs, rej, strict=True))]
        out.setdefault("seq", {})["cepo_has"] = [float(j is not None) for j in rej]
    if lc.gt_mix > 0 or lc.gt_floor > 0:
        out.setdefault("tok", {})["gt"] = [_gt_marks(t) for t in trajs]
    if lc.step_sampling != "off":
        out.setdefault("tok", {})["stepw"] = _step_sampling(trajs, cfg, G, step)
    return out


def padded(family: dict[str, Any], idx: Sequence[int], device: Any) -> dict[str, torch.Tensor]:
    """The micro-batch's padded per-token extras (``<name>_BT``) and per-sequence ones
    (``<name>_B``)."""
    import torch

    from agentsd.distill.batch import _pad

    out = {f"{k}_BT": _pad([v[i] for i in idx], torch.float32).to(device)
           for k, v in family.get("tok", {}).items()}
    out.update({f"{k}_B": torch.tensor([v[i] for i in idx], dtype=torch.float32, device=device)
                for k, v in family.get("seq", {}).items()})
    return out


def score_extra_rows(family: dict[str, Any], score: Callable[[list[list[Any]]], dict[str, Any]],
                     ) -> dict[str, torch.Tensor]:
    """Each extra teacher's log-probs on the micro-batch (``<name>_logp_BT``), through the same
    ``score`` as the usual teacher's rows."""
    return {f"{k}_logp_BT": score(rows)["teacher_logp_BT"]
            for k, rows in family.get("rows", {}).items()}


# ---------------------------------------------------------------------------------------------
# TSD-KD: the teacher re-ranks the student's own candidates

@dataclasses.dataclass(frozen=True)
class RerankTerms:
    """What the ``tsd_rerank`` objective reads per trajectory (task-major): ``coef`` (the
    weighted ranking loss's gradient with respect to the trajectory's student score), ``s0``
    (that score at the pass), ``share`` (its share of the loss value), ``agree`` (per
    teacher-ordered pair it tops: 1 when the student already scores it higher) and ``ranked``
    (1 when it is a valid candidate of a group with at least one pair)."""

    coef: list[float]
    s0: list[float]
    share: list[float]
    agree: list[list[float]]
    ranked: list[float]


def rerank_terms(student: Sequence[float], teacher: Sequence[float], valid: Sequence[bool],
                 G: int, margin: float = 0.0, weight: float = 1.0,
                 n_groups: float | None = None) -> RerankTerms:
    """The ranking loss of every group of ``G`` candidates (:func:`~agentsd.distill.
    family_losses.tsd_rerank_loss` on the student's scores ``student``, the teacher's order of
    ``teacher``, candidates with ``valid`` false left out), ``weight`` times its mean over the
    ranked groups (``n_groups`` of them over every rank; default: this batch's), taken apart per
    candidate. Groups without a pair (all tied) contribute nothing.

    >>> r = rerank_terms([-1.0, -1.0], [-0.5, -2.0], [True, True], G=2)
    >>> [round(c, 4) for c in r.coef], [round(x, 4) for x in r.share], r.agree
    ([-0.5, 0.5], [0.3466, 0.3466], [[0.0], []])
    """
    import torch

    from agentsd.distill.family_losses import rerank_pairs, tsd_rerank_loss

    n = len(student)
    coef, share, ranked = [0.0] * n, [0.0] * n, [0.0] * n
    agree: list[list[float]] = [[] for _ in range(n)]
    found = []
    for a in range(0, n, G):
        s = torch.tensor(student[a:a + G], dtype=torch.float64, requires_grad=True)
        t = torch.tensor(teacher[a:a + G], dtype=torch.float64)
        v = torch.tensor([float(x) for x in valid[a:a + G]], dtype=torch.float64)
        P = rerank_pairs(t, v, margin)
        if P.sum() == 0:
            continue
        loss = tsd_rerank_loss(s, t, v, margin)
        (grad,) = torch.autograd.grad(loss, s)
        found.append((a, float(loss.detach()), grad.tolist(), v.tolist()))
        for i, j in P.nonzero().tolist():
            agree[a + i].append(float(s[i] > s[j]))
    scale = weight / max(n_groups if n_groups is not None else len(found), 1.0)
    for a, loss, grad, v in found:
        for k, (g, ok) in enumerate(zip(grad, v, strict=True)):
            coef[a + k] = scale * g
            share[a + k] = scale * loss * ok / sum(v)
            ranked[a + k] = ok
    return RerankTerms(coef, list(student), share, agree, ranked)


def _ranked_groups(teacher: Sequence[float], valid: Sequence[bool], G: int, margin: float) -> int:
    """How many groups hold at least one teacher-ordered pair."""
    import torch

    from agentsd.distill.family_losses import rerank_pairs

    return sum(int(rerank_pairs(torch.tensor(teacher[a:a + G], dtype=torch.float64),
                                torch.tensor([float(x) for x in valid[a:a + G]]), margin).sum() > 0)
               for a in range(0, len(teacher), G))


def _mean_over(lp_BT: torch.Tensor, mask_BT: torch.Tensor) -> list[float]:
    m = mask_BT.float()
    return ((lp_BT.float() * m).sum(-1) / m.sum(-1).clamp_min(1.0)).tolist()


def _candidate_scores(model: Any, teacher: Any, data: Any, plan: Any, cfg: Any, pad_id: int,
                      autocast: Callable[[Any], Any], max_tokens: int,
                      ) -> tuple[list[float], list[float], list[bool]]:
    """Every trajectory's student and teacher mean log-prob per action token (no grad, the
    student with dropout off; the teacher over the positions its rows score), and whether it is
    a candidate: distilled this step, with action tokens the teacher scored."""
    import torch

    from agentsd.distill.batch import micro_batch, micro_batches
    from agentsd.distill.teacher import forward_logprobs, score_rows

    n = len(data.trajs)
    student, teach, valid = [0.0] * n, [0.0] * n, [False] * n
    was_training = model.training
    model.eval()
    try:
        for idx in micro_batches(plan.lengths, max_tokens):
            mb = micro_batch(data, idx, plan.tok_ids, plan.denom, cfg, pad_id, plan.device)
            with torch.no_grad(), autocast(model):
                lp = forward_logprobs(model, mb.ids_BT, mb.attn_BT, chunk_size=cfg.loss.chunk_size,
                                      temperature=plan.temperature, positions_BT=mb.mask_BT)
            rows = [dataclasses.replace(r, traj_index=j) for j, i in enumerate(idx)
                    for r in data.rows[i]]
            scored = torch.zeros_like(mb.mask_BT)
            for r in rows:
                scored[r.traj_index, r.student_pos] = 1.0
            scored = scored * mb.mask_BT
            with teacher.scoring() as tm, autocast(tm):
                t_lp = score_rows(tm, rows, [plan.lengths[i] for i in idx], pad_id,
                                  max_tokens=cfg.teacher.max_tokens_per_forward,
                                  chunk_size=cfg.loss.chunk_size, temperature=plan.temperature,
                                  )["teacher_logp_BT"].to(scored.device)
            for j, (i, s, t) in enumerate(zip(idx, _mean_over(lp["logp_BT"], mb.mask_BT),
                                              _mean_over(t_lp, scored), strict=True)):
                student[i], teach[i] = s, t
                valid[i] = bool(data.distill_w[i] > 0 and scored[j].sum() > 0)
    finally:
        model.train(was_training)
    return student, teach, valid


def rerank_batch(model: Any, teacher: Any, data: Any, plan: Any, cfg: Any, pad_id: int,
                 autocast: Callable[[Any], Any], max_tokens: int) -> Any:
    """TSD-KD's scoring pass (see the module docstring): ``data`` with the ``tsd_rerank``
    objective's per-trajectory values added to ``Batch.family`` (``seq``: ``rerank_coef``,
    ``rerank_s0``, ``rerank_loss``; ``rerank_stats``: ``agree`` and ``ranked``). Under torchrun
    a rank holds whole groups; the loss is the mean over every rank's ranked groups."""
    from agentsd.distill import distributed

    lc, G = cfg.loss, cfg.rollout.samples_per_task
    student, teach, valid = _candidate_scores(model, teacher, data, plan, cfg, pad_id, autocast,
                                              max_tokens)
    n_groups = distributed.sum_scalar(float(_ranked_groups(teach, valid, G, lc.tsd_rerank_margin)))
    r = rerank_terms(student, teach, valid, G, lc.tsd_rerank_margin, lc.tsd_rerank_weight, n_groups)
    seq = {**data.family.get("seq", {}), "rerank_coef": r.coef, "rerank_s0": r.s0,
           "rerank_loss": r.share}
    family = {**data.family, "seq": seq, "rerank_stats": {"agree": r.agree, "ranked": r.ranked}}
    return dataclasses.replace(data, family=family)


# ---------------------------------------------------------------------------------------------
# OPAD, CurioSFT

@functools.lru_cache(maxsize=64)
def _env_tags(env_id: str) -> tuple[str, ...]:
    import agentsd

    return tuple(agentsd.spec(env_id).tags or ())


def loss_kind(cfg: Any) -> tuple[str, float]:
    """``(loss.kind, loss.alpha)`` as the objective uses them: OPAD's task-adaptive choice from
    the env's tags with ``loss.task_divergence``, else the configured ones."""
    from agentsd.distill.family_losses import opad_divergence

    if cfg.loss.task_divergence:
        return opad_divergence(_env_tags(cfg.rollout.env))
    return cfg.loss.kind, cfg.loss.alpha


def curio_loss(logits: Any, mask_BT: torch.Tensor, tau_max: float, entropy_target: float,
               chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """CurioSFT's per-token loss (:func:`~agentsd.distill.family_losses.curio_divergence`) at
    the masked positions of the student's logits (dense ``[B, T, V]`` or
    :class:`~agentsd.distill.losses.RowLogits`), ``chunk_size`` positions at a time under
    activation checkpointing. Returns ``(loss_BT, tau_BT)``."""
    import torch
    from torch.utils.checkpoint import checkpoint

    from agentsd.distill.family_losses import curio_divergence
    from agentsd.distill.losses import RowLogits

    rows = logits if isinstance(logits, RowLogits) else RowLogits.dense(logits)
    B, T = mask_BT.shape
    pos = mask_BT.reshape(-1).nonzero().squeeze(-1).to(rows.values_NV.device)
    loss = torch.zeros(B * T, dtype=torch.float32, device=rows.values_NV.device)
    tau = torch.ones(B * T, dtype=torch.float32, device=rows.values_NV.device)

    def div(z: torch.Tensor) -> torch.Tensor:
        return curio_divergence(z, tau_max, entropy_target)[0]

    for i in range(0, pos.numel(), chunk_size):
        p = pos[i:i + chunk_size]
        z = rows.at(p)
        d = checkpoint(div, z, use_reentrant=False) if z.requires_grad else div(z)
        loss = loss.index_put((p,), d)
        with torch.no_grad():
            tau[p] = curio_divergence(z.detach(), tau_max, entropy_target)[1]
    return loss.view(B, T), tau.view(B, T)


# ---------------------------------------------------------------------------------------------
# VPD: the teacher's E-step

def _teacher_chunks(items: list[tuple[int, Any]], max_tokens: int) -> list[list[tuple[int, Any]]]:
    out: list[list[tuple[int, Any]]] = []
    for it in sorted(items, key=lambda x: -len(x[1].input_ids)):
        if out and len(out[-1][0][1].input_ids) * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(it)
        else:
            out.append([it])
    return out


def _chunk_tensors(chunk: list[tuple[int, Any]], pad_id: int, dev: Any) -> tuple[Any, Any, Any]:
    """A chunk's padded ids, attention mask and scored-position mask."""
    import torch

    from agentsd.distill.teacher import pad_rows

    ids, attn = pad_rows([r.input_ids for _, r in chunk], pad_id, device=dev)
    pos = torch.zeros(ids.shape, dtype=torch.float32)
    for b, (_, r) in enumerate(chunk):
        pos[b, r.row_pos] = 1.0
    return ids, attn, pos.to(dev)


def _vpd_gradient(model: Any, params: dict[str, Any], chunks: list, old: list, batch: Any, cfg: Any,
                  pad_id: int, autocast: Callable[[Any], Any], n_tok: float) -> tuple[dict, float]:
    """One E-step iteration's gradient of the teacher loss over every chunk (``old``: the
    log-probs before the first iteration, filled on the first call) and its summed loss."""
    import torch

    from agentsd.distill.family_losses import vpd_teacher_loss
    from agentsd.distill.teacher import forward_logprobs

    tc = cfg.teacher
    temp = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    dev = next(model.parameters()).device
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    total = 0.0
    for c, chunk in enumerate(chunks):
        ids, attn, pos = _chunk_tensors(chunk, pad_id, dev)
        with autocast(model):
            lp = forward_logprobs(model, ids, attn, chunk_size=cfg.loss.chunk_size,
                                  temperature=temp, positions_BT=pos)["logp_BT"]
        if len(old) <= c:
            old.append(lp.detach())
        adv = torch.tensor([batch.advantages[i] for i, _ in chunk], device=dev)
        loss = vpd_teacher_loss(lp, old[c], adv, pos, tc.vpd_clip, tc.vpd_kl) * (
            float(pos.sum()) / n_tok)
        gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), gs, strict=True):
            if g is not None:
                grads[n] += g
        total += float(loss.detach())
    return grads, total


def vpd_e_step(model: Any, teacher: Any, batch: Any, cfg: Any, pad_id: int,
               autocast: Callable[[Any], Any]) -> dict[str, float]:
    """VPD's E-step on the teacher's own weights (see the module docstring): ``vpd_steps`` SGD
    steps of :func:`~agentsd.distill.family_losses.vpd_teacher_loss` over the batch's teacher
    rows, the student's weights restored afterwards. Under torchrun every rank's rows count:
    the gradients are summed over ranks, so the teacher copies stay equal. Returns ``vpd/*``
    metrics."""
    import torch

    from agentsd.distill import distributed

    tc = cfg.teacher
    items = [(i, r) for i, rows in enumerate(batch.rows) for r in rows
             if batch.advantages[i] != 0 and r.row_pos]
    n_tok = distributed.sum_scalar(float(sum(len(r.row_pos) for _, r in items)))
    if teacher.snapshot is None or n_tok == 0:
        return {"vpd/updated": 0.0}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    chunks = _teacher_chunks(items, tc.max_tokens_per_forward)
    student = {n: p.detach().clone() for n, p in params.items()}
    was_training = model.training
    model.eval()  # dropout off, as in every teacher forward
    old: list[torch.Tensor] = []
    stats = {"vpd/loss": 0.0, "vpd/step_norm": 0.0}
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(teacher.snapshot[n])
        for _ in range(tc.vpd_steps):
            grads, total = _vpd_gradient(model, params, chunks, old, batch, cfg, pad_id, autocast,
                                         n_tok)
            _sum_over_ranks(grads)
            with torch.no_grad():
                for n, p in params.items():
                    p.sub_(tc.vpd_lr * grads[n])
            stats["vpd/loss"] = distributed.sum_scalar(total)
        with torch.no_grad():
            stats["vpd/step_norm"] = float(torch.sqrt(sum(
                ((p - teacher.snapshot[n]) ** 2).sum() for n, p in params.items())))
            for n, p in params.items():
                teacher.snapshot[n].copy_(p.detach())
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(student[n])
        model.train(was_training)
    return {**stats, "vpd/updated": 1.0}


def _sum_over_ranks(grads: dict[str, torch.Tensor]) -> None:
    """Sum ``grads`` over the torchrun ranks in place (one flat buffer; a no-op alone)."""
    from agentsd.distill import distributed

    if not distributed.active() or not grads:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([g.reshape(-1).float() for g in grads.values()])
    dist.all_reduce(flat)
    i = 0
    for g in grads.values():
        g.copy_(flat[i:i + g.numel()].view_as(g).to(g.dtype))
        i += g.numel()


# ---------------------------------------------------------------------------------------------
# metrics

def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs))


def summarize(col: dict[str, list[float]]) -> dict[str, float]:
    """Metrics of these methods' collected per-token values (a name absent when nothing was
    collected under it).

    >>> summarize({"cepo": [0.0, 2.0, -1.0, 0.0], "tsdkeep": [1.0, 0.0]})
    {'cepo/credit_mean': 0.25, 'cepo/credited_frac': 0.5, 'tsd/kept_frac': 0.5}
    """
    m: dict[str, float] = {}
    if col.get("cepo"):
        m["cepo/credit_mean"] = _mean(col["cepo"])
        m["cepo/credited_frac"] = _mean([float(x != 0.0) for x in col["cepo"]])
    if col.get("tsdkeep"):
        m["tsd/kept_frac"] = _mean(col["tsdkeep"])
    if col.get("rerankin"):
        m["tsd/rerank_ranked_frac"] = _mean(col["rerankin"])
    if col.get("rerankagree"):
        m["tsd/rerank_pair_agree"] = _mean(col["rerankagree"])
    if col.get("gtlam"):
        m["gtmix/weight_mean"] = _mean(col["gtlam"])
    if col.get("confw"):
        m["teacher/confidence_max_weight"] = _mean(col["confw"])
    if col.get("curiotau"):
        m["curio/tau_mean"] = _mean(col["curiotau"])
        m["curio/kl_mean"] = _mean(col["curiokl"])
    return m
