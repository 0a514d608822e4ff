"""Token log-probabilities through the output head without ``B x T x V`` logits.

Every objective of the trainer reads the log-probability of the sampled token at the student's
action positions (and, for metrics, the entropy there). The naive way materializes the full
logits, ``B x T x V`` floats (V is 49k for SmolLM2, 152k for Qwen3): the dominant memory cost.
:func:`token_logprobs` goes through the head ``chunk_size`` rows at a time and computes rows
only where asked (``rows``: the positions a loss reads; the rest stay 0), in one of two ways:

- **frozen head** (LoRA on the decoder, the usual case; also tied input/output embeddings): the
  head weight ``W`` has no gradient, so the only gradient needed is the one into the hidden
  state ``h``. For ``logp = log softmax(W h / tau)[y]`` it is
  ``d logp / d h = (W[y] - p^T W) / tau`` with ``p = softmax(W h / tau)``, a ``D``-vector per
  row that does not depend on the loss. :class:`_FrozenHeadLogProb` computes it in the forward
  pass, while ``p`` is at hand, and keeps only that ``N x D`` tensor: the backward pass is one
  multiply, with no recomputed logits and no ``N x V`` tensor saved. One fused softmax gives
  ``p``, ``log p(y)`` and the entropy.
- **trainable head** (full fine-tuning): each chunk runs under activation checkpointing (its
  logits are recomputed in the backward pass), so the head's own gradient is exact too.

Both agree with ``log_softmax(logits / tau).gather(y)`` and its autograd gradient (tested).
"""

from __future__ import annotations

from typing import Any

import torch  # imported lazily by its one caller (teacher.forward_logprobs), never by `import agentsd`

__all__ = ["token_logprobs"]


def _head_params(head: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(weight, bias)`` of a plain linear head whose parameters take no gradient, else None
    (a LoRA-wrapped or trainable head goes through the generic path)."""
    if type(head) is not torch.nn.Linear:
        return None
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return None
    return head.weight, head.bias


def _chunk_stats(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor,
                 temperature: float, want_entropy: bool, want_grad: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``log p(y)``, entropy and ``d log p(y) / d h`` for one chunk of rows (no autograd).

    Without a gradient: ``z[y] - logsumexp(z)``. With one, a single fused softmax gives ``p``;
    ``log p(y)`` is read from it (rows where ``p(y)`` underflows fall back to the logsumexp),
    ``log Z = z[y] - log p(y)`` and the entropy ``log Z - p . z`` (a batched dot product, no
    ``N x V`` temporary)."""
    acc = torch.promote_types(h.dtype, torch.float32)  # fp32 at least (fp64 in gradcheck)
    z = torch.nn.functional.linear(h, W.to(h.dtype), None if b is None else b.to(h.dtype)).to(acc)
    if temperature != 1.0:
        z.div_(temperature)
    z_y = z.gather(-1, y[:, None]).squeeze(-1)
    if not want_grad:
        lse = torch.logsumexp(z, -1)
        ent = lse - torch.linalg.vecdot(torch.softmax(z, -1), z) if want_entropy else None
        return z_y - lse, ent, None
    p = torch.softmax(z, -1)
    p_y = p.gather(-1, y[:, None]).squeeze(-1)
    tiny = p_y < torch.finfo(acc).tiny * 1e6  # log p(y) from p would lose precision here
    logp = torch.where(tiny, 0.0, p_y).log()
    if bool(tiny.any()):
        logp[tiny] = z_y[tiny] - torch.logsumexp(z[tiny], -1)
    ent = (z_y - logp) - torch.linalg.vecdot(p, z) if want_entropy else None
    Wf = W.to(acc)
    grad = Wf.index_select(0, y) - p @ Wf
    if temperature != 1.0:
        grad.div_(temperature)
    return logp, ent, grad.to(h.dtype)


class _FrozenHeadLogProb(torch.autograd.Function):
    """Forward returns ``(logp_N, entropy_N)``; backward maps the gradient of ``logp_N`` to the
    hidden rows with the ``d logp / d h`` saved in the forward (none for ``W``: it is frozen)."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None,
                y: torch.Tensor, temperature: float, chunk: int, want_entropy: bool,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        want_grad = h.requires_grad
        parts = [_chunk_stats(h[i:i + chunk], W, b, y[i:i + chunk], temperature, want_entropy,
                              want_grad) for i in range(0, h.shape[0], chunk)]
        logp = torch.cat([p[0] for p in parts]) if parts else h.new_zeros(0, dtype=torch.float32)
        ent = torch.cat([p[1] for p in parts]) if want_entropy and parts else torch.zeros_like(logp)
        ctx.save_for_backward(torch.cat([p[2] for p in parts]) if want_grad and parts else None)
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor, g_ent: torch.Tensor) -> tuple:
        (dh,) = ctx.saved_tensors
        gh = None if dh is None else g_logp[:, None].to(dh.dtype) * dh
        return gh, None, None, None, None, None, None


def token_logprobs(head: Any, h_ND: torch.Tensor, y_N: torch.Tensor, chunk_size: int = 256,
                   temperature: float = 1.0, want_entropy: bool = False,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log softmax(head(h) / temperature)[y]`` and the (detached) entropy per row, both
    ``[N]`` fp32, without ever holding more than ``chunk_size x V`` logits (see the module
    docstring for the two paths). ``entropy`` is zeros when ``want_entropy`` is False."""
    from torch.utils.checkpoint import checkpoint

    params = _head_params(head)
    if params is not None:
        return _FrozenHeadLogProb.apply(h_ND, params[0], params[1], y_N, float(temperature),
                                        int(chunk_size), bool(want_entropy))

    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = head(x).float() / temperature
        lse = torch.logsumexp(logits, dim=-1)
        ent = ((lse - torch.linalg.vecdot(logits.softmax(-1), logits)).detach()
               if want_entropy else torch.zeros_like(lse))
        return logits.gather(-1, y[:, None]).squeeze(-1) - lse, ent

    parts, ents = [], []
    grad = torch.is_grad_enabled() and h_ND.requires_grad
    for i in range(0, h_ND.shape[0], chunk_size):
        x, y = h_ND[i:i + chunk_size], y_N[i:i + chunk_size]
        lp, ent = checkpoint(pick, x, y, use_reentrant=False) if grad else pick(x, y)
        parts.append(lp)
        ents.append(ent)
    if not parts:
        z = h_ND.new_zeros(0, dtype=torch.float32)
        return z, z
    return torch.cat(parts), torch.cat(ents)
