"""FSDP for full fine-tuning under ``torchrun`` (``--model.lora false --model.fsdp true``): each
process keeps a shard of the student's weights, gradients and optimizer state instead of a copy.

The student is sharded with FSDP2 (``fully_shard``): one unit per decoder layer and one root
unit for the rest (embeddings, the tied head, the final norm). Everything else is the data
parallelism of :mod:`agentsd.distill.distributed` with FSDP's collectives in place of the
gradient all-reduce:

- gradients are reduce-scattered with a plain SUM (FSDP averages by default), so with the loss
  normalized by the token count summed over ranks the result is the single-process gradient;
  ``clip_grad_norm_`` on the sharded gradients clips by the global norm;
- every FSDP forward and backward is a collective, so every rank runs the same number of them:
  the update pads a rank's micro-batches to the most any rank has with :func:`idle_pass`;
- forwards whose count differs by rank (rollout generation, evaluation) and the teacher's
  scoring run inside :func:`full_weights`: the weights are gathered once, then forwards make no
  collective at all;
- checkpoints hold full tensors (:func:`full_tensors`, gathered by every rank, written by rank 0),
  so their format is that of an unsharded run: ``agentsd export`` and resume read them as
  before, and :func:`local_like` / :func:`shard_optimizer_state` put them back into shards.

In one process (no ``torchrun``) ``--model.fsdp`` is a no-op: there is nothing to shard across.
LoRA is refused at config time (its adapter is small; plain data parallelism is the tool).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

__all__ = ["shard_model", "sharded", "full_weights", "pad_micro_batches", "idle_pass",
           "full_tensors", "checkpoint_tensors", "local_like", "shard_optimizer_state"]


def _units(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def sharded(model: Any) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model`."""
    return model is not None and getattr(model, "fsdp_forward_logprobs", None) is not None


def shard_model(model: Any, cfg: Any) -> Any:
    """Shard ``model`` in place across the torchrun processes (a no-op in one process). Call it
    before the optimizer and the teacher are built: FSDP replaces the parameters."""
    import torch
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from agentsd.distill import distributed
    from agentsd.distill.teacher import forward_logprobs

    if not distributed.active():
        return model
    if cfg.rollout.sampler != "hf":
        raise ValueError(f"model.fsdp samples with the trainer's own model: use --rollout.sampler hf "
                         f"(got {cfg.rollout.sampler!r}; the {cfg.rollout.sampler} sampler would need "
                         "the full weights pushed every step)")
    layers = list(model.get_decoder().layers)
    for layer in layers:
        fully_shard(layer)
    fully_shard(model, reshard_after_forward=False)  # FSDP's root default, made explicit
    # backward prefetch by position, not FSDP's default (the recorded forward order, which holds
    # the no-grad teacher and sampling forwards, whose number differs by rank: a collective
    # one rank makes and another does not); layer 0's target, the root, is still gathered
    model.set_modules_to_backward_prefetch([layers[-1]])
    for i, layer in enumerate(layers):
        layer.set_modules_to_backward_prefetch([layers[i - 1] if i else model])
    for unit in _units(model):
        # a SUM, not FSDP's mean: the loss already carries the global token normalization
        # (the forced plain SUM also keeps gloo, which lacks PREMUL_SUM, working)
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    # the update runs the decoder and the chunked head separately (forward_logprobs), never
    # model.forward; this method goes through the root unit's hooks, which gather the
    # embeddings, the head and the norm and reduce-scatter their gradients
    model.fsdp_forward_logprobs = functools.partial(forward_logprobs, model)
    register_fsdp_forward_method(model, "fsdp_forward_logprobs")
    # FSDP sets itself up on the first forward, which must enter at the root (the teacher's
    # scoring may come first and call the decoder directly); the root keeps its weights
    # gathered after a forward, so shard them again
    with torch.no_grad():
        ids = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
        model.fsdp_forward_logprobs(ids, torch.ones_like(ids))
    model.reshard()
    return model


@contextlib.contextmanager
def full_weights(model: Any) -> Iterator[Any]:
    """Gather ``model``'s full weights on every rank for the block (one collective per unit on
    entry), so forwards inside it make no collective: for generation and scoring, whose number
    of forwards differs by rank. Re-entrant; a no-op for a model that is not sharded. Weights
    swapped in before entry (the teacher's) are the ones gathered."""
    if not sharded(model) or getattr(model, "_fsdp_full", False):
        yield model
        return
    units = _units(model)
    for u in units:
        u.set_reshard_after_forward(False, recurse=False)
        u.unshard()
    model._fsdp_full = True
    try:
        yield model
    finally:
        model._fsdp_full = False
        for u in units:
            u.reshard()
        for u in units:  # the root unit keeps FSDP's default (gathered from forward to backward)
            u.set_reshard_after_forward(u is not model, recurse=False)


def pad_micro_batches(model: Any, batches: list[list[int]]) -> list[list[int]]:
    """``batches`` padded with empty micro-batches to the most any rank has (FSDP only)."""
    if not sharded(model):
        return batches
    import torch
    import torch.distributed as dist

    n = torch.tensor([len(batches)], device=next(model.parameters()).device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    return batches + [[] for _ in range(int(n.item()) - len(batches))]


def idle_pass(model: Any, teacher: Any, scorings: int) -> None:
    """An empty micro-batch: the collectives a real one makes (``scorings`` teacher gathers, the
    student's forward and backward) with a loss of zero, so the gradients are unchanged."""
    import torch

    for _ in range(scorings):
        with teacher.scoring() as tm, full_weights(tm):
            pass
    ids = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    out = model.fsdp_forward_logprobs(ids, torch.ones_like(ids), positions_BT=torch.ones_like(ids))
    (out["logp_BT"].sum() * 0.0).backward()


def full_tensors(obj: Any) -> Any:
    """``obj`` (nested dicts/lists/tuples) with every sharded tensor gathered: a collective that
    every rank must call in the same order. Rank 0 gets the full tensors on the CPU, the
    others empty placeholders (only rank 0 writes them)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    def gather(x: Any) -> Any:
        if isinstance(x, DTensor):
            full = x.full_tensor()
            return full.cpu() if dist.get_rank() == 0 else full.new_empty(0)
        if isinstance(x, dict):
            return {k: gather(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return type(x)(gather(v) for v in x)
        return x

    return gather(obj)


def checkpoint_tensors(model: Any, opt: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(trainable tensors, optimizer state dict)`` gathered in full, in the layout of an
    unsharded run (every rank calls it; rank 0 writes); ``None`` when ``model`` is not sharded."""
    if not sharded(model):
        return None
    weights = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return full_tensors(weights), full_tensors(opt.state_dict())


def local_like(param: Any, full: Any) -> Any:
    """A full (checkpointed) tensor made like ``param``: its device and dtype, and this rank's
    shard of it when ``param`` is sharded (sliced locally, no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    t = full.to(param.device, param.dtype, copy=True)
    if isinstance(param, DTensor):  # clone: a shard that is a view would keep `full` alive
        return distribute_tensor(t, param.device_mesh, param.placements, src_data_rank=None).clone()
    return t


def shard_optimizer_state(opt: Any) -> None:
    """After ``opt.load_state_dict`` of a full checkpoint: each sharded parameter's state tensors
    (Adam's moments) cut to this rank's shard. A no-op for unsharded parameters."""
    from torch.distributed.tensor import DTensor

    for p, st in opt.state.items():
        if isinstance(p, DTensor):
            for k, v in st.items():
                if hasattr(v, "shape") and not isinstance(v, DTensor) and tuple(v.shape) == tuple(p.shape):
                    st[k] = local_like(p, v)
