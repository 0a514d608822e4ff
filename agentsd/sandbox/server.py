"""``agentsd sandbox serve``: the sandbox as an HTTP service (ASGI, starlette + uvicorn).

Endpoints (the run endpoint follows SandboxFusion's ``/run_code`` shape, so its clients work):

- ``POST /run_code`` — request ``{"code", "language": "python", "run_timeout", "compile_timeout",
  "memory_limit_MB", "stdin", "files": {name: base64}}`` plus an optional ``"agentsd":
  {"limits": {...}, "cmd": [...]}`` extension; response ``{"status": "Success" | "Failed" |
  "SandboxError", "message", "compile_result": null, "run_result": {"status": "Finished" |
  "TimeLimitExceeded" | "Error", "execution_time", "return_code", "stdout", "stderr"},
  "files": {}, "agentsd": <ExecResult as a dict>}``;
- ``GET /v1/ping`` (``"pong"``) and ``GET /health`` (backend, capacity, runs in flight).

A token (``--token`` or the env var named by ``--token-env``) is required as
``Authorization: Bearer <token>`` on ``/run_code`` when set. Bodies over ``max_body_kb`` get 413;
more than ``concurrency`` runs execute at once never, and more than ``max_queue`` waiting get 429.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import threading
from dataclasses import dataclass
from typing import Any

from agentsd.sandbox.types import ExecRequest, ExecResult, Limits, Status

__all__ = ["ServerConfig", "build_app", "serve", "serve_in_thread", "request_from_fusion",
           "result_to_fusion"]


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the service (validated)."""

    backend: str = "local"
    concurrency: int = 2
    max_queue: int = 64
    max_body_kb: int = 4096
    token: str | None = None
    default_wall_s: float = 10.0
    max_wall_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_queue", "max_body_kb"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ServerConfig.{name} must be a positive int, got {v!r}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("ServerConfig.token must be at least 8 characters (or None for no auth)")
        if not 0 < self.default_wall_s <= self.max_wall_s:
            raise ValueError("ServerConfig needs 0 < default_wall_s <= max_wall_s")


class BadRequest(ValueError):
    """A request the service rejects with 400 (the message says what is wrong)."""


def request_from_fusion(body: Any, cfg: ServerConfig) -> ExecRequest:
    """Translate a SandboxFusion ``run_code`` body (plus our extension) into an ExecRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    lang = body.get("language", "python")
    if lang not in ("python", "python3"):
        raise BadRequest(f"language {lang!r} is not supported; this service runs 'python'")
    code = body.get("code")
    if not isinstance(code, str):
        raise BadRequest("'code' must be a string")
    ext = body.get("agentsd") or {}
    if not isinstance(ext, dict):
        raise BadRequest("'agentsd' must be an object")
    try:
        limits = Limits.from_dict(ext.get("limits")) if ext.get("limits") else None
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad agentsd.limits: {e}") from e
    if limits is None:
        wall = body.get("run_timeout", cfg.default_wall_s)
        mem = body.get("memory_limit_MB", -1)
        if not isinstance(wall, int | float) or isinstance(wall, bool) or wall <= 0:
            raise BadRequest(f"run_timeout must be a positive number, got {wall!r}")
        kw: dict[str, Any] = {"wall_s": float(wall)}
        if isinstance(mem, int) and not isinstance(mem, bool) and mem > 0:
            kw["memory_mb"] = max(32, mem)
        limits = Limits(**kw)
    if limits.wall_s > cfg.max_wall_s:
        raise BadRequest(f"run time {limits.wall_s}s exceeds this server's max of {cfg.max_wall_s}s")
    files_in = body.get("files") or {}
    if not isinstance(files_in, dict):
        raise BadRequest("'files' must map names to base64 strings")
    try:
        files = {k: base64.b64decode(v, validate=True) for k, v in files_in.items()}
    except (binascii.Error, TypeError, ValueError) as e:
        raise BadRequest(f"'files' values must be base64 strings ({e})") from e
    stdin = body.get("stdin") or ""
    if not isinstance(stdin, str):
        raise BadRequest("'stdin' must be a string")
    cmd = ext.get("cmd")
    try:
        return ExecRequest(code=code, files=files, cmd=tuple(cmd) if cmd else None,
                           stdin=stdin, limits=limits)
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from e


_FUSION_RUN_STATUS = {Status.OK: "Finished", Status.RUNTIME_ERROR: "Finished",
                      Status.TIMEOUT: "TimeLimitExceeded"}


def result_to_fusion(res: ExecResult) -> dict[str, Any]:
    """An ExecResult in SandboxFusion's response shape (with the full result under ``agentsd``)."""
    if res.status is Status.SANDBOX_ERROR:
        return {"status": "SandboxError", "message": res.detail, "compile_result": None,
                "run_result": None, "files": {}, "agentsd": res.to_dict()}
    return {
        "status": "Success" if res.ok else "Failed",
        "message": res.detail,
        "compile_result": None,
        "run_result": {"status": _FUSION_RUN_STATUS.get(res.status, "Error"),
                       "execution_time": res.wall_s, "return_code": res.exit_code,
                       "stdout": res.stdout, "stderr": res.stderr},
        "files": {},
        "agentsd": res.to_dict(),
    }


def build_app(cfg: ServerConfig, backend: Any = None):
    """The starlette app. ``backend`` defaults to ``get_backend(cfg.backend, slots=concurrency)``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from agentsd.sandbox import get_backend

    if backend is None:
        kw = {"slots": cfg.concurrency} if cfg.backend in ("local", "docker") else {}
        backend = get_backend(cfg.backend, **kw)
    state = {"in_flight": 0, "waiting": 0, "served": 0}
    sem = asyncio.Semaphore(cfg.concurrency)
    limit = cfg.max_body_kb * 1024

    def err(code: int, msg: str) -> JSONResponse:
        return JSONResponse({"status": "SandboxError", "message": msg}, status_code=code)

    async def run_code(request: Request):
        if cfg.token is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), cfg.token.encode()):
                return err(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return err(413, f"request body over {cfg.max_body_kb} KiB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return err(413, f"request body over {cfg.max_body_kb} KiB")
        try:
            req = request_from_fusion(json.loads(body), cfg)
        except json.JSONDecodeError as e:
            return err(400, f"the body is not JSON: {e}")
        except BadRequest as e:
            return err(400, str(e))
        if state["waiting"] >= cfg.max_queue:
            return err(429, f"busy: {cfg.max_queue} requests already waiting; retry later")
        state["waiting"] += 1
        try:
            await sem.acquire()
        finally:
            state["waiting"] -= 1
        state["in_flight"] += 1
        try:
            res = await run_in_threadpool(backend.run, req)
        finally:
            state["in_flight"] -= 1
            sem.release()
        state["served"] += 1
        return JSONResponse(result_to_fusion(res))

    async def ping(request: Request):
        return PlainTextResponse("pong")

    async def health(request: Request):
        desc = backend.describe() if hasattr(backend, "describe") else {"backend": backend.name}
        return JSONResponse({"ok": True, "backend": desc, "concurrency": cfg.concurrency,
                             **state})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        backend.close()

    app = Starlette(routes=[Route("/run_code", run_code, methods=["POST"]),
                            Route("/v1/ping", ping), Route("/health", health)],
                    lifespan=lifespan)
    app.state.backend = backend
    return app


def serve(cfg: ServerConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the service in the foreground."""
    import uvicorn

    uvicorn.run(build_app(cfg), host=host, port=port, log_level="warning")


class _Running:
    def __init__(self, server: Any, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_thread(cfg: ServerConfig, backend: Any = None, host: str = "127.0.0.1") -> _Running:
    """Start the real server on a free loopback port in a thread (tests, benchmarks); returns
    an object with ``url`` and ``stop()``."""
    import time

    import uvicorn

    app = build_app(cfg, backend)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning",
                                           lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True, name="agentsd-sandbox-server")
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return _Running(server, t, f"http://{host}:{port}")
