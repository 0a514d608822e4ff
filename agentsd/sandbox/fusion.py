"""SandboxFusion's ``/run_code`` protocol as pydantic models, and its translation to agentsd's.

The field names, types and defaults mirror SandboxFusion's ``RunCodeRequest`` /
``RunCodeResponse`` (its official client, ``sandbox-fusion``, talks to ``agentsd sandbox serve``
unchanged); agentsd adds range checks (timeouts positive and finite, limits within
:data:`~agentsd.sandbox.types.LIMIT_MAX`, base64 that decodes, file names that stay in the
working directory) and one optional, strictly typed extension object ``agentsd`` — in the
request ``{"limits": {...}, "cmd": [...]}``, in the response the full
:class:`~agentsd.sandbox.types.ExecResult` plus what ran. A malformed request is a 422 whose
``detail`` names the field path (FastAPI's own shape).

Status semantics (SandboxFusion's): a stage that ran to its end — whatever its exit code, a
memory or output limit included — is ``Finished`` with a non-zero ``return_code`` (``-signal``
when a signal ended it); a wall or CPU limit is ``TimeLimitExceeded`` (no return code); ``Error``
means the sandbox itself failed, and only then is the response ``SandboxError``. ``Success``
needs every stage ``Finished`` with code 0. ``cpu_time`` is the stage's CPU seconds.

    >>> RunCodeRequest(code="print(1)", language="python").files
    {}
    >>> CommandRunResult(status="Finished", return_code=0).model_dump()["cpu_time"] is None
    True
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from agentsd.sandbox.languages import LANGUAGES, Job, Stages
from agentsd.sandbox.types import LIMIT_MAX, ExecResult, Limits, Status, _check_fetch_path, _check_files

__all__ = ["RunCodeRequest", "RunCodeResponse", "CommandRunResult", "CommandRunStatus", "RunStatus",
           "AgentsdRequest", "to_job", "to_response", "error_response"]


class CommandRunStatus(str, enum.Enum):
    """How one stage (compile or run) ended."""

    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class RunStatus(str, enum.Enum):
    """The request's outcome."""

    Success = "Success"
    Failed = "Failed"
    SandboxError = "SandboxError"


class CommandRunResult(BaseModel):
    status: CommandRunStatus
    execution_time: float | None = None
    cpu_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


def _base64(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64 ({e})") from None


def _file_names(files: dict[str, bytes | None]) -> dict[str, bytes | None]:
    _check_files({k: v for k, v in files.items() if v is not None})
    return files


def _fetch_names(names: list[str]) -> list[str]:
    for n in names:
        _check_fetch_path(n)
    return names


def _argv(values: list[str] | None) -> list[str] | None:
    if values is not None and any("\x00" in a for a in values):
        raise ValueError("must not contain NUL bytes")
    return values


def _limits(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is not None:
        Limits.from_dict(values)  # raises ValueError naming the limit and its range
    return values


_Timeout = Annotated[float, Field(gt=0, le=LIMIT_MAX["wall_s"], allow_inf_nan=False)]


class AgentsdRequest(BaseModel):
    """agentsd's request extension: full ``limits`` (see :class:`~agentsd.sandbox.types.Limits`;
    they replace ``run_timeout``/``memory_limit_MB``) and ``cmd``, the run stage's argv."""

    model_config = ConfigDict(extra="forbid")

    limits: Annotated[dict[str, StrictInt | StrictFloat | None] | None, AfterValidator(_limits)] = None
    cmd: Annotated[list[StrictStr] | None, Field(min_length=1), AfterValidator(_argv)] = None


class RunCodeRequest(BaseModel):
    """SandboxFusion's ``RunCodeRequest`` (``run_timeout`` defaults to the service's
    ``default_wall_s``; ``files`` values of ``null`` are skipped, as there)."""

    compile_timeout: _Timeout = Field(10, description="compile timeout for compiled languages (seconds)")
    run_timeout: _Timeout | None = Field(None, description="code run timeout (seconds; default: the "
                                                           "service's default_wall_s)")
    memory_limit_MB: int = Field(-1, description="maximum memory in megabytes (-1: the service default)")
    code: str = Field(..., examples=['print("hello")'], description="the code to run")
    stdin: str | None = Field(None, examples=[""], description="optional string to pass into stdin")
    language: str = Field(..., examples=["python"], description="the language or execution mode: "
                          + ", ".join(LANGUAGES) + " (those this machine has: GET /health)")
    files: Annotated[dict[str, Annotated[str | None, AfterValidator(_base64)]],
                     AfterValidator(_file_names)] = Field(
        {}, description="a dict from file path to base64 encoded file content")
    fetch_files: Annotated[list[str], AfterValidator(_fetch_names)] = Field(
        [], description="a list of file paths to fetch after code execution")
    args: Annotated[list[str], AfterValidator(_argv)] = Field(
        [], description="additional command-line arguments for the program (pytest: for pytest)")
    agentsd: AgentsdRequest | None = Field(None, description="agentsd's extension: limits, cmd")


class RunCodeResponse(BaseModel):
    """SandboxFusion's ``RunCodeResponse`` plus the ``agentsd`` extension."""

    status: RunStatus
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}
    agentsd: dict[str, Any] | None = None


def to_job(req: RunCodeRequest, max_limits: Limits, default_wall_s: float) -> tuple[Job, dict[str, list]]:
    """The request as a :class:`Job` with limits clamped to ``max_limits``, and
    ``{field: [asked, given]}`` for each limit changed (clamped, or raised to a language's
    floor). ``language`` must be a key of :data:`LANGUAGES` (the service checks first)."""
    lang = LANGUAGES[req.language]
    ext = req.agentsd or AgentsdRequest()
    if ext.limits is not None:
        limits = Limits.from_dict({k: v for k, v in ext.limits.items() if v is not None})
    else:
        kw: dict[str, Any] = {"wall_s": req.run_timeout or default_wall_s}
        if req.memory_limit_MB > 0:
            kw["memory_mb"] = max(32, math.ceil(req.memory_limit_MB))
        limits = Limits(**kw)
    limits, changed = limits.clamp(max_limits)
    floor = min(lang.min_memory_mb, max_limits.memory_mb)
    if limits.memory_mb < floor:
        changed["memory_mb"] = [limits.memory_mb, floor]
        limits = limits.replace(memory_mb=floor)
    compile_limits = None
    if lang.compile is not None:  # the binary comes back as a fetched file: room for it
        compile_limits, _ = limits.replace(
            wall_s=req.compile_timeout, cpu_s=None, memory_mb=max(limits.memory_mb, 1024),
            output_kb=max(limits.output_kb, 8192)).clamp(max_limits)
    files = {k: v for k, v in req.files.items() if v is not None}
    job = Job(lang, req.code, files=files, stdin=req.stdin or "", args=tuple(req.args),
              cmd=tuple(ext.cmd) if ext.cmd else None, fetch_files=tuple(req.fetch_files),
              limits=limits, compile_limits=compile_limits)
    return job, changed


def stage_result(res: ExecResult) -> CommandRunResult:
    """One stage in SandboxFusion's terms (see the module docstring for the mapping)."""
    times = {"execution_time": res.wall_s, "cpu_time": res.cpu_s, "stdout": res.stdout, "stderr": res.stderr}
    if res.status is Status.SANDBOX_ERROR:
        return CommandRunResult(status=CommandRunStatus.Error, **{**times, "stderr": res.stderr or res.detail})
    if res.status is Status.TIMEOUT:
        return CommandRunResult(status=CommandRunStatus.TimeLimitExceeded, **times)
    code = res.exit_code if res.exit_code is not None else (-res.signal if res.signal else None)
    if not res.ok and not code:  # a limit ended a run that exited 0 (e.g. fetched files too large)
        code = 1
    return CommandRunResult(status=CommandRunStatus.Finished, return_code=code, **times)


def to_response(stages: Stages, limits: Limits, changed: dict[str, list]) -> RunCodeResponse:
    """What ran, as SandboxFusion's response (with the full result under ``agentsd``)."""
    results = [r for r in (stages.compile, stages.run) if r is not None]
    last = stages.last
    if any(r.status is Status.SANDBOX_ERROR for r in results):
        status = RunStatus.SandboxError
    else:
        status = RunStatus.Success if all(r.ok for r in results) else RunStatus.Failed
    ext = {**last.to_dict(), "limits": limits.to_dict(), "clamped": changed,
           "stage": "run" if stages.run is not None else "compile"}
    if stages.compile is not None:
        ext["compile"] = stages.compile.to_dict()
    return RunCodeResponse(
        status=status, message=last.detail,
        compile_result=stage_result(stages.compile) if stages.compile is not None else None,
        run_result=stage_result(stages.run) if stages.run is not None else None,
        files=dict(stages.run.files) if stages.run is not None else {}, agentsd=ext)


def error_response(message: str, **extra: Any) -> dict[str, Any]:
    """The body of every non-200 answer: SandboxFusion's ``status``/``message`` pair (plus
    FastAPI's ``detail`` on validation errors)."""
    return {"status": RunStatus.SandboxError.value, "message": message, **extra}
