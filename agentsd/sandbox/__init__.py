"""Sandboxed execution of untrusted code.

    >>> from agentsd import sandbox
    >>> box = sandbox.get_backend("local")                       # doctest: +SKIP
    >>> r = box.run(sandbox.ExecRequest(code="print(1 + 1)"))   # doctest: +SKIP
    >>> r.status.value, r.stdout                                  # doctest: +SKIP
    ('ok', '2\\n')

Backends: ``local`` (namespaces + rlimits + per-slot uids, the embedded default; see
:mod:`agentsd.sandbox.local` for exactly what it isolates), ``docker`` (per-run containers, see
:mod:`agentsd.sandbox.docker_backend`) and ``http`` (a client of ``agentsd sandbox serve``).
:class:`~agentsd.sandbox.pool.SandboxPool` runs many requests at once.
"""

from agentsd.sandbox.types import (
    DEFAULT_LIMITS,
    Backend,
    ExecRequest,
    ExecResult,
    Limits,
    SandboxUnavailable,
    Status,
)

__all__ = ["Backend", "DEFAULT_LIMITS", "ExecRequest", "ExecResult", "Limits", "SandboxUnavailable",
           "Status", "get_backend", "run", "BACKENDS"]

BACKENDS = ("local", "docker", "http")


def get_backend(name: str = "local", **kwargs):
    """Build a backend by name (``local``, ``docker`` or ``http``); kwargs go to its constructor."""
    if name == "local":
        from agentsd.sandbox.local import LocalSandbox

        return LocalSandbox(**kwargs)
    if name == "docker":
        from agentsd.sandbox.docker_backend import DockerSandbox

        return DockerSandbox(**kwargs)
    if name == "http":
        from agentsd.sandbox.http_client import HttpSandbox

        return HttpSandbox(**kwargs)
    raise ValueError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")


_DEFAULT = None


def run(code: str | None = None, *, files: dict | None = None, cmd=None, stdin: str | bytes = b"",
        limits: Limits | None = None, backend=None) -> ExecResult:
    """Run code once (a process-wide ``local`` backend unless ``backend`` is given)."""
    global _DEFAULT
    if backend is None:
        if _DEFAULT is None:
            import atexit

            _DEFAULT = get_backend("local")
            atexit.register(_DEFAULT.close)
        backend = _DEFAULT
    req = ExecRequest(code=code, files=dict(files or {}), cmd=tuple(cmd) if cmd else None,
                      stdin=stdin, limits=limits or DEFAULT_LIMITS)
    return backend.run(req)
