"""Issue 23, the HTTP service bounds itself: body bytes in flight (429 before buffering), a
connection limit, strict types for the ``agentsd`` extension (422 with the field path), one log
line for a client that disconnects mid-body. A fake backend keeps these tests off the sandbox."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from agentsd.sandbox import ExecResult, Status
from agentsd.sandbox.server import ServerConfig, serve_in_thread

TOKEN = "tok-12345678"


class Fake:
    name = "fake"

    def run(self, req):
        return ExecResult(Status.OK, exit_code=0, stdout="ran\n")

    def close(self):
        pass


@pytest.fixture
def srv():
    s = serve_in_thread(ServerConfig(concurrency=1, max_body_kb=64, max_inflight_body_kb=100,
                                     max_connections=4, token=TOKEN, body_timeout_s=10), backend=Fake())
    yield s
    s.stop()


def _addr(srv):
    host, port = srv.url.rsplit("/", 1)[1].split(":")
    return host, int(port)


def _open_body(srv, length: int, first: bytes = b"{") -> socket.socket:
    s = socket.create_connection(_addr(srv), timeout=10)
    s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
              + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length + first)
    return s


def _reply(s: socket.socket) -> bytes:
    """What the server sends until it closes the connection or 3 s pass."""
    out, end = b"", time.monotonic() + 3
    s.settimeout(0.5)
    while time.monotonic() < end and b"}" not in out:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            break
        out += chunk
    return out


def _post(srv, body):
    import httpx

    return httpx.post(srv.url + "/run_code", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30)


def test_bodies_in_flight_are_bounded_before_buffering(srv):
    a = _open_body(srv, 60_000)  # holds 60 000 of the 100 KiB budget while it trickles in
    time.sleep(0.3)
    b = _open_body(srv, 60_000)
    reply = _reply(b)
    assert b" 429 " in reply and b"max_inflight_body_kb" in reply, reply[:200]
    b.close()
    a.close()
    time.sleep(0.3)
    ok = _post(srv, {"code": "print(1)", "language": "python"})  # the budget was given back
    assert ok.status_code == 200, ok.text


def test_oversized_declared_body_is_413_before_reading(srv):
    s = _open_body(srv, 10 * 1024 * 1024, first=b"")
    reply = _reply(s)
    assert b" 413 " in reply and b"max_body_kb" in reply
    s.close()


def test_connection_limit(srv):
    held = [_open_body(srv, 100) for _ in range(4)]
    time.sleep(0.3)
    try:
        extra = _post(srv, {"code": "print(1)", "language": "python"})
        assert extra.status_code == 503, extra.status_code
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("ext", [[], 0, "x", 1.5, True, {"limits": {}, "nope": 1}])
def test_extension_field_is_strictly_typed(srv, ext):
    r = _post(srv, {"code": "print(1)", "language": "python", "agentsd": ext})
    assert r.status_code == 422 and "agentsd" in r.json()["message"], (ext, r.text)
    assert r.json()["detail"][0]["loc"][:2] == ["body", "agentsd"], r.json()


def test_directory_file_names_are_422(srv):
    r = _post(srv, {"code": "print(1)", "language": "python", "files": {"d/": "eA==", "d/x": "eA=="}})
    assert r.status_code == 422 and "directory" in r.json()["message"], r.text
    assert r.json()["message"].startswith("files: "), r.text


def test_client_disconnect_is_one_log_line(srv, caplog):
    caplog.set_level(logging.WARNING)
    s = _open_body(srv, 5000)
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("disconnected" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in lines] == ["agentsd.sandbox.server"], [r.getMessage() for r in lines]
    assert "disconnected" in lines[0].getMessage() and not lines[0].exc_info
