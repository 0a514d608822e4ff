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
           "DEFAULT_LIMITS", "PY_FLAGS", "LIMIT_MAX"]


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


#: the largest value each limit accepts (a request beyond it is a mistake, not a wish)
LIMIT_MAX = {"wall_s": 3600, "cpu_s": 3600, "memory_mb": 1 << 20, "processes": 1 << 15,
             "file_mb": 1 << 20, "output_kb": 1 << 20, "open_files": 1 << 16}


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    import math

    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value) or value <= 0:
        kind = "a positive int" if integer else "a positive finite number"
        raise ValueError(f"Limits.{name} must be {kind}, got {value!r}")
    if value > LIMIT_MAX[name]:
        raise ValueError(f"Limits.{name} must be <= {LIMIT_MAX[name]}, got {value!r}")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution.

    ``wall_s`` wall clock; ``cpu_s`` CPU seconds per process (defaults to ``wall_s`` rounded up);
    ``memory_mb`` address space / cgroup memory; ``processes`` threads+processes of the run;
    ``file_mb`` largest file and the size of the private writable tmpfs; ``output_kb``
    stdout+stderr kept *and* allowed (beyond it the run is killed with ``OUTPUT_LIMIT``);
    ``open_files`` file descriptors per process. Every value must be finite and at most
    :data:`LIMIT_MAX` (a service clamps further to its own maxima).
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

    def clamp(self, maxima: Limits) -> tuple[Limits, dict[str, list]]:
        """These limits capped at ``maxima`` and ``{field: [asked, given]}`` for every cap applied.

        >>> Limits(wall_s=50, memory_mb=4096).clamp(Limits(wall_s=20))[1]
        {'wall_s': [50, 20], 'memory_mb': [4096, 512]}
        """
        kw, changed = {}, {}
        for name in self.__dataclass_fields__:
            asked, cap = getattr(self, name), getattr(maxima, name)
            if cap is None or (asked is None and name == "cpu_s" and self.cpu_seconds <= cap):
                continue
            if asked is None or asked > cap:
                kw[name] = cap
                changed[name] = [asked, cap]
        return (replace(self, **kw) if kw else self), changed


DEFAULT_LIMITS = Limits()

#: interpreter flags of the default command (``python <flags> main.py``): ignore PYTHON* env vars
#: and site-packages (fast start-up) but keep the script's directory on sys.path
PY_FLAGS = ("-E", "-s", "-S")


#: request-shape bounds: more is a mistake of the caller, reported as ``ValueError``
MAX_FILES, MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_ARGV_BYTES = 1000, 255, 1024, 128 * 1024


@dataclass(frozen=True)
class ExecRequest:
    """What to run: ``files`` (path -> text or bytes) written into the working directory, then
    ``cmd`` (argv; ``None`` means ``python main.py *args`` with ``code`` as ``main.py``).
    ``fetch_files`` names files (relative to the working directory, or absolute inside the
    sandbox such as ``/tmp/x``) whose contents come back in :attr:`ExecResult.files`."""

    code: str | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    cmd: tuple[str, ...] | None = None
    stdin: str | bytes = b""
    limits: Limits = DEFAULT_LIMITS
    args: tuple[str, ...] = ()
    fetch_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.files, dict):
            raise TypeError(f"files must be a dict of path -> str/bytes, got {type(self.files).__name__}")
        if self.code is None and not self.files:
            raise ValueError("ExecRequest needs code= or files=")
        if self.code is not None and not isinstance(self.code, str):
            raise TypeError(f"code must be a str, got {type(self.code).__name__}")
        if self.code is not None and "main.py" in self.files:
            raise ValueError("pass either code= or a 'main.py' in files=, not both")
        _check_files(self.files)
        for name, argv in (("cmd", self.cmd), ("args", self.args)):
            if argv is not None and (isinstance(argv, str | bytes) or not isinstance(argv, tuple | list)
                                     or not all(isinstance(a, str) and "\x00" not in a for a in argv)):
                raise ValueError(f"{name} must be a sequence of strings without NUL bytes (not one "
                                 f"string), got {argv!r:.200}")
        if self.cmd is not None and not self.cmd:
            raise ValueError("cmd must be a non-empty sequence of strings, got an empty one")
        if self.cmd is not None and self.args:
            raise ValueError("args= extends the default command; with cmd= put them in cmd")
        argv_bytes = sum(len(a.encode()) + 1 for a in (*(self.cmd or ()), *self.args))
        if argv_bytes > MAX_ARGV_BYTES:
            raise ValueError(f"the command line is {argv_bytes} bytes; at most {MAX_ARGV_BYTES}")
        if self.cmd is None and self.code is None and "main.py" not in self.files:
            raise ValueError("without cmd= the sandbox runs main.py: pass code= or files={'main.py': …}")
        if not isinstance(self.fetch_files, tuple | list) or isinstance(self.fetch_files, str):
            raise ValueError(f"fetch_files must be a sequence of paths, got {self.fetch_files!r:.200}")
        for name in self.fetch_files:
            _check_fetch_path(name)
        if len(self.fetch_files) > MAX_FILES:
            raise ValueError(f"fetch_files names {len(self.fetch_files)} files; at most {MAX_FILES}")
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

    def argv(self, python: str) -> list[str]:
        """The command line to run, with ``python`` as the default interpreter."""
        return list(self.cmd) if self.cmd else [python, *PY_FLAGS, "main.py", *self.args]

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (files base64) for the HTTP service."""
        return {
            "files": {k: base64.b64encode(v).decode() for k, v in self.all_files().items()},
            "cmd": list(self.cmd) if self.cmd else None,
            "args": list(self.args),
            "fetch_files": list(self.fetch_files),
            "stdin": base64.b64encode(self.stdin_bytes()).decode(),
            "limits": self.limits.to_dict(),
        }


def _check_relpath(name: Any) -> str:
    """``name`` normalized, or ``ValueError`` naming what is wrong with it."""
    import posixpath

    if not isinstance(name, str) or not name or name.startswith("/") or "\x00" in name:
        raise ValueError(f"file names must be non-empty relative paths, got {name!r:.300}")
    if name.endswith("/"):
        raise ValueError(f"file name {name!r:.300} names a directory; files= holds files")
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm == ".":
        raise ValueError(f"file name {name!r:.300} escapes the working directory")
    if len(norm.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"file name {name[:60]!r}… is {len(norm.encode())} bytes; at most {MAX_PATH_BYTES}")
    for part in norm.split("/"):
        if len(part.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"file name component {part[:60]!r}… is {len(part.encode())} bytes; "
                             f"at most {MAX_NAME_BYTES}")
    return norm


def _check_files(files: dict) -> None:
    """Names are safe relative paths, not too many, and no file is also a directory."""
    if len(files) > MAX_FILES:
        raise ValueError(f"{len(files)} files; at most {MAX_FILES}")
    norms = {}
    for name, data in files.items():
        norm = _check_relpath(name)
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise TypeError(f"file {name!r} must be str or bytes, got {type(data).__name__}")
        if norm in norms:
            raise ValueError(f"files {norms[norm]!r} and {name!r} are the same path")
        norms[norm] = name
    for norm, name in norms.items():
        parent = norm.rpartition("/")[0]
        while parent:
            if parent in norms:
                raise ValueError(f"{norms[parent]!r} is a file but {name!r} needs it to be a directory")
            parent = parent.rpartition("/")[0]


def _check_fetch_path(name: Any) -> None:
    import posixpath

    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"fetch_files entries must be non-empty paths, got {name!r:.300}")
    if not name.startswith("/"):
        _check_relpath(name)
    elif posixpath.normpath(name) in ("/", "//"):
        raise ValueError(f"fetch_files entry {name!r} names no file")


@dataclass
class ExecResult:
    """The outcome of one execution. ``stdout``/``stderr`` are decoded with replacement
    characters for invalid UTF-8 (the raw bytes are not kept); ``*_truncated`` say the cap cut
    them. ``signal`` is the signal that ended the main process, if any; ``detail`` explains
    non-``ok`` statuses in a sentence (for ``sandbox_error``: what failed); ``files`` holds the
    requested ``fetch_files`` that existed (base64, SandboxFusion's encoding)."""

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
    files: dict[str, str] = field(default_factory=dict)  # fetched files, name -> base64

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
