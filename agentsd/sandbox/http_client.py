"""The ``http`` sandbox backend: an httpx client of ``agentsd sandbox serve`` (or of any
SandboxFusion-compatible ``/run_code`` service), with retries.

    >>> box = HttpSandbox("http://127.0.0.1:8080", token="s3cret-token")   # doctest: +SKIP
    >>> box.run(ExecRequest(code="print(1)")).stdout                        # doctest: +SKIP
    '1\\n'

Connection failures, 429 and 5xx answers are retried with exponential backoff
(:func:`agentsd.retrying.retrying`, tenacity); when retries run
out the result is ``Status.SANDBOX_ERROR`` (never a wrong-answer status). Isolation is whatever
the server's backend provides.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from agentsd.retrying import retrying
from agentsd.sandbox.types import ExecRequest, ExecResult, Status

__all__ = ["HttpSandbox"]

_FUSION_STATUS = {"Finished": None, "TimeLimitExceeded": Status.TIMEOUT}


class HttpSandbox:
    """Client backend. ``token`` defaults to ``$AGENTSD_SANDBOX_TOKEN``."""

    name = "http"

    def __init__(self, url: str = "http://127.0.0.1:8080", token: str | None = None, *,
                 retries: int = 3, backoff_s: float = 0.2, timeout_slack_s: float = 30.0,
                 slots: int | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("AGENTSD_SANDBOX_TOKEN")
        self.retries, self.backoff_s, self.timeout_slack_s = retries, backoff_s, timeout_slack_s
        self._client = None

    def _http(self):
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.Client(headers=headers, limits=httpx.Limits(max_connections=64))
        return self._client

    def body(self, req: ExecRequest) -> dict[str, Any]:
        """The SandboxFusion-shaped body (full limits and cmd in the ``agentsd`` extension)."""
        files = req.all_files()
        code = files.pop("main.py").decode() if req.code is not None else ""
        return {
            "code": code, "language": "python", "run_timeout": req.limits.wall_s,
            "memory_limit_MB": req.limits.memory_mb, "stdin": req.stdin_bytes().decode(errors="replace"),
            "files": {k: base64.b64encode(v).decode() for k, v in files.items()},
            "args": list(req.args), "fetch_files": list(req.fetch_files),
            "agentsd": {"limits": req.limits.to_dict(), "cmd": list(req.cmd) if req.cmd else None},
        }

    def run(self, request: ExecRequest) -> ExecResult:
        if not isinstance(request, ExecRequest):
            raise TypeError(f"run() takes an ExecRequest, got {type(request).__name__}")
        if request.code is None:
            # SandboxFusion's shape always has a main program: send main.py as the code
            files = dict(request.files)
            request = ExecRequest(code=_text(files.pop("main.py", b"")), files=files,
                                  cmd=request.cmd, stdin=request.stdin, limits=request.limits,
                                  args=request.args, fetch_files=request.fetch_files)
        import httpx

        body = self.body(request)
        timeout = request.limits.wall_s + self.timeout_slack_s
        last = [""]

        def post() -> Any:
            try:
                r = self._http().post(self.url + "/run_code", json=body, timeout=timeout)
            except httpx.HTTPError as e:
                last[0] = f"{type(e).__name__}: {e}"
                return None
            if r.status_code == 429 or r.status_code >= 500:
                last[0] = f"HTTP {r.status_code}: {r.text[:200]}"
            return r

        def transient(r: Any) -> bool:
            return r is None or r.status_code == 429 or r.status_code >= 500

        r = retrying(self.retries + 1, backoff_s=self.backoff_s, on_result=transient)(post)
        if transient(r):
            return ExecResult(Status.SANDBOX_ERROR, backend=self.name,
                              detail=f"{self.url} failed after {self.retries + 1} attempts: {last[0]}")
        if r.status_code != 200:  # 4xx other than 429: our request is wrong; do not retry
            return ExecResult(Status.SANDBOX_ERROR, backend=self.name,
                              detail=f"HTTP {r.status_code}: {_message(r)}")
        return self._parse(r.json())

    def _parse(self, data: dict) -> ExecResult:
        if isinstance(data.get("agentsd"), dict):
            res = ExecResult.from_dict(data["agentsd"])
            res.backend = f"{self.name}:{res.backend}"
            return res
        # a plain SandboxFusion server: map its coarser statuses
        if data.get("status") == "SandboxError" or not isinstance(data.get("run_result"), dict):
            return ExecResult(Status.SANDBOX_ERROR, detail=str(data.get("message", "")), backend=self.name)
        rr = data["run_result"]
        status = _FUSION_STATUS.get(rr.get("status"), Status.RUNTIME_ERROR)
        if status is None:
            status = Status.OK if rr.get("return_code") == 0 else Status.RUNTIME_ERROR
        files = data.get("files") if isinstance(data.get("files"), dict) else {}
        return ExecResult(status, exit_code=rr.get("return_code"), stdout=rr.get("stdout") or "",
                          stderr=rr.get("stderr") or "", wall_s=float(rr.get("execution_time") or 0),
                          cpu_s=float(rr.get("cpu_time") or 0),
                          backend=self.name, files={str(k): str(v) for k, v in files.items()})

    def health(self) -> dict:
        r = self._http().get(self.url + "/health", timeout=10)
        r.raise_for_status()
        return r.json()

    def describe(self) -> dict:
        return {"backend": self.name, "url": self.url}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_client"} | {"_client": None}


def _text(b: bytes | str) -> str:
    return b if isinstance(b, str) else b.decode("utf-8", errors="replace")


def _message(r) -> str:
    try:
        return str(r.json().get("message", r.text))[:300]
    except ValueError:
        return r.text[:300]
