"""How many CPU threads torch should use on a machine that other jobs may share.

torch starts with one intra-op thread per core. That is right on an idle machine and badly wrong
on a busy one: every op is split into as many chunks as there are threads and waits for the
slowest, so a thread that the scheduler has parked behind another job stalls the whole op. On the
2-core machine this project runs on, with other jobs using the CPU, torch's default of 2 threads
ran a quickstart 12x slower than 1 thread. Small models (SmolLM2-135M, batch of a few sequences)
also gain little past 4 threads, so more cores buy less than the risk costs.

The rule (:func:`choose_threads`, a pure function of the core count and the 1-minute load
average)::

    >>> choose_threads(cores=2, load_1m=1.7)       # the other jobs fill most of a core: 1
    1
    >>> choose_threads(cores=2, load_1m=0.1)       # idle: use the cores
    2
    >>> choose_threads(cores=2, load_1m=0.8)       # a core 80% busy counts as busy
    1
    >>> choose_threads(cores=16, load_1m=9.0)      # 7 cores left, capped at 4
    4
    >>> choose_threads(cores=16, load_1m=14.5)     # 1.5 cores left
    1

``pick_threads(requested)`` returns ``requested`` when given (``--threads``), otherwise the rule
on this machine's numbers; ``apply_threads(n)`` sets torch (and the BLAS pools, for processes that
start after it) to ``n``.
"""

from __future__ import annotations

import os

__all__ = ["MAX_AUTO_THREADS", "LOAD_NOISE", "choose_threads", "pick_threads", "apply_threads", "usable_cores"]

#: the most threads picked automatically (a 135M-parameter model gains little beyond this)
MAX_AUTO_THREADS = 4
#: load (in cores) that does not count as another job: an idle machine's background
LOAD_NOISE = 0.3


def choose_threads(cores: int, load_1m: float | None, max_threads: int = MAX_AUTO_THREADS) -> int:
    """Threads for torch given ``cores`` usable cores and the 1-minute load average.

    The free cores are ``cores - load_1m`` rounded down after forgiving :data:`LOAD_NOISE` (cron,
    the shell, this process starting up), so a core that is a third busy already counts as busy:
    one parked thread stalls every op, while one thread too few costs at most one core's share.
    At least 1 thread, at most ``max_threads``. An unknown load (``None``, e.g. on Windows) is
    treated as idle."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    if max_threads < 1:
        raise ValueError(f"max_threads must be >= 1, got {max_threads}")
    free = cores if load_1m is None else int(cores - max(load_1m, 0.0) + LOAD_NOISE)
    return max(1, min(free, cores, max_threads))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, e.g. in a container
    pinned to fewer cores than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        return None


def pick_threads(requested: int | None = None) -> int:
    """``requested`` when given (must be >= 1), otherwise :func:`choose_threads` on this machine's
    usable cores and current 1-minute load average."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return int(requested)
    return choose_threads(usable_cores(), _load_1m())


def apply_threads(n: int) -> int:
    """Make torch use ``n`` intra-op threads; return ``n``.

    Also sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` for child
    processes (already-started BLAS pools in this one read them only at start). Inter-op threads
    are left alone: torch allows setting them once, before any parallel work, and the trainer runs
    no inter-op parallel graphs."""
    import torch

    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    return n
