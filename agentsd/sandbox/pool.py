"""Run many sandbox requests at once.

    >>> from agentsd.sandbox import ExecRequest
    >>> with SandboxPool("local", size=2) as pool:                          # doctest: +SKIP
    ...     results = pool.map([ExecRequest(code=f"print({i})") for i in range(8)])
    >>> [r.stdout for r in results][:2]                                     # doctest: +SKIP
    ['0\\n', '1\\n']

Each of the ``size`` workers is a thread that blocks on one run; the backend gives every
concurrent run its own slot (for ``local``: its own uid and cgroup), so runs never share an
identity. ``size`` defaults to the CPU count, which is what the machine can execute at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agentsd.sandbox.types import ExecRequest, ExecResult

__all__ = ["SandboxPool", "default_size"]


def default_size() -> int:
    """Concurrent runs this machine sustains: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class SandboxPool:
    """A fixed number of concurrent runs over one backend (a name or an instance)."""

    def __init__(self, backend: Any = "local", size: int | None = None, **backend_kwargs: Any) -> None:
        size = default_size() if size is None else size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = size
        if isinstance(backend, str):
            from agentsd.sandbox import get_backend

            if backend in ("local", "docker"):
                backend_kwargs.setdefault("slots", size)
            backend = get_backend(backend, **backend_kwargs)
            self._owns = True
        else:
            self._owns = False
        self.backend = backend
        self._ex = ThreadPoolExecutor(max_workers=size, thread_name_prefix="agentsd-sandbox")

    def submit(self, request: ExecRequest) -> Future:
        return self._ex.submit(self.backend.run, request)

    def map(self, requests: Iterable[ExecRequest], progress: bool | str = False,
            on_result: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
        """Run all requests; results in input order. ``progress`` shows a tqdm bar (a string
        is its description); ``on_result(index, result)`` is called as each finishes."""
        from concurrent.futures import as_completed

        reqs = list(requests)
        futs = {self.submit(r): i for i, r in enumerate(reqs)}
        out: list[ExecResult | None] = [None] * len(reqs)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(reqs), desc=progress if isinstance(progress, str) else "sandbox")
        try:
            for f in as_completed(futs):
                i = futs[f]
                out[i] = f.result()
                if on_result is not None:
                    on_result(i, out[i])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._ex.shutdown(wait=True)
        if self._owns:
            self.backend.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
