"""The process pump of the ``local`` sandbox (and the result classifier every backend shares).

:func:`_pump` feeds a run's stdin, collects its capped stdout/stderr and the launcher's status
lines, and enforces the wall clock and the output cap by calling the caller's ``kill``;
:func:`_classify` turns that raw I/O and the launcher's report into an
:class:`~agentsd.sandbox.types.ExecResult`. How a run is started (namespaces, mounts, the
zygote) lives in :mod:`agentsd.sandbox.local` and :mod:`agentsd.sandbox._launcher`.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

from agentsd.sandbox._fetch import fetch_files
from agentsd.sandbox.types import ExecResult, Limits, Status


def _fetch_weak(work: str, names: tuple[str, ...], budget: int) -> dict[str, str]:
    """Weak mode's ``fetch_files``: the shared reader (:mod:`agentsd.sandbox._fetch`) on its
    temp dir, absolute paths refused (nothing isolates them)."""
    return fetch_files(names, work, budget, absolute=False)


def _reap(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _kill_ns(proc: subprocess.Popen) -> None:
    """SIGKILL the namespace's pid 1 (the kernel then kills the rest of the namespace; reaping
    the ``unshare`` parent afterwards waits for that teardown). Falls back to ``unshare``
    itself, whose ``--kill-child`` forwards the kill."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        kids = []
    for k in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


@dataclass
class _IO:
    stdout: bytes = b""
    stderr: bytes = b""
    out_trunc: bool = False
    err_trunc: bool = False
    timed_out: bool = False
    flooded: bool = False
    status: dict | None = None
    returncode: int | None = None
    wall_s: float = 0.0
    harness_stderr: str = ""


def _pump(stdin_fd: int, out_fd: int, err_fd: int, status_fd: int | None, stdin: bytes,
          lim: Limits, t0: float, kill, finish=None) -> _IO:
    """Feed stdin, collect capped stdout/stderr and the launcher's status lines until every
    reader sees EOF (then the run and its namespace are gone). On the wall clock or the output
    cap, ``kill(status_so_far) -> bool`` is called (until it returns True) and the pipes are
    drained to EOF, so teardown is complete when this returns. Closes every fd it was given;
    ``finish()`` (reaping a subprocess) runs last."""
    io = _IO()
    cap = lim.output_kb * 1024
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    status_buf = bytearray()
    sel = selectors.DefaultSelector()
    for fd in (out_fd, err_fd, status_fd):
        if fd is not None:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
    if stdin:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        os.close(stdin_fd)
        stdin_fd = -1
    pending = memoryview(stdin)
    deadline = t0 + lim.wall_s
    total, killed, hard_deadline = 0, False, None
    try:
        while any(k.fd != stdin_fd for k in sel.get_map().values()):
            now = time.monotonic()
            if not (io.timed_out or io.flooded) and now >= deadline:
                io.timed_out = True
            if io.timed_out or io.flooded:
                if stdin_fd >= 0 and stdin_fd in sel.get_map():
                    sel.unregister(stdin_fd)
                if not killed:
                    killed = bool(kill(bytes(status_buf)))
                hard_deadline = hard_deadline or now + 30
                if now > hard_deadline:
                    raise RuntimeError("the sandbox did not tear down within 30 s of the kill")
            wait = 0.05 if (io.timed_out or io.flooded) else min(max(deadline - now, 0.0), 0.5)
            for key, _ in sel.select(timeout=wait):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the program closed stdin: drop the rest
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        os.close(fd)
                        stdin_fd = -1
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd == status_fd:
                    status_buf += chunk
                    continue
                total += len(chunk)
                room = cap - len(bufs[out_fd]) - len(bufs[err_fd])
                bufs[fd] += chunk[:max(0, room)]
                if total > cap and not io.flooded:
                    io.flooded = True
                    if fd == out_fd:
                        io.out_trunc = True
                    else:
                        io.err_trunc = True
    finally:
        sel.close()
        for fd in (stdin_fd, out_fd, err_fd, status_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if finish is not None:
            io.returncode = finish()
        io.wall_s = time.monotonic() - t0
    return _finish(io, bufs, status_buf)


def _finish(io: _IO, bufs: dict, status_buf: bytearray) -> _IO:
    io.stdout, io.stderr = (bytes(b) for b in bufs.values())  # insertion order: stdout, stderr
    for line in bytes(status_buf).strip().splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            io.status = {"error": f"unreadable launcher status {line[:200]!r}"}
            continue
        if isinstance(msg, dict) and ("exit_code" in msg or "error" in msg):
            io.status = msg  # the pid-1 report; "pid"/"reaped" lines are bookkeeping
    return io


_MEM_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_FILE_MARKERS = ("[Errno 27]", "[Errno 28]", "File too large", "No space left on device")


def _run_pipes() -> tuple[tuple[int, int], ...]:
    """The four pipes of one run: status, stdin, stdout, stderr (each ``(read, write)``)."""
    return os.pipe(), os.pipe(), os.pipe(), os.pipe()


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _classify(io: _IO, lim: Limits, oom_killed: bool) -> ExecResult:
    """Turn raw I/O and the launcher's report into an :class:`ExecResult`."""
    st = io.status or {}
    res = ExecResult(
        Status.OK, exit_code=st.get("exit_code"), signal=st.get("signal"),
        stdout=io.stdout.decode("utf-8", errors="replace"),
        stderr=io.stderr.decode("utf-8", errors="replace"),
        stdout_truncated=io.out_trunc, stderr_truncated=io.err_trunc,
        wall_s=round(io.wall_s, 4), cpu_s=round(float(st.get("cpu_s") or 0.0), 4),
    )
    tail = res.stderr[-2000:]
    if io.timed_out:
        res.status, res.detail = Status.TIMEOUT, f"wall-clock limit of {lim.wall_s:g}s reached"
    elif io.flooded:
        res.status, res.detail = Status.OUTPUT_LIMIT, f"output exceeded {lim.output_kb} KiB"
    elif "error" in st:
        res.status, res.detail = Status.SANDBOX_ERROR, st["error"]
    elif io.status is None and io.returncode is not None:
        # weak mode has no launcher: the process's own return code is the status
        if io.returncode >= 0:
            res.exit_code = io.returncode
        else:
            res.signal = -io.returncode
        if res.exit_code is None and res.signal is None:
            res.status, res.detail = Status.SANDBOX_ERROR, "no status from the sandbox"
    res.files = {k: v for k, v in (st.get("files") or {}).items() if isinstance(v, str)}
    if st.get("files_error") and res.status is Status.OK:
        res.status, res.detail = Status.OUTPUT_LIMIT, st["files_error"]
    if res.status is not Status.OK:
        return res
    if res.exit_code is None and res.signal is None:
        return ExecResult(Status.SANDBOX_ERROR, detail="the launcher died without a status report",
                          stderr=res.stderr, wall_s=res.wall_s)
    if oom_killed:
        res.status, res.detail = Status.MEMORY, f"memory limit of {lim.memory_mb} MiB reached"
    elif res.signal == signal.SIGXCPU or (res.signal == signal.SIGKILL and res.cpu_s >= lim.cpu_seconds - 0.05):
        # only the kernel sends SIGXCPU (at the soft RLIMIT_CPU); weak mode reports no cpu_s
        res.status, res.detail = Status.TIMEOUT, f"CPU-time limit of {lim.cpu_seconds}s reached"
    elif res.signal == signal.SIGXFSZ or (res.exit_code and any(m in tail for m in _FILE_MARKERS)):
        res.status, res.detail = Status.FILE_LIMIT, f"file-size/disk limit of {lim.file_mb} MiB reached"
    elif res.exit_code and any(m in tail for m in _MEM_MARKERS):
        res.status, res.detail = Status.MEMORY, f"memory limit of {lim.memory_mb} MiB reached"
    elif res.exit_code != 0:
        res.status = Status.RUNTIME_ERROR
        res.detail = (f"killed by signal {res.signal}" if res.signal is not None
                      else f"exit code {res.exit_code}")
    return res
