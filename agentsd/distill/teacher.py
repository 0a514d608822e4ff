"""The teacher: the same network, gradients stopped, dropout off, scoring the student's own tokens.

Alignment. A student trajectory is ``first_prompt + response`` where ``response`` =
:meth:`~agentsd.trajectory.Trajectory.response_ids` (actions, env and tool tokens, verbatim). The
teacher input is ``teacher_prompt + response``: its own context (skills, hints, task) followed by
the student's exact token ids, so student position ``i >= prompt_len`` is teacher position
``i - prompt_len + len(teacher_prompt)`` (the rows are built in :mod:`agentsd.teacher_context`,
with the rest of the teacher's context). Nothing is re-rendered, so chat templates that rewrite
history cannot shift a token. With *step-wise* contexts (a different teacher prompt per turn,
e.g. revealing the next gold step), turn ``k`` gets its own row
``teacher_prompt_k + response[: end of action k]`` scoring only action ``k``'s tokens; all rows
go through one batched forward.

Modes (:class:`Teacher`), all sharing the student's weights where possible:

- ``live``: the current student itself (no copy);
- ``frozen``: the base model with the LoRA adapter disabled (one copy of the weights); for full
  fine-tuning a snapshot of the initial trainable tensors is swapped in instead;
- ``ema``: an exponential moving average of the trainable tensors (the adapter for LoRA),
  swapped into the model for the teacher forward and swapped back afterwards;
- ``sync``: a snapshot refreshed every ``sync_every`` steps, optionally only when the held-out
  reward improved since the last sync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from agentsd.teacher_context import (  # the rows are built with the rest of the teacher's context
    AlignmentError,
    TeacherRow,
    build_teacher_rows,
    render_prompt,
    teacher_row,
)

if TYPE_CHECKING:
    import torch

__all__ = ["TeacherRow", "build_teacher_rows", "teacher_row", "render_prompt", "pad_rows", "forward_logprobs",
           "score_rows", "Teacher", "TEACHER_MODES", "AlignmentError"]

TEACHER_MODES = ("live", "frozen", "ema", "sync")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0,
             device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to ``(ids_BT, attention_mask_BT)`` (long tensors on ``device``)."""
    import torch

    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        attn[b, : len(r)] = 1
    # built on the CPU and copied once: per-row writes into a CUDA tensor are one launch each
    return ids.to(device), attn.to(device)


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def forward_logprobs(model: Any, ids_BT: torch.Tensor, attn_BT: torch.Tensor,
                     chunk_size: int = 256, want_logits: bool = False, want_entropy: bool = False,
                     temperature: float = 1.0, positions_BT: torch.Tensor | None = None,
                     share: Any = None) -> dict[str, torch.Tensor]:
    """Log-probability of every token given the ones before it, ``logp_BT`` (position 0 is 0).

    The decoder's last hidden states go through the output head ``chunk_size`` rows at a time
    (:func:`agentsd.distill.head.token_logprobs`), so ``B x T x V`` fp32 logits are never held
    at once (the dominant memory cost at real vocabulary sizes); with a frozen head (LoRA) the
    backward pass recomputes nothing. ``positions_BT`` (0/1, ``[B, T]``) limits the head to the
    positions a loss reads (the action tokens); the others are 0 in ``logp_BT`` and
    ``entropy_BT``. ``want_logits`` also returns the shifted logits (row ``t`` predicts token
    ``t``) for full-vocabulary losses: with ``positions_BT`` at those positions only, as
    ``logits_rows`` (a :class:`~agentsd.distill.losses.RowLogits`), else all of them as
    ``logits_BTV``; ``want_entropy`` the per-position entropy
    ``entropy_BT`` (detached). ``temperature`` divides the logits first (score with the
    distribution the sampler drew from). ``share`` (a :class:`~agentsd.distill.prefix.Sharing`,
    with ``positions_BT``) computes the rows' common prefixes once
    (:func:`agentsd.distill.prefix.hidden_at`), the same numbers to float32 round-off.
    """
    import torch

    from agentsd.distill.head import token_logprobs

    decoder = _unwrap(model).get_decoder()
    head = model.get_output_embeddings()
    B, T = ids_BT.shape
    tgt = ids_BT[:, 1:].reshape(-1)
    rows = hidden = h = None
    if positions_BT is not None and T > 1:
        rows = positions_BT[:, 1:].reshape(-1).nonzero().squeeze(-1).to(ids_BT.device)
        tgt = tgt.index_select(0, rows)
        if share is not None:
            from agentsd.distill.prefix import hidden_at

            h = hidden_at(decoder, ids_BT, attn_BT, rows, share)
    if h is None:
        hidden = decoder(input_ids=ids_BT, attention_mask=attn_BT).last_hidden_state
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        if rows is not None:
            h = h.index_select(0, rows.to(h.device))
    lp, ent = token_logprobs(head, h, tgt, chunk_size, temperature, want_entropy)
    out = {"logp_BT": _place(lp, rows, h, B, T)}
    if want_entropy:
        out["entropy_BT"] = _place(ent, rows, h, B, T)
    if want_logits and positions_BT is not None:
        out["logits_rows"] = _row_logits(head, h, rows, B, T, temperature)
    elif want_logits:
        logits = head(hidden[:, :-1]) / temperature
        out["logits_BTV"] = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
    return out


def _place(v: torch.Tensor, rows: torch.Tensor | None, h: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Per-row values ``v`` (at the flat shifted positions ``rows``, or all of them) as ``[B, T]``,
    0 at position 0 and wherever no row was computed."""
    import torch

    full = v if rows is None else torch.zeros(B * (T - 1), dtype=v.dtype,
                                              device=v.device).index_put((rows,), v)
    zero = h.new_zeros(B, 1, dtype=torch.float32)
    return torch.cat([zero, full.view(B, T - 1)], dim=1) if T > 1 else zero


def _row_logits(head: Any, h: torch.Tensor, rows: torch.Tensor | None, B: int, T: int,
                temperature: float) -> Any:
    """The logits at the computed positions only, as :class:`~agentsd.distill.losses.RowLogits`."""
    import torch

    from agentsd.distill.losses import RowLogits

    index = torch.full((B, T), -1, dtype=torch.long, device=h.device)
    if rows is None:  # T == 1: no position predicts anything
        return RowLogits(h.new_zeros(0, head.out_features), index)
    # flat row r of the shifted [B, T - 1] grid is position (r // (T-1), r % (T-1) + 1)
    index[rows // (T - 1), rows % (T - 1) + 1] = torch.arange(rows.numel(), device=h.device)
    return RowLogits(head(h) / temperature, index)


def score_rows(model: Any, rows: list[TeacherRow], student_lengths: list[int], pad_id: int = 0,
               max_tokens: int = 4096, want_logits: bool = False, chunk_size: int = 256,
               temperature: float = 1.0, share: Any = None) -> dict[str, torch.Tensor]:
    """Run the teacher over ``rows`` (no gradient) and scatter its log-probs back onto the
    students' positions: ``teacher_logp_BT`` of shape ``[len(student_lengths), max(lengths)]``,
    zero where the teacher scored nothing. Rows are packed into forwards of at most
    ``max_tokens`` padded tokens; with ``share`` (a :class:`~agentsd.distill.prefix.Sharing`)
    their common prefixes (system prompt, skills, task; one episode's history across its
    step-wise rows) are computed once, each node's children in forwards of at most
    ``max_tokens``. ``want_logits`` also returns ``teacher_logits_rows`` (for
    full-vocabulary divergences), a :class:`~agentsd.distill.losses.RowLogits` on the same
    ``[B, T]`` grid with a row for each scored position only. Every tensor lives on the model's
    device.
    """
    import torch

    from agentsd.distill.losses import RowLogits

    dev = next(model.parameters()).device
    B, T = len(student_lengths), max(student_lengths)
    out_lp = torch.zeros(B, T, dtype=torch.float32, device=dev)
    index = torch.full((B, T), -1, dtype=torch.long, device=dev)
    values: list[torch.Tensor] = []
    n_rows = 0
    for batch in _batches(model, rows, max_tokens, share):
        ids, attn = pad_rows([r.input_ids for r in batch], pad_id, device=dev)
        pos = torch.zeros(ids.shape, dtype=torch.bool)  # the head runs on scored positions only
        for b, r in enumerate(batch):
            pos[b, r.row_pos] = True
        with torch.no_grad():
            res = forward_logprobs(model, ids, attn, chunk_size=chunk_size, want_logits=want_logits,
                                   temperature=temperature, positions_BT=pos.to(dev),
                                   share=share if len(batch) == len(rows) else None)
        for b, r in enumerate(batch):
            out_lp[r.traj_index, r.student_pos] = res["logp_BT"][b, r.row_pos].float()
            if want_logits:
                index[r.traj_index, r.student_pos] = res["logits_rows"].index_BT[b, r.row_pos] + n_rows
        if want_logits:
            values.append(res["logits_rows"].values_NV)
            n_rows += values[-1].shape[0]
    res = {"teacher_logp_BT": out_lp}
    if want_logits:
        head = model.get_output_embeddings()
        res["teacher_logits_rows"] = RowLogits(
            torch.cat(values) if values else torch.zeros(0, head.out_features, device=dev), index)
    return res


def _batches(model: Any, rows: list[TeacherRow], max_tokens: int,
             share: Any) -> Iterator[list[TeacherRow]]:
    """All rows in one shared forward when their prefixes are worth sharing, else packed."""
    if share is not None and rows:
        from agentsd.distill.prefix import plan

        ids = [r.input_ids for r in rows]
        if plan(_unwrap(model).get_decoder(), ids, share, count=False) is not None:
            yield list(rows)
            return
        share.count(sum(map(len, ids)), sum(map(len, ids)))
    yield from _pack(rows, max_tokens)


def _pack(rows: list[TeacherRow], max_tokens: int) -> Iterator[list[TeacherRow]]:
    """Group rows (longest first) so each padded batch has at most ``max_tokens`` tokens (a
    longer single row still goes alone)."""
    order = sorted(rows, key=lambda r: -len(r.input_ids))
    batch: list[TeacherRow] = []
    for r in order:
        if batch and len(batch[0].input_ids) * (len(batch) + 1) > max_tokens:
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# teacher modes

class Teacher:
    """Which weights the teacher forward uses (see the module docstring for the modes).

    Use :meth:`scoring` around teacher forwards and call :meth:`after_step` once per optimizer
    step::

        teacher = Teacher(model, "ema", ema_decay=0.95)
        with teacher.scoring():
            scores = score_rows(model, rows, lengths)
        ...; optimizer.step(); events = teacher.after_step(step)

    ``copy_model`` (benchmarks only) scores with a separate deep copy of the initial model, the
    memory-hungry alternative to ``frozen``.
    """

    def __init__(self, model: Any, mode: str = "frozen", ema_decay: float = 0.95,
                 sync_every: int = 10, sync_on_improve: bool = False,
                 copy_model: bool = False) -> None:
        if mode not in TEACHER_MODES:
            raise ValueError(f"teacher mode must be one of {TEACHER_MODES}, got {mode!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.model, self.mode, self.ema_decay = model, mode, ema_decay
        self.sync_every, self.sync_on_improve = sync_every, sync_on_improve
        self.is_lora = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.copy = None
        if copy_model:
            import copy

            self.copy = copy.deepcopy(model).eval().requires_grad_(False)
        elif mode in ("ema", "sync") or (mode == "frozen" and not self.is_lora):
            self.snapshot = self._trainable_copy()
        self.age = 0  # optimizer steps since the teacher's weights last changed
        self.syncs = 0
        self.best_eval: float | None = None
        self._improved = False

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _trainable_copy(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self._trainable().items()}

    @contextlib.contextmanager
    def scoring(self) -> Iterator[Any]:
        """Put the model in teacher state (eval mode, no grad, teacher weights); yields the model
        to run. Restores the student's weights and train/eval flag on exit."""
        import torch

        if self.copy is not None:
            with torch.no_grad():
                yield self.copy
            return
        was_training = self.model.training
        self.model.eval()  # dropout off: a shared-weights teacher must be deterministic
        try:
            with torch.no_grad():
                if self.mode == "frozen" and self.is_lora:
                    with self.model.disable_adapter():
                        yield self.model
                elif self.snapshot is not None:
                    params = self._trainable()
                    student = {n: p.detach().clone() for n, p in params.items()}
                    try:
                        for n, p in params.items():
                            p.copy_(self.snapshot[n])
                        yield self.model
                    finally:
                        for n, p in params.items():
                            p.copy_(student[n])
                else:
                    yield self.model
        finally:
            self.model.train(was_training)

    def report_eval(self, reward: float) -> None:
        """Record a held-out reward; ``sync_on_improve`` syncs only after an improvement."""
        if self.best_eval is None or reward > self.best_eval:
            self.best_eval = reward
            self._improved = True

    def after_step(self, step: int) -> dict[str, float]:
        """Update the teacher after optimizer step ``step`` (1-based). Returns events for the
        metrics (``teacher_age``, ``teacher_sync`` 0/1)."""
        import torch

        synced = 0.0
        if self.mode == "live":
            self.age = 0
        elif self.mode == "ema" and self.snapshot is not None:
            with torch.no_grad():
                for n, p in self._trainable().items():
                    self.snapshot[n].mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)
            self.age = 0
        elif self.mode == "sync" and step % self.sync_every == 0 and (
                not self.sync_on_improve or self._improved):
            self.snapshot = self._trainable_copy()
            self._improved = False
            self.syncs += 1
            self.age, synced = 0, 1.0
        else:
            self.age += 1
        return {"teacher_age": float(self.age), "teacher_sync": synced}

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "age": self.age, "syncs": self.syncs, "best_eval": self.best_eval,
                "improved": self._improved,
                "snapshot": {k: v.clone() for k, v in (self.snapshot or {}).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"checkpoint teacher mode {state['mode']!r} != configured {self.mode!r}")
        self.age, self.syncs, self.best_eval = state["age"], state["syncs"], state["best_eval"]
        self._improved = state["improved"]
        if state["snapshot"]:  # checkpoints load on the CPU; the snapshot lives by its parameter
            from agentsd.distill.fsdp import local_like

            params = self._trainable()
            self.snapshot = {k: local_like(params[k], v)  # FSDP: this rank's shard
                             if k in params else v.clone() for k, v in state["snapshot"].items()}
