"""The sandbox contract: limits in, a result dataclass out, one protocol every backend follows.

    >>> from agentsd.sandbox.types import Limits, ExecResult, Status
    >>> Limits(wall_s=2.0).memory_mb
    512
    >>> r = ExecResult(status=Status.OK, exit_code=0, stdout="1\\n")
    >>> r.ok, r.infra_error
    (True, False)

A run that the *code* got wrong (nonzero exit, timeout, memory, output flood) is an ordinary
result; only ``Status.SANDBOX_ERROR`` means the infrastructure failed, so callers can retry it or
stop instead of scoring it as a wrong answer.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

__all__ = ["Status", "Limits", "ExecRequest", "ExecResult", "Backend", "SandboxUnavailable",
           "DEFAULT_LIMITS", "PY_FLAGS"]


class Status(str, enum.Enum):
    """How one execution ended."""

    OK = "ok"  # exited 0 within every limit
    RUNTIME_ERROR = "runtime_error"  # nonzero exit or killed by a signal the code caused
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit reached; the whole process tree was killed
    MEMORY = "memory"  # memory limit reached (cgroup OOM kill or MemoryError)
    OUTPUT_LIMIT = "output_limit"  # stdout+stderr exceeded the cap; the run was killed
    FILE_LIMIT = "file_limit"  # a file grew past the file-size limit or the disk quota filled
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed (not the code's fault)


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this machine (the message says why and
    what to do)."""


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value <= 0:
        kind = "a positive int" if integer else "a positive number"
        raise ValueError(f"Limits.{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution.

    ``wall_s`` wall clock; ``cpu_s`` CPU seconds per process (defaults to ``wall_s`` rounded up);
    ``memory_mb`` address space / cgroup memory; ``processes`` threads+processes of the run;
    ``file_mb`` largest file and the size of the private writable tmpfs; ``output_kb``
    stdout+stderr kept *and* allowed (beyond it the run is killed with ``OUTPUT_LIMIT``);
    ``open_files`` file descriptors per process.
    """

    wall_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 512
    processes: int = 64
    file_mb: int = 64
    output_kb: int = 1024
    open_files: int = 256

    def __post_init__(self) -> None:
        _check_positive("wall_s", self.wall_s)
        if self.cpu_s is not None:
            _check_positive("cpu_s", self.cpu_s)
        for name in ("memory_mb", "processes", "file_mb", "output_kb", "open_files"):
            _check_positive(name, getattr(self, name), integer=True)
        if self.memory_mb < 32:
            raise ValueError(f"Limits.memory_mb must be >= 32 (an interpreter needs it), "
                             f"got {self.memory_mb}")
        if self.wall_s > 3600:
            raise ValueError(f"Limits.wall_s must be <= 3600, got {self.wall_s}")

    @property
    def cpu_seconds(self) -> int:
        """The CPU limit in whole seconds (RLIMIT_CPU granularity)."""
        import math

        return max(1, math.ceil(self.cpu_s if self.cpu_s is not None else self.wall_s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Limits:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown limit(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def replace(self, **kw: Any) -> Limits:
        return replace(self, **kw)


DEFAULT_LIMITS = Limits()

#: interpreter flags of the default command (``python <flags> main.py``): ignore PYTHON* env vars
#: and site-packages (fast start-up) but keep the script's directory on sys.path
PY_FLAGS = ("-E", "-s", "-S")


@dataclass(frozen=True)
class ExecRequest:
    """What to run: ``files`` (path -> text or bytes) written into the working directory, then
    ``cmd`` (argv; ``None`` means ``python main.py`` with ``code`` as ``main.py``)."""

    code: str | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    cmd: tuple[str, ...] | None = None
    stdin: str | bytes = b""
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.code is None and not self.files:
            raise ValueError("ExecRequest needs code= or files=")
        if self.code is not None and not isinstance(self.code, str):
            raise TypeError(f"code must be a str, got {type(self.code).__name__}")
        if self.code is not None and "main.py" in self.files:
            raise ValueError("pass either code= or a 'main.py' in files=, not both")
        for name in self.files:
            _check_relpath(name)
        if self.cmd is not None and (not self.cmd or not all(isinstance(a, str) for a in self.cmd)):
            raise ValueError(f"cmd must be a non-empty sequence of strings, got {self.cmd!r}")
        if self.cmd is None and self.code is None and "main.py" not in self.files:
            raise ValueError("without cmd= the sandbox runs main.py: pass code= or files={'main.py': …}")
        if not isinstance(self.limits, Limits):
            raise TypeError(f"limits must be a Limits, got {type(self.limits).__name__}")

    def all_files(self) -> dict[str, bytes]:
        """Every file to write, as bytes (``code`` becomes ``main.py``)."""
        out = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in self.files.items()}
        if self.code is not None:
            out["main.py"] = self.code.encode()
        return out

    def stdin_bytes(self) -> bytes:
        return self.stdin.encode() if isinstance(self.stdin, str) else bytes(self.stdin)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (files base64) for the HTTP service."""
        return {
            "files": {k: base64.b64encode(v).decode() for k, v in self.all_files().items()},
            "cmd": list(self.cmd) if self.cmd else None,
            "stdin": base64.b64encode(self.stdin_bytes()).decode(),
            "limits": self.limits.to_dict(),
        }


def _check_relpath(name: Any) -> None:
    import posixpath

    if not isinstance(name, str) or not name or name.startswith("/") or "\x00" in name:
        raise ValueError(f"file names must be non-empty relative paths, got {name!r}")
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm == ".":
        raise ValueError(f"file name {name!r} escapes the working directory")


@dataclass
class ExecResult:
    """The outcome of one execution. ``stdout``/``stderr`` are decoded with replacement
    characters for invalid UTF-8 (the raw bytes are not kept); ``*_truncated`` say the cap cut
    them. ``signal`` is the signal that ended the main process, if any; ``detail`` explains
    non-``ok`` statuses in a sentence (for ``sandbox_error``: what failed)."""

    status: Status
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0
    signal: int | None = None
    detail: str = ""
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def infra_error(self) -> bool:
        return self.status is Status.SANDBOX_ERROR

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecResult:
        d = dict(d)
        d["status"] = Status(d["status"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. ``run`` never raises for anything the code does; it raises
    only for invalid requests (``ValueError``/``TypeError``)."""

    name: str

    def run(self, request: ExecRequest) -> ExecResult: ...

    def close(self) -> None: ...
