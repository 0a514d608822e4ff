"""``agentsd sandbox``: serve the sandbox over HTTP, run a file in it, check what this machine
supports, build the docker runtime image. Light at import (the CLI imports every command module)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["register"]


def _port(text: str) -> int:
    """An argparse type: a TCP port (0 lets the OS choose)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be in [0, 65535], got {v}")
    return v


def _count(flag: str):
    """An argparse type: a positive int (checked before anything is loaded)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {v}")
        return v

    return parse


def _serve(args: argparse.Namespace) -> int:
    from agentsd.sandbox.server import ServerConfig, serve

    token = args.token or (os.environ.get(args.token_env) if args.token_env else None)
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"refusing to serve on {args.host} without a token: set --token or ${args.token_env}",
              file=sys.stderr)
        return 2
    try:
        cfg = ServerConfig(backend=args.backend, concurrency=args.concurrency, max_queue=args.max_queue,
                           max_body_kb=args.max_body_kb, token=token,
                           max_inflight_body_kb=args.max_inflight_body_kb,
                           max_connections=args.max_connections)
    except ValueError as e:
        print(f"agentsd sandbox serve: {e}", file=sys.stderr)
        return 2
    print(f"agentsd sandbox serving on http://{args.host}:{args.port} (backend {args.backend}, "
          f"concurrency {args.concurrency}, auth {'on' if token else 'off'})", file=sys.stderr)
    serve(cfg, host=args.host, port=args.port)
    return 0


def _run(args: argparse.Namespace) -> int:
    from agentsd.sandbox import ExecRequest, Limits, get_backend

    with open(args.file) as f:
        code = f.read()
    stdin = sys.stdin.read() if args.stdin else ""
    kw: dict[str, Any] = {"url": args.url} if args.backend == "http" else {"slots": 1}
    box = get_backend(args.backend, **kw)
    try:
        res = box.run(ExecRequest(code=code, stdin=stdin,
                                  limits=Limits(wall_s=args.timeout, memory_mb=args.memory_mb)))
    finally:
        box.close()
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        print(f"[{res.status.value}] exit={res.exit_code} wall={res.wall_s:.3f}s cpu={res.cpu_s:.3f}s"
              + (f" ({res.detail})" if res.detail else ""), file=sys.stderr)
    return 0 if res.ok else 1


def _check(args: argparse.Namespace) -> int:
    from agentsd.sandbox.local import probe

    p = probe()
    report: dict[str, Any] = {"local": {"ok": p.ok, "reason": p.reason, "cgroups": p.cgroups}}
    try:
        from agentsd.sandbox.docker_backend import connect

        connect(timeout=3)
        report["docker"] = {"ok": True}
    except Exception as e:  # noqa: BLE001 - report, do not fail
        report["docker"] = {"ok": False, "reason": str(e)}
    report["languages"] = _languages(p.ok)
    print(json.dumps(report, indent=2))
    return 0 if p.ok else 1


def _languages(local_ok: bool) -> dict[str, str]:
    """Each ``/run_code`` language: ``"ok"`` when a probe program passed through the local
    sandbox, else why it cannot run here."""
    from agentsd.sandbox.languages import LANGUAGES, Catalog, host_support
    from agentsd.sandbox.types import Limits

    if not local_ok:
        return {n: host_support(lang) or "not probed (no local sandbox)" for n, lang in LANGUAGES.items()}
    from agentsd.sandbox.local import LocalSandbox

    box = LocalSandbox(slots=1)
    catalog = Catalog(box, Limits(wall_s=30))
    try:
        for name in LANGUAGES:
            catalog.check(name)
        return catalog.describe()
    finally:
        catalog.close()
        box.close()


def _build_image(args: argparse.Namespace) -> int:
    from agentsd.sandbox.docker_backend import build_runtime_image

    print(build_runtime_image(tag=args.tag))
    return 0


def register(subparsers: Any) -> None:
    """Add ``agentsd sandbox {serve,run,check,build-image}``."""
    p = subparsers.add_parser("sandbox", help="sandboxed code execution: serve, run, check",
                              description="Run untrusted code safely, or serve the sandbox over HTTP.")
    sub = p.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    s = sub.add_parser("serve", help="serve /run_code (SandboxFusion shape) over HTTP")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    s.add_argument("--port", type=_port, default=8080, help="port, 0-65535 (default 8080)")
    s.add_argument("--backend", choices=["local", "docker"], default="local", help="executing backend")
    s.add_argument("--concurrency", type=_count("--concurrency"), default=os.cpu_count() or 1,
                   help="runs executing at once (default: CPU count)")
    s.add_argument("--max-queue", type=_count("--max-queue"), default=64,
                   help="requests allowed to wait (then 429)")
    s.add_argument("--max-body-kb", type=_count("--max-body-kb"), default=4096,
                   help="largest request body (then 413)")
    s.add_argument("--max-inflight-body-kb", type=_count("--max-inflight-body-kb"), default=64 * 1024,
                   help="request-body KiB all requests together may hold (then 429; default 65536)")
    s.add_argument("--max-connections", type=_count("--max-connections"), default=256,
                   help="connections served at once (then 503; default 256)")
    s.add_argument("--token", default=None, help="required bearer token (prefer --token-env)")
    s.add_argument("--token-env", default="AGENTSD_SANDBOX_TOKEN",
                   help="env var holding the token (default AGENTSD_SANDBOX_TOKEN)")
    s.set_defaults(func=_serve)
    r = sub.add_parser("run", help="run a Python file in the sandbox")
    r.add_argument("file", help="Python file to run")
    r.add_argument("--backend", choices=["local", "docker", "http"], default="local")
    r.add_argument("--url", default="http://127.0.0.1:8080", help="server URL for --backend http")
    r.add_argument("--timeout", type=float, default=10.0, help="wall seconds (default 10)")
    r.add_argument("--memory-mb", type=_count("--memory-mb"), default=512, help="memory limit (default 512)")
    r.add_argument("--stdin", action="store_true", help="forward this command's stdin")
    r.add_argument("--json", action="store_true", help="print the full result as JSON")
    r.set_defaults(func=_run)
    c = sub.add_parser("check", help="report which backends and /run_code languages this machine supports")
    c.set_defaults(func=_check)
    b = sub.add_parser("build-image", help="build the docker runtime image from local files")
    b.add_argument("--tag", default="agentsd-sandbox-python:latest", help="image tag")
    b.set_defaults(func=_build_image)
