"""``agentsd sandbox serve``: the sandbox as an HTTP service (FastAPI + uvicorn), speaking
SandboxFusion's ``/run_code`` protocol, so its clients (the official ``sandbox-fusion`` package
among them) work unchanged.

Endpoints:

- ``POST /run_code`` — request and response are the pydantic models of
  :mod:`agentsd.sandbox.fusion` (SandboxFusion's ``RunCodeRequest`` / ``RunCodeResponse`` plus
  an optional ``agentsd`` extension: ``{"limits": {...}, "cmd": [...]}`` in, the full
  ``ExecResult`` with ``limits`` (what ran), ``clamped`` ({field: [asked, given]}) and ``stage``
  out). Status semantics are SandboxFusion's: a run that hit a memory or output limit is a
  *finished* run with a non-zero ``return_code``; ``Error``/``SandboxError`` only when the sandbox
  failed; ``cpu_time`` is reported; ``files`` values of ``null`` are skipped;
- ``POST /run_jupyter`` — 501 (not provided: use ``/run_code``);
- ``GET /v1/ping`` (``"pong"``), ``GET /health`` (backend, capacity, runs in flight, languages),
  ``GET /docs`` and ``GET /openapi.json`` (FastAPI's, from the models).

``language``: one of :data:`agentsd.sandbox.languages.LANGUAGES` (``python``/``python3``,
``pytest``, ``bash``, ``cpp``, ``c``, ``nodejs``) that this machine has — its toolchain visible in
the sandbox's view and a probe program passing through the sandbox (checked on the language's
first request, then remembered). Any other gets 422 naming the languages it has. ``args``
follow the program (for ``pytest``: pytest's); ``compile_timeout`` bounds the compile stage of
``cpp``/``c`` (and nothing for the others, as in SandboxFusion).

Malformed requests — not JSON, invalid UTF-8, nested too deeply, wrong types, values out of
range — get 422 with the field path in ``message`` and FastAPI's ``detail`` list, never 500.
Limits: every client limit is clamped to ``ServerConfig.max_limits`` and the response says which
were; values no ``Limits`` accepts get 422. A request that fails to set up (e.g. its cgroup)
fails alone; the service's limits never switch off. Headers must arrive within
``header_timeout_s`` and the body within ``body_timeout_s`` (then the connection is closed, or
408).

A token (``--token`` or the env var named by ``--token-env``) is required as
``Authorization: Bearer <token>`` on ``/run_code`` when set. The service bounds its own memory
(:class:`BoundedBodies`, in front of FastAPI): a body over ``max_body_kb`` gets 413 (from its
declared length, before any of it is read, or as soon as the bytes read pass it); bodies held by
all requests together — read, parsed or waiting to run — never exceed ``max_inflight_body_kb``
(a request that would pass it gets 429 before its body is buffered); at most
``max_connections`` connections are served at once (uvicorn's ``limit_concurrency``: 503 beyond
it); more than ``concurrency`` runs never execute at once, and more than ``max_queue`` waiting
get 429. A client that disconnects mid-body is logged as one line. Every rejection names the
limit and the ``ServerConfig`` field / CLI flag that sets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from agentsd.sandbox.fusion import RunCodeRequest, RunCodeResponse, error_response, to_job, to_response
from agentsd.sandbox.languages import Catalog, requests_for, run_job
from agentsd.sandbox.types import Limits

__all__ = ["ServerConfig", "build_app", "serve", "serve_in_thread", "BoundedBodies"]

log = logging.getLogger("agentsd.sandbox.server")


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


def _invalid(loc: tuple, msg: str, value: Any = None):
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg,
                                    "input": value}])


class BoundedBodies:
    """ASGI middleware in front of the app for the bounded paths: the token (401), the declared
    length (413), the in-flight body budget (429, before buffering), the body's arrival time
    (408) and its size as read (413); a client that disconnects mid-body is one log line. The
    app then gets the buffered body; its bytes stay counted until the response is sent."""

    def __init__(self, app: Any, cfg: ServerConfig, paths: tuple[str, ...] = ("/run_code",)) -> None:
        self.app, self.cfg, self.paths = app, cfg, paths
        self.held_total = 0  # the event loop is single-threaded: no lock needed
        self.limit, self.budget = cfg.max_body_kb * 1024, cfg.max_inflight_body_kb * 1024
        self.busy = (f"busy: request bodies in flight would pass {cfg.max_inflight_body_kb} KiB "
                     "(ServerConfig.max_inflight_body_kb, --max-inflight-body-kb); retry later")
        self.too_big = f"request body over {cfg.max_body_kb} KiB (ServerConfig.max_body_kb, --max-body-kb)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.cfg.token is not None:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), self.cfg.token.encode()):
                return await _send_json(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        declared = headers.get("content-length", "")
        declared_n = int(declared) if declared.isdigit() else 0
        if declared_n > self.limit:
            return await _send_json(send, 413, self.too_big)
        held = [0]
        try:
            if not self._take(held, declared_n):
                return await _send_json(send, 429, self.busy)
            body = await self._read(scope, receive, send, held)
            if body is None:
                return
            if "content-type" not in headers:  # a bare JSON body is still JSON
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
            replayed = [False]

            async def replay():
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.held_total -= held[0]

    def _take(self, held: list, n: int) -> bool:
        if self.held_total + n > self.budget:
            return False
        self.held_total += n
        held[0] += n
        return True

    async def _read(self, scope, receive, send, held: list) -> bytearray | None:
        """The whole body, or ``None`` after answering (408/413/429) or a disconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.body_timeout_s
        body = bytearray()
        while True:
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                await _send_json(send, 408, f"the body did not arrive within {self.cfg.body_timeout_s:g}s "
                                            "(ServerConfig.body_timeout_s)")
                return None
            if msg["type"] == "http.disconnect":
                client = scope.get("client")
                log.warning("client %s disconnected after %d of its body's bytes; request dropped",
                            f"{client[0]}:{client[1]}" if client else "?", len(body))
                return None
            chunk = msg.get("body", b"")
            if len(body) + len(chunk) > self.limit:
                await _send_json(send, 413, self.too_big)
                return None
            if len(body) + len(chunk) > held[0] and not self._take(held, len(body) + len(chunk) - held[0]):
                await _send_json(send, 429, self.busy)
                return None
            body += chunk
            if not msg.get("more_body", False):
                return body


async def _send_json(send, status: int, message: str) -> None:
    data = json.dumps(error_response(message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _field_errors(errors: list[dict], available: list[str]) -> tuple[str, list[dict]]:
    """A one-line message naming each field path, and the errors without their inputs."""
    parts, clean = [], []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        path = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
        msg = str(e.get("msg", ""))
        ctx_error = (e.get("ctx") or {}).get("error")
        if e.get("type") == "json_invalid" and ctx_error:
            msg = f"{msg}: {ctx_error}"
        if loc[1:2] == ["language"] and "available" not in msg:
            msg += f"; available here: {', '.join(available)}"
        parts.append(f"{path}: {msg}")
        clean.append({k: v for k, v in e.items() if k not in ("input", "url", "ctx")})
    return "; ".join(parts), clean


def build_app(cfg: ServerConfig, backend: Any = None):
    """The ASGI app (FastAPI behind :class:`BoundedBodies`). ``backend`` defaults to
    ``get_backend(cfg.backend, slots=concurrency)``; the app owns and closes the backends it
    builds, and closes ``backend`` at shutdown too."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from agentsd.sandbox import get_backend

    if backend is None:
        kw = {"slots": cfg.concurrency} if cfg.backend in ("local", "docker") else {}
        backend = get_backend(cfg.backend, **kw)
    catalog = Catalog(backend, Limits(wall_s=min(30.0, cfg.max_limits.wall_s)).clamp(cfg.max_limits)[0])
    state = {"in_flight": 0, "waiting": 0, "served": 0}
    sem = asyncio.Semaphore(cfg.concurrency)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        catalog.close()
        backend.close()

    app = FastAPI(title="agentsd sandbox", version="1", lifespan=lifespan,
                  description="SandboxFusion-compatible code execution (`/run_code`) on agentsd's sandbox.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, detail = _field_errors(list(exc.errors()), catalog.available())
        return JSONResponse(error_response(message, detail=detail), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400:  # FastAPI could not parse the body (invalid UTF-8, too deep)
            return JSONResponse(error_response(f"body: {exc.detail} (not UTF-8 JSON, or nested too deeply)",
                                               detail=[{"type": "json_invalid", "loc": ["body"],
                                                        "msg": str(exc.detail)}]), status_code=422)
        return JSONResponse(error_response(str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.post("/run_code", response_model=RunCodeResponse, tags=["sandbox"])
    async def run_code(req: RunCodeRequest):
        """Run ``code`` in ``language`` (SandboxFusion's ``/run_code``)."""
        why = catalog.why_not(req.language)
        if why:
            raise _not_available(req.language, why, catalog.available())
        try:
            job, clamped = to_job(req, cfg.max_limits, cfg.default_wall_s)
            requests_for(job)  # shape errors (names, argv size) before queueing
        except (TypeError, ValueError) as e:
            raise _invalid((), str(e)) from None
        if state["waiting"] >= cfg.max_queue:
            return JSONResponse(error_response(f"busy: {cfg.max_queue} requests already waiting "
                                               "(ServerConfig.max_queue, --max-queue); retry later"), 429)
        state["waiting"] += 1
        try:
            await sem.acquire()
        finally:
            state["waiting"] -= 1
        state["in_flight"] += 1
        try:
            why = await run_in_threadpool(catalog.check, req.language)
            stages = None if why else await run_in_threadpool(run_job, job, catalog.backend_for(job.language))
        finally:
            state["in_flight"] -= 1
            sem.release()
        if stages is None:
            raise _not_available(req.language, why, catalog.available())
        state["served"] += 1
        return JSONResponse(to_response(stages, job.limits, clamped).model_dump(mode="json"))

    @app.post("/run_jupyter", status_code=501, tags=["sandbox"])
    async def run_jupyter():
        """Not provided by agentsd: run notebook cells as one ``/run_code`` program instead."""
        return JSONResponse(error_response("/run_jupyter is not implemented by agentsd sandbox serve; "
                                           "send the cells joined as one program to /run_code"), 501)

    @app.get("/v1/ping", response_class=PlainTextResponse)
    async def ping():
        return "pong"

    @app.get("/health")
    async def health():
        desc = backend.describe() if hasattr(backend, "describe") else {"backend": backend.name}
        return {"ok": True, "backend": desc, "concurrency": cfg.concurrency, **state,
                "languages": catalog.describe()}

    app.state.backend = backend
    app.state.catalog = catalog
    return BoundedBodies(app, cfg)


def _not_available(name: str, why: str, available: list[str]):
    head = f"{name[:40]!r} is not a language agentsd knows" if why == "unknown" else \
        f"{name[:40]!r} is not available on this machine ({why})"
    return _invalid(("language",), f"{head}; available here: {', '.join(available)}", name)


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
