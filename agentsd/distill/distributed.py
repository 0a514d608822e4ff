"""Data-parallel training under ``torchrun``: who this process is, and the few collectives the
update needs.

``torchrun --nproc_per_node N -m agentsd.cli train ...`` starts N copies of the trainer. Each
holds the whole student (same seed, so the same initial weights), takes a contiguous shard of
the step's tasks (all ``G`` samples of a task stay together, so group advantages are local),
and the update turns the per-rank sums into the single-process update:

- the token (or sequence) count that normalizes the loss is summed over ranks first, so every
  rank's loss is its share of *one* global mean;
- after backward, the gradients are all-reduced with a SUM (not DDP's average), which gives
  exactly the gradient of that global mean; clipping and the optimizer step then see the same
  gradient on every rank and the weights stay identical without broadcasting them;
- loss totals are summed and per-token diagnostics gathered, so metrics describe the whole batch.

Outside ``torchrun`` (no process group) every function here is the identity, so the
single-process path is unchanged. The backend is ``nccl`` on CUDA and ``gloo`` on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Rank", "init_distributed", "active", "shard", "sum_scalar", "all_reduce_grads",
           "gather_lists", "barrier", "world", "mean", "Silent"]

T = TypeVar("T")


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (``rank 0 of 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (checkpoints, metrics, the report)."""
        return self.rank == 0


def init_distributed() -> Rank:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment);
    :class:`Rank` ``(0, 1)`` when not launched by it."""
    import torch
    import torch.distributed as dist

    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return Rank()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return world()


def world() -> Rank:
    """The current :class:`Rank` (from the initialized process group, else ``(0, 1)``)."""
    if not active():
        return Rank()
    import torch.distributed as dist

    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def active() -> bool:
    """Whether this process is one of several (a process group with more than one member)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(items: Sequence[T], what: str = "tasks_per_step") -> list[T]:
    """This rank's contiguous share of ``items`` (all of them on one process). The count must
    divide evenly, so every rank runs the same number of forwards."""
    r = world()
    if r.world_size == 1:
        return list(items)
    if len(items) % r.world_size:
        raise ValueError(f"{what}={len(items)} is not divisible by the {r.world_size} torchrun "
                         f"processes; use a multiple of {r.world_size}")
    k = len(items) // r.world_size
    return list(items[r.rank * k:(r.rank + 1) * k])


def _device() -> Any:
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")


def sum_scalar(x: float) -> float:
    """``x`` summed over ranks (in float64, so a token count stays exact)."""
    if not active():
        return x
    import torch
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t.item())


def all_reduce_grads(params: Sequence[Any]) -> None:
    """Sum the gradients of ``params`` over ranks, in one flat buffer. A parameter that got no
    gradient on this rank contributes zeros; when no rank has any gradient, all stay ``None``
    (the caller then skips the step, as a single process would). Parameters FSDP shards
    (:mod:`agentsd.distill.fsdp`) are skipped: FSDP reduce-scatters their gradients itself."""
    if not active():
        return
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    params = [p for p in params if not isinstance(p, DTensor)]
    if sum_scalar(float(any(p.grad is not None for p in params))) == 0:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                      for p in params])
    dist.all_reduce(flat)
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i:i + n].view_as(p).to(p.dtype)
        i += n


def gather_lists(d: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each key's list concatenated over ranks in rank order (metrics over the whole batch)."""
    if not active():
        return d
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, d)
    return {k: [v for p in parts for v in p[k]] for k in d}


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def mean(values: Sequence[float]) -> float:
    """The mean of ``values`` over every rank's values (``nan`` when there are none)."""
    n = sum_scalar(float(len(values)))
    return sum_scalar(float(sum(values))) / n if n else float("nan")


class Silent:
    """What a rank other than 0 logs metrics to: nothing (rank 0 writes the run's files)."""

    def log(self, step: int, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
