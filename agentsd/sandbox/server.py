"""``agentsd sandbox serve``: the sandbox as an HTTP service (ASGI, starlette + uvicorn).

Endpoints (the run endpoint follows SandboxFusion's ``/run_code`` shape, so its clients work):

- ``POST /run_code`` — request ``{"code", "language": "python", "run_timeout", "compile_timeout",
  "memory_limit_MB", "stdin", "files": {name: base64}, "fetch_files": [path, ...], "args":
  [str, ...]}`` plus an optional ``"agentsd": {"limits": {...}, "cmd": [...]}`` extension;
  response ``{"status": "Success" | "Failed" | "SandboxError", "message", "compile_result": null,
  "run_result": {"status": "Finished" | "TimeLimitExceeded" | "Error", "execution_time",
  "return_code", "stdout", "stderr"}, "files": {path: base64}, "agentsd": <ExecResult as a dict
  plus "limits" (what ran) and "clamped" ({field: [asked, given]})>}``;
- ``GET /v1/ping`` (``"pong"``) and ``GET /health`` (backend, capacity, runs in flight).

``language`` is required (``python``/``python3``; anything else gets 400 naming them). Python has
no compile stage, so ``compile_timeout`` bounds nothing here: it is validated (a positive finite
number) and otherwise has no effect, as in SandboxFusion's own Python runner. ``args`` are appended
to ``python main.py``; ``fetch_files`` come back base64-encoded (missing ones are left out).

Limits: every client limit is clamped to ``ServerConfig.max_limits`` and the response says which
were (``agentsd.clamped``); values that no ``Limits`` accepts (non-finite, negative, absurd) get
400. A request that fails to set up (e.g. its cgroup) fails alone; the service's limits never
switch off. Malformed requests — not JSON, invalid UTF-8, nested too deeply, wrong types — get
400, never 500. Headers must arrive within ``header_timeout_s`` and the body within
``body_timeout_s`` (then the connection is closed, or 408).

A token (``--token`` or the env var named by ``--token-env``) is required as
``Authorization: Bearer <token>`` on ``/run_code`` when set. The service bounds its own memory:
a body over ``max_body_kb`` gets 413 (from its declared length, before any of it is read, or as
soon as the bytes read pass it); bodies held by all requests together — read, parsed or waiting
to run — never exceed ``max_inflight_body_kb`` (a request that would pass it gets 429 before
its body is buffered); at most ``max_connections`` connections are served at once (uvicorn's
``limit_concurrency``: 503 beyond it); more than ``concurrency`` runs never execute at once,
and more than ``max_queue`` waiting get 429. A client that disconnects mid-body is logged as one
line. Every rejection names the limit and the ``ServerConfig`` field / CLI flag that sets it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from agentsd.sandbox.types import ExecRequest, ExecResult, Limits, Status

#: the languages ``/run_code`` runs
LANGUAGES = ("python", "python3")

__all__ = ["ServerConfig", "build_app", "serve", "serve_in_thread", "request_from_fusion",
           "result_to_fusion"]

log = logging.getLogger("agentsd.sandbox.server")
#: the keys of the ``agentsd`` extension object
EXTENSION_KEYS = ("limits", "cmd")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the service (validated)."""

    backend: str = "local"
    concurrency: int = 2
    max_queue: int = 64
    max_body_kb: int = 4096
    token: str | None = None
    default_wall_s: float = 10.0
    #: the most any request gets (client limits above these are clamped)
    max_limits: Limits = field(default_factory=lambda: Limits(
        wall_s=120.0, memory_mb=2048, processes=256, file_mb=256, output_kb=8192, open_files=1024))
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    #: request-body bytes all requests together may hold (KiB); beyond it: 429
    max_inflight_body_kb: int = 64 * 1024
    #: connections served at once (uvicorn limit_concurrency; beyond it: 503)
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_queue", "max_body_kb", "max_inflight_body_kb", "max_connections"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ServerConfig.{name} must be a positive int, got {v!r}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("ServerConfig.token must be at least 8 characters (or None for no auth)")
        if self.max_inflight_body_kb < self.max_body_kb:
            raise ValueError(f"ServerConfig.max_inflight_body_kb ({self.max_inflight_body_kb}) must be "
                             f">= max_body_kb ({self.max_body_kb}): one largest body must fit")
        if not isinstance(self.max_limits, Limits):
            raise TypeError(f"ServerConfig.max_limits must be a Limits, got {type(self.max_limits).__name__}")
        if not 0 < self.default_wall_s <= self.max_limits.wall_s:
            raise ValueError("ServerConfig needs 0 < default_wall_s <= max_limits.wall_s")
        for name in ("header_timeout_s", "body_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 3600:
                raise ValueError(f"ServerConfig.{name} must be in (0, 3600] seconds, got {v!r}")


class BadRequest(ValueError):
    """A request the service rejects with 400 (the message says what is wrong)."""


def _number(body: dict, name: str, default: Any) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise BadRequest(f"'{name}' must be a finite number, got {v!r:.100}")
    return v


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise BadRequest(f"'{name}' must be a list of strings, got {value!r:.100}")
    return tuple(value)


def request_from_fusion(body: Any, cfg: ServerConfig) -> tuple[ExecRequest, dict[str, list]]:
    """Translate a SandboxFusion ``run_code`` body (plus our extension) into an ExecRequest with
    limits clamped to ``cfg.max_limits``; also returns ``{field: [asked, given]}`` per clamp.
    Raises :class:`BadRequest` (400) for anything malformed."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    lang = body.get("language")
    if lang is None:
        raise BadRequest(f"'language' is required; supported: {', '.join(LANGUAGES)}")
    if lang not in LANGUAGES:
        raise BadRequest(f"language {str(lang)[:40]!r} is not supported; supported: {', '.join(LANGUAGES)}")
    code = body.get("code")
    if not isinstance(code, str):
        raise BadRequest("'code' must be a string")
    ext = body.get("agentsd")
    if ext is None:
        ext = {}
    if not isinstance(ext, dict):
        raise BadRequest(f"'agentsd' must be an object with keys {list(EXTENSION_KEYS)}, got "
                         f"{type(ext).__name__} {ext!r:.60}")
    unknown = sorted(str(k) for k in ext if k not in EXTENSION_KEYS)
    if unknown:
        raise BadRequest(f"unknown 'agentsd' key(s) {unknown}; allowed: {list(EXTENSION_KEYS)}")
    compile_timeout = _number(body, "compile_timeout", 10)
    if compile_timeout <= 0:
        raise BadRequest(f"'compile_timeout' must be positive, got {compile_timeout!r}")
    try:
        if ext.get("limits") is not None:
            if not isinstance(ext["limits"], dict):
                raise BadRequest("'agentsd.limits' must be an object")
            limits = Limits.from_dict(ext["limits"])
        else:
            kw: dict[str, Any] = {"wall_s": _number(body, "run_timeout", cfg.default_wall_s)}
            mem = _number(body, "memory_limit_MB", -1)
            if mem > 0:
                kw["memory_mb"] = max(32, math.ceil(mem))
            limits = Limits(**kw)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad limits: {e}") from e
    limits, clamped = limits.clamp(cfg.max_limits)
    files_in = body.get("files", {})
    if files_in is None:
        files_in = {}
    if not isinstance(files_in, dict):
        raise BadRequest("'files' must be an object mapping names to base64 strings")
    try:
        files = {k: base64.b64decode(v, validate=True) for k, v in files_in.items()}
    except (binascii.Error, TypeError, ValueError) as e:
        raise BadRequest(f"'files' values must be base64 strings ({e})") from e
    stdin = body.get("stdin") or ""
    if not isinstance(stdin, str):
        raise BadRequest("'stdin' must be a string")
    cmd = ext.get("cmd")
    if cmd is not None and (not isinstance(cmd, list) or not cmd):
        raise BadRequest(f"'agentsd.cmd' must be a non-empty list of strings, got {cmd!r:.100}")
    try:
        req = ExecRequest(code=code, files=files, cmd=_strings(cmd, "agentsd.cmd") or None,
                          stdin=stdin, limits=limits, args=_strings(body.get("args"), "args"),
                          fetch_files=_strings(body.get("fetch_files"), "fetch_files"))
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from e
    return req, clamped


_FUSION_RUN_STATUS = {Status.OK: "Finished", Status.RUNTIME_ERROR: "Finished",
                      Status.TIMEOUT: "TimeLimitExceeded"}


def result_to_fusion(res: ExecResult) -> dict[str, Any]:
    """An ExecResult in SandboxFusion's response shape (with the full result under ``agentsd``)."""
    if res.status is Status.SANDBOX_ERROR:
        return {"status": "SandboxError", "message": res.detail, "compile_result": None,
                "run_result": None, "files": {}, "agentsd": res.to_dict()}
    files = dict(res.files)
    return {
        "status": "Success" if res.ok else "Failed",
        "message": res.detail,
        "compile_result": None,
        "run_result": {"status": _FUSION_RUN_STATUS.get(res.status, "Error"),
                       "execution_time": res.wall_s, "return_code": res.exit_code,
                       "stdout": res.stdout, "stderr": res.stderr},
        "files": files,
        "agentsd": res.to_dict(),
    }


def build_app(cfg: ServerConfig, backend: Any = None):
    """The starlette app. ``backend`` defaults to ``get_backend(cfg.backend, slots=concurrency)``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from agentsd.sandbox import get_backend

    if backend is None:
        kw = {"slots": cfg.concurrency} if cfg.backend in ("local", "docker") else {}
        backend = get_backend(cfg.backend, **kw)
    state = {"in_flight": 0, "waiting": 0, "served": 0, "body_bytes": 0}
    sem = asyncio.Semaphore(cfg.concurrency)
    limit = cfg.max_body_kb * 1024
    inflight = cfg.max_inflight_body_kb * 1024

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
            return err(413, f"request body over {cfg.max_body_kb} KiB (ServerConfig.max_body_kb, "
                            "--max-body-kb)")
        held = [0]  # bytes this request holds in the in-flight budget (released at the end)
        try:
            return await _serve_body(request, int(declared) if declared and declared.isdigit() else 0,
                                     held)
        finally:
            state["body_bytes"] -= held[0]

    def take(held: list, n: int) -> bool:
        """Hold ``n`` more body bytes if the in-flight budget allows (the loop is single-threaded)."""
        if state["body_bytes"] + n > inflight:
            return False
        state["body_bytes"] += n
        held[0] += n
        return True

    busy_body = (f"busy: request bodies in flight would pass {cfg.max_inflight_body_kb} KiB "
                 "(ServerConfig.max_inflight_body_kb, --max-inflight-body-kb); retry later")

    async def _serve_body(request: Request, declared: int, held: list):
        from starlette.requests import ClientDisconnect

        if not take(held, declared):
            return err(429, busy_body)
        body = bytearray()
        stream = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + cfg.body_timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(left, 0.001))
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                return err(408, f"the body did not arrive within {cfg.body_timeout_s:g}s "
                                "(ServerConfig.body_timeout_s)")
            except ClientDisconnect:
                client = request.client
                log.warning("client %s disconnected after %d of its body's bytes; request dropped",
                            f"{client.host}:{client.port}" if client else "?", len(body))
                return Response(status_code=499)
            if len(body) + len(chunk) > limit:
                return err(413, f"request body over {cfg.max_body_kb} KiB (ServerConfig.max_body_kb, "
                                "--max-body-kb)")
            if len(body) + len(chunk) > held[0] and not take(held, len(body) + len(chunk) - held[0]):
                return err(429, busy_body)
            body += chunk
        try:
            req, clamped = request_from_fusion(json.loads(bytes(body).decode("utf-8")), cfg)
        except UnicodeDecodeError as e:
            return err(400, f"the body is not UTF-8: {e}")
        except RecursionError:
            return err(400, "the body is nested too deeply")
        except BadRequest as e:
            return err(400, str(e))
        except ValueError as e:  # json.JSONDecodeError and anything else malformed
            return err(400, f"the body is not valid JSON: {e}")
        if state["waiting"] >= cfg.max_queue:
            return err(429, f"busy: {cfg.max_queue} requests already waiting (ServerConfig.max_queue, "
                            "--max-queue); retry later")
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
        out = result_to_fusion(res)
        out["agentsd"]["limits"] = req.limits.to_dict()
        out["agentsd"]["clamped"] = clamped
        return JSONResponse(out)

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

    uvicorn.run(build_app(cfg), host=host, port=port, log_level="warning",
                http=header_timeout_protocol(cfg.header_timeout_s),
                limit_concurrency=cfg.max_connections + 1)  # uvicorn counts the new one too


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol that closes a connection whose request headers have not all
    arrived ``seconds`` after it opened or after its previous response (slow-header clients
    otherwise hold a connection forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _hdr_timer = None

        def _arm(self) -> None:
            self._disarm()
            self._hdr_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._hdr_timer is not None:
                self._hdr_timer.cancel()
                self._hdr_timer = None

        def _expire(self) -> None:
            self._hdr_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

    return HeaderTimeoutProtocol


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
                                           lifespan="on", http=header_timeout_protocol(cfg.header_timeout_s),
                                           limit_concurrency=cfg.max_connections + 1))
    t = threading.Thread(target=server.run, daemon=True, name="agentsd-sandbox-server")
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return _Running(server, t, f"http://{host}:{port}")
