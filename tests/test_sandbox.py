"""The sandbox: its contract and the adversarial corpus, run against every backend available
here — ``local``, ``http`` (the real server on loopback, local behind it) and ``docker``: when
no engine answers and we are root, the tests start ``dockerd --iptables=false --bridge=none``
themselves (installing Debian's ``docker.io`` with apt first if needed; set
``AGENTSD_TEST_INSTALL_DOCKER=0`` to forbid that) and stop it at the end; otherwise the docker
cases are skipped with the reason.

Every corpus test also checks, through the ``contained`` fixture, that no sandbox process
survives, the host mount table is unchanged, no container is left, and the next run works."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from agentsd.sandbox import ExecRequest, ExecResult, Limits, SandboxUnavailable, Status

SANDBOX_UID_LO, SANDBOX_UID_HI = 60000, 61024


def sandbox_processes() -> list[str]:
    """Host processes running as a sandbox uid (there must be none between runs)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if SANDBOX_UID_LO <= uid < SANDBOX_UID_HI:
                            with open(f"/proc/{pid}/cmdline", "rb") as c:
                                out.append(f"{pid} uid={uid} {c.read()[:80]!r}")
                        break
        except (OSError, ValueError):
            continue
    return out


def host_mounts() -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def labelled_containers() -> list[str]:
    try:
        import docker

        client = docker.from_env(timeout=10)
        return [c.name for c in client.containers.list(all=True, filters={"label": "agentsd.sandbox"})]
    except Exception:  # noqa: BLE001
        return []


def wait_clean(timeout: float = 5.0) -> list[str]:
    """Poll until no sandbox process is left (the kernel reaps asynchronously); return leftovers."""
    deadline = time.monotonic() + timeout
    while True:
        left = sandbox_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class DockerEngine:
    """Find or start a Docker engine; ``reason`` says why not when it cannot."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.reason = ""
        self.ok = self._start()

    @staticmethod
    def _ping() -> bool:
        try:
            import docker

            docker.from_env(timeout=5).ping()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _start(self) -> bool:
        try:
            import docker  # noqa: F401
        except ImportError:
            self.reason = "docker SDK not installed (pip install 'agentsd[docker]')"
            return False
        if self._ping():
            return True
        if os.geteuid() != 0:
            self.reason = "no Docker engine running and not root, so the tests cannot start one"
            return False
        if shutil.which("dockerd") is None:
            if os.environ.get("AGENTSD_TEST_INSTALL_DOCKER", "1") == "0" or shutil.which("apt-get") is None:
                self.reason = "dockerd not installed (apt-get install docker.io) and installing is off"
                return False
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            r = subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True,
                               text=True, timeout=600, env=env)
            if r.returncode != 0:  # a clean machine may have no package lists yet
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env)
                r = subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True,
                                   text=True, timeout=600, env=env)
            if r.returncode != 0 or shutil.which("dockerd") is None:
                self.reason = f"apt-get install docker.io failed: {r.stderr[-300:]}"
                return False
        log = open("/tmp/agentsd-test-dockerd.log", "ab")  # noqa: SIM115 - lives with the engine
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none"],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._ping():
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.reason = "dockerd did not come up (see /tmp/agentsd-test-dockerd.log)"
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def make_backend(name: str, engine_factory):
    """Build a named backend for tests, skipping with a reason when it cannot exist here."""
    from agentsd.sandbox import SandboxUnavailable, get_backend
    from agentsd.sandbox.local import probe

    if name in ("local", "http"):
        p = probe()
        if not p.ok:
            pytest.skip(f"local sandbox unavailable: {p.reason}")
    if name == "local":
        return get_backend("local", slots=2), None
    if name == "http":
        from agentsd.sandbox.server import ServerConfig, serve_in_thread

        token = "test-token-" + os.urandom(6).hex()
        srv = serve_in_thread(ServerConfig(concurrency=2, token=token))
        return get_backend("http", url=srv.url, token=token), srv
    if name == "docker":
        eng = engine_factory()
        if not eng.ok:
            pytest.skip(f"docker tests skipped: {eng.reason}")
        try:
            return get_backend("docker", slots=2), None
        except SandboxUnavailable as e:
            pytest.skip(f"docker backend unavailable: {e}")
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------
# fixtures

_ENGINE: DockerEngine | None = None


def _engine() -> DockerEngine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = DockerEngine()
    return _ENGINE


@pytest.fixture(scope="session", autouse=True)
def _stop_engine_at_end():
    yield
    if _ENGINE is not None:
        _ENGINE.stop()


@pytest.fixture(scope="module", params=["local", "http", pytest.param("docker", marks=pytest.mark.docker)])
def box(request):
    """Each available backend (module-scoped: one server, one engine connection)."""
    name = request.param
    backend, srv = make_backend(name, _engine)
    yield backend
    backend.close()
    if srv is not None:
        srv.stop()


LIM = Limits(wall_s=2.0, cpu_s=1.0, memory_mb=256, processes=32, file_mb=32, output_kb=256)
#: for the tests that must time out: a shorter wall clock keeps the suite fast
TLIM = LIM.replace(wall_s=1.0)


def run(box, code: str, limits: Limits = LIM, **kw) -> ExecResult:
    return box.run(ExecRequest(code=code, limits=limits, **kw))


@pytest.fixture
def contained(box):
    """After the test: no sandbox process left, host mounts unchanged, no labelled container,
    and the next run works normally."""
    mounts = host_mounts()
    yield
    assert wait_clean() == [], "sandbox processes outlived their run"
    assert host_mounts() == mounts, "the run changed the host's mount table"
    assert labelled_containers() == [], "a sandbox container was left behind"
    nxt = run(box, "print('next run fine')")
    assert nxt.status is Status.OK and nxt.stdout == "next run fine\n", nxt


# ---------------------------------------------------------------------------------------------
# the contract (every backend)

def test_hello_and_exit_codes(box):
    r = run(box, "import sys; print('hi'); print('err', file=sys.stderr); sys.exit(3)")
    assert r.status is Status.RUNTIME_ERROR and r.exit_code == 3
    assert r.stdout == "hi\n" and r.stderr == "err\n"
    ok = run(box, "print(sum(range(10)))")
    assert ok.ok and ok.stdout == "45\n" and ok.exit_code == 0 and ok.wall_s > 0


def test_files_cmd_and_stdin(box):
    req = ExecRequest(files={"pkg/mod.py": "X = 41\n", "main.py": "import sys\nfrom pkg.mod import X\n"
                             "print(X + int(sys.stdin.read()))\n"},
                      stdin="1", limits=LIM)
    r = box.run(req)
    assert r.ok, r
    assert r.stdout == "42\n"
    r2 = box.run(ExecRequest(files={"a.py": "print('via cmd')"}, cmd=("python3", "a.py"), limits=LIM))
    assert r2.ok and r2.stdout == "via cmd\n", r2


# ---------------------------------------------------------------------------------------------
# the adversarial corpus (every backend)

def test_infinite_loop_times_out(box, contained):
    r = run(box, "while True: pass", TLIM)
    assert r.status is Status.TIMEOUT, r


def test_sleep_forever_times_out(box, contained):
    r = run(box, "import time; time.sleep(10_000)", TLIM)
    assert r.status is Status.TIMEOUT, r
    assert r.wall_s < 30


def test_fork_bomb_is_contained(box, contained):
    r = run(box, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", TLIM)
    assert r.status in (Status.TIMEOUT, Status.RUNTIME_ERROR, Status.MEMORY), r


def test_memory_bomb_single_allocation(box, contained):
    r = run(box, "x = bytearray(8 * 1024 ** 3)\nprint('allocated')")
    assert r.status is Status.MEMORY, r
    assert "allocated" not in r.stdout


def test_memory_bomb_gradual(box, contained):
    r = run(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n")
    assert r.status is Status.MEMORY, r


@pytest.mark.parametrize("where", ["big.bin", "/tmp/big.bin"])
def test_5gb_file_write_is_capped(box, contained, where):
    name = where.replace("big", "big-" + uuid.uuid4().hex[:8])
    r = run(box, f"f = open({name!r}, 'wb')\nfor _ in range(5 * 1024):\n    f.write(b'x' * (1 << 20))\n")
    assert r.status is Status.FILE_LIMIT, r
    assert not os.path.exists(name) and not os.path.exists(os.path.join("/tmp", os.path.basename(name)))


def test_network_to_loopback_listener_is_blocked(box, contained):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        r = run(box, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                     "s.sendall(b'escaped')\nprint('CONNECTED')")
        assert "CONNECTED" not in r.stdout and r.status is Status.RUNTIME_ERROR, r
        with pytest.raises(BlockingIOError):
            srv.accept()  # nobody ever connected
    finally:
        srv.close()


def test_network_to_public_address_is_blocked(box, contained):
    r = run(box, "import socket\nfor addr in [('1.1.1.1', 80), ('8.8.8.8', 53)]:\n"
                 "    try:\n        socket.create_connection(addr, timeout=1); print('CONNECTED', addr)\n"
                 "    except OSError as e:\n        print('blocked', e.errno)\n"
                 "try:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
                 "except OSError:\n    print('no dns')\n")
    assert r.ok, r
    assert "CONNECTED" not in r.stdout and "RESOLVED" not in r.stdout
    assert r.stdout.count("blocked") == 2


def test_root_only_files_and_parent_secrets_are_unreadable(box, contained, tmp_path, monkeypatch):
    secret = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("AGENTSD_TEST_SECRET", secret)
    path = tmp_path / "root-only.txt"
    path.write_text(secret)
    path.chmod(0o600)
    code = ("import os, glob\n"
            "print(dict(os.environ))\n"
            f"for p in ['/etc/shadow', {str(path)!r}, '/root/.bash_history'] + glob.glob('/proc/*/environ'):\n"
            "    try:\n        print('READ', p, open(p, 'rb').read()[:4000])\n"
            "    except OSError as e:\n        print('denied', p, e.errno)\n")
    r = run(box, code)
    assert r.ok, r
    assert secret not in r.stdout and secret not in r.stderr
    assert "READ /etc/shadow" not in r.stdout


def test_writing_outside_the_sandbox_fails(box, contained, tmp_path):
    targets = ["/usr/agentsd-escape", "/etc/agentsd-escape", "/agentsd-escape",
               str(tmp_path / "agentsd-escape"), os.path.join(os.getcwd(), "agentsd-escape")]
    code = (f"for p in {targets!r}:\n    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError as e:\n        print('refused', p, e.errno)\n")
    r = run(box, code)
    assert r.ok, r
    assert "WROTE" not in r.stdout
    for t in targets:
        assert not os.path.exists(t)


def test_killing_the_parent_fails(box, contained):
    code = ("import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n"
            "        os.kill(pid, signal.SIGKILL); print('sent', pid)\n"
            "    except OSError as e:\n        print('refused', pid, e.errno)\n"
            "print('still here')\n")
    r = run(box, code)
    assert r.ok and "still here" in r.stdout, r
    assert f"sent {1}\n" not in r.stdout


def test_setsid_double_fork_escape_is_killed(box, contained):
    code = ("import os, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.close(1); os.close(2)\n        time.sleep(10_000)\n    os._exit(0)\n"
            "os.wait()\nprint('parent exits')\n")
    r = run(box, code)
    assert r.ok and r.stdout == "parent exits\n", r
    # `contained` asserts no process with a sandbox uid survives


def test_huge_stdout_is_capped(box, contained):
    r = run(box, "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n")
    assert r.status is Status.OUTPUT_LIMIT, r
    assert r.stdout_truncated and 0 < len(r.stdout) <= LIM.output_kb * 1024


def test_binary_and_invalid_utf8_output(box, contained):
    r = run(box, "import sys\nsys.stdout.buffer.write(bytes(range(256)) + b'\\xff\\xfe\\xc3(')\n"
                 "sys.stderr.buffer.write(b'\\x80bad')\n")
    assert r.ok, r
    assert "\ufffd" in r.stdout and "\ufffd" in r.stderr and "bad" in r.stderr
    json.dumps(r.to_dict())  # results stay JSON-safe


def test_stdin_wait_does_not_hang(box, contained):
    r = run(box, "import sys\ndata = sys.stdin.read()\nprint(len(data))\n")
    assert r.ok and r.stdout == "0\n", r  # no stdin means EOF, not a hang
    r2 = run(box, "import time\ntime.sleep(10_000)\n", TLIM, stdin="z" * (2 << 20))
    assert r2.status is Status.TIMEOUT, r2  # a writer blocked on a full pipe must not hang us


def test_many_threads_are_contained(box, contained):
    code = ("import threading, time\nstarted = 0\ntry:\n    for _ in range(5000):\n"
            "        threading.Thread(target=time.sleep, args=(0.2,), daemon=True).start(); started += 1\n"
            "except RuntimeError:\n    pass\nprint(started)\n")
    r = run(box, code)
    assert r.status in (Status.OK, Status.TIMEOUT, Status.MEMORY, Status.RUNTIME_ERROR), r
    if r.ok:
        assert int(r.stdout) < 5000  # the process limit stopped it


# ---------------------------------------------------------------------------------------------
# types and the local backend's refusal

def test_limits_validate_with_named_fields():
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=-5)
    with pytest.raises(ValueError, match="unknown limit"):
        Limits.from_dict({"wall": 3})
    assert Limits.from_dict(Limits(wall_s=3).to_dict()) == Limits(wall_s=3)


def test_request_rejects_escaping_paths():
    for bad in ("../x.py", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError, match="escapes|relative"):
            ExecRequest(files={bad: "x"})
    with pytest.raises(ValueError, match="code= or files="):
        ExecRequest()


def test_result_roundtrip():
    r = ExecResult(Status.TIMEOUT, stdout="a", wall_s=1.5, detail="d")
    assert ExecResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_local_refuses_without_root_unless_weak(monkeypatch):
    from agentsd.sandbox import local

    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable, match="isolation='weak'"):
        local.LocalSandbox(slots=1)
    weak = local.LocalSandbox(slots=1, isolation="weak")
    r = weak.run(ExecRequest(code="print(6 * 7)", limits=LIM))
    assert r.ok and r.stdout == "42\n" and r.backend == "local-weak"
    assert weak.run(ExecRequest(code="while True: pass", limits=LIM)).status is Status.TIMEOUT


def test_pool_runs_concurrently_with_distinct_uids():
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.pool import SandboxPool

    if not probe().ok:
        pytest.skip(probe().reason)
    with SandboxPool("local", size=2) as pool:
        rs = pool.map([ExecRequest(code="import os, time; time.sleep(0.3); print(os.getuid())",
                                   limits=LIM) for _ in range(4)])
    assert all(r.ok for r in rs), rs
    assert len({r.stdout for r in rs}) == 2  # two slots, two uids
    assert wait_clean() == []


# ---------------------------------------------------------------------------------------------
# the HTTP service

@pytest.fixture(scope="module")
def server():
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.server import ServerConfig, serve_in_thread

    if not probe().ok:
        pytest.skip(probe().reason)
    srv = serve_in_thread(ServerConfig(concurrency=1, max_queue=1, max_body_kb=64, token="tok-12345678"))
    yield srv
    srv.stop()


def test_server_speaks_sandboxfusion_run_code(server):
    import httpx

    h = {"Authorization": "Bearer tok-12345678"}
    body = {"code": "print(input())", "language": "python", "run_timeout": 5, "stdin": "hello",
            "compile_timeout": 10, "memory_limit_MB": -1, "files": {}, "fetch_files": []}
    r = httpx.post(server.url + "/run_code", json=body, headers=h, timeout=30).json()
    assert r["status"] == "Success" and r["run_result"]["status"] == "Finished"
    assert r["run_result"]["stdout"] == "hello\n" and r["run_result"]["return_code"] == 0
    t = httpx.post(server.url + "/run_code", json={"code": "while 1: pass", "language": "python",
                                                   "run_timeout": 1}, headers=h, timeout=30).json()
    assert t["status"] == "Failed" and t["run_result"]["status"] == "TimeLimitExceeded"
    assert httpx.get(server.url + "/v1/ping").text == "pong"
    assert httpx.get(server.url + "/health").json()["ok"] is True


def test_server_rejects_bad_requests(server):
    import httpx

    h = {"Authorization": "Bearer tok-12345678"}
    url = server.url + "/run_code"
    assert httpx.post(url, json={"code": "print(1)", "language": "python"}).status_code == 401
    assert httpx.post(url, json={"code": "print(1)"}, headers={"Authorization": "Bearer nope"}).status_code == 401
    big = httpx.post(url, json={"code": "#" * 100_000}, headers=h)
    assert big.status_code == 413 and "KiB" in big.json()["message"]
    lang = httpx.post(url, json={"code": "x", "language": "cobol"}, headers=h)
    assert lang.status_code == 422 and "cobol" in lang.json()["message"]
    assert lang.json()["detail"][0]["loc"] == ["body", "language"]
    assert httpx.post(url, content=b"{nope", headers=h).status_code == 422


def test_server_queue_limit_answers_429(server):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    h = {"Authorization": "Bearer tok-12345678"}
    body = {"code": "import time; time.sleep(1.5)", "language": "python", "run_timeout": 5}
    with ThreadPoolExecutor(4) as ex:
        codes = list(ex.map(lambda _: httpx.post(server.url + "/run_code", json=body, headers=h,
                                                 timeout=60).status_code, range(4)))
    assert codes.count(200) >= 2 and 429 in codes, codes  # 1 running + 1 queued, the rest refused


def test_http_client_reports_unreachable_server_as_sandbox_error():
    from agentsd.sandbox.http_client import HttpSandbox

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = HttpSandbox(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01).run(ExecRequest(code="print(1)"))
    assert r.status is Status.SANDBOX_ERROR and r.infra_error and "2 attempts" in r.detail


# ---------------------------------------------------------------------------------------------
# soak: nothing accumulates (slow tier)

def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 2])
def test_1000_runs_leave_nothing_behind(concurrency):
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.pool import SandboxPool

    if not probe().ok:
        pytest.skip(probe().reason)
    mounts, tmp_before = host_mounts(), set(os.listdir("/tmp"))
    with SandboxPool("local", size=concurrency) as pool:
        reqs = [ExecRequest(code="import os; open('/tmp/x', 'w').write('x'); print(1)", limits=LIM)
                for _ in range(200)]
        assert all(r.ok for r in pool.map(reqs))
        rss_warm = _rss_kb()
        for _ in range(4):
            assert all(r.ok for r in pool.map(reqs))
        growth_kb = _rss_kb() - rss_warm
    assert wait_clean() == []
    assert host_mounts() == mounts
    assert not {n for n in set(os.listdir("/tmp")) - tmp_before if "agentsd" in n or n == "x"}
    assert growth_kb < 20_000, f"harness RSS grew {growth_kb} KiB over 800 runs"


def test_spawn_mode_matches_zygote_mode():
    """The per-run ``unshare`` path (no long-lived helper) gives the same statuses."""
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(probe().reason)
    cases = {"print(2 + 2)": Status.OK, "while True: pass": Status.TIMEOUT,
             "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n": Status.OUTPUT_LIMIT,
             "x = bytearray(8 * 1024 ** 3)": Status.MEMORY,
             "import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(10_000)\n": Status.OK}
    with LocalSandbox(slots=1, mode="spawn") as box:
        for code, want in cases.items():
            assert box.run(ExecRequest(code=code, limits=TLIM)).status is want, code
    assert wait_clean() == []


def test_zygote_restarts_after_it_dies():
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(probe().reason)
    with LocalSandbox(slots=1) as box:
        assert box.run(ExecRequest(code="print(1)", limits=LIM)).ok
        box._zproc.kill()
        box._zproc.wait()
        r = box.run(ExecRequest(code="print(2)", limits=LIM))
        assert r.ok and r.stdout == "2\n", r


# ---------------------------------------------------------------------------------------------
# issue 13: state across runs, seccomp, limits that hold, clear errors, layouts, SandboxFusion

#: eight children of 80 MiB each: only a cgroup (not the per-process rlimit) stops them together
CHILDREN_BOMB = ("import os, time\nkids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
                 "        b = bytearray(80 * 1024 * 1024)\n        time.sleep(3)\n        os._exit(0)\n"
                 "    kids.append(pid)\nfor k in kids:\n    os.waitpid(k, 0)\nprint('all fine')\n")

KEY_SYSCALLS = ("import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                "ADD_KEY, REQUEST_KEY, KEYCTL = 248, 249, 250\n")


def test_keyring_state_does_not_cross_runs(box, contained):
    """Run 1 stores a secret in the uid's user keyring; run 2 (same slot uid when the backend
    reuses it) must not get it back, and keyring calls are denied outright."""
    secret, desc = "k3y-" + uuid.uuid4().hex, "agentsd-test-" + uuid.uuid4().hex[:8]
    store = (KEY_SYSCALLS + f"r = libc.syscall(ADD_KEY, b'user', {desc.encode()!r}, {secret.encode()!r}, "
             f"{len(secret)}, ctypes.c_int(-4))\nprint('add_key', r, ctypes.get_errno())\n")
    r1 = run(box, store)
    assert r1.ok and "add_key -1 1" in r1.stdout, r1  # EPERM
    fetch = (KEY_SYSCALLS + f"kid = libc.syscall(REQUEST_KEY, b'user', {desc.encode()!r}, None, 0)\n"
             "buf = ctypes.create_string_buffer(4096)\n"
             "n = libc.syscall(KEYCTL, 11, kid, buf, 4096) if kid > 0 else -1\n"
             "print('got', kid, buf.raw[:max(n, 0)])\n"
             "try:\n    print(open('/proc/keys').read())\nexcept OSError as e:\n    print('no /proc/keys', e.errno)\n")
    for _ in range(2):
        r2 = run(box, fetch)
        assert r2.ok and secret not in r2.stdout and desc not in r2.stdout, r2


@pytest.mark.parametrize("name,call", [
    ("userns", "libc.unshare(0x10000000)"),
    ("mountns", "libc.unshare(0x00020000)"),
    ("clone_userns", "libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)"),
    ("mount", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)"),
    ("bpf", "libc.syscall(321, 0, None, 0)"),
    ("perf_event_open", "libc.syscall(298, None, 0, -1, -1, 0)"),
    ("ptrace", "libc.ptrace(0, 0, None, None)"),
    ("keyctl", "libc.syscall(250, 1, None)"),
])
def test_seccomp_denies_dangerous_syscalls(box, contained, name, call):
    if box.name == "docker" and name == "ptrace":
        pytest.skip("docker's default seccomp profile allows ptrace on kernels >= 4.8 (no capability to use it)")
    r = run(box, f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = {call}\n"
                 "print('ret', r, ctypes.get_errno())\n")
    assert r.ok, r
    ret, err = r.stdout.split()[1:3]
    assert int(ret) == -1 and int(err) in (1, 38), r  # EPERM (or ENOSYS)


def test_seccomp_filter_is_on_and_host_paths_stay_hidden(box, contained):
    from agentsd.sandbox.local import LAUNCHER

    code = ("import glob, os\nst = open('/proc/self/status').read()\n"
            "print('seccomp', st.split('Seccomp:')[1].split()[0])\n"
            "for p in glob.glob('/proc/*/cmdline') + ['/proc/self/mountinfo', '/proc/1/environ']:\n"
            "    try:\n        print(p, open(p, 'rb').read())\n"
            "    except OSError as e:\n        print(p, 'denied', e.errno)\n")
    r = run(box, code)
    assert r.ok and "seccomp 2" in r.stdout, r
    assert os.path.dirname(LAUNCHER) not in r.stdout and "devtmpfs" not in r.stdout
    assert "/proc/1/cmdline" not in r.stdout or box.name == "docker"


def test_dev_stdout_and_stderr_open(box, contained):
    r = run(box, "open('/dev/stdout', 'w').write('out\\n')\nopen('/dev/stderr', 'w').write('err\\n')\n")
    assert r.ok and r.stdout == "out\n" and r.stderr == "err\n", r


def test_user_mistakes_are_value_errors():
    for files in ({"a": "x", "a/b": "y"}, {"x" * 300: "y"}, {f"f{i}": "" for i in range(1001)}):
        with pytest.raises(ValueError):
            ExecRequest(code="print(1)", files=files)
    with pytest.raises(ValueError, match="not one string"):
        ExecRequest(code="print(1)", cmd="python")
    with pytest.raises(ValueError, match="command line"):
        ExecRequest(code="print(1)", args=("a" * 100_000, "b" * 100_000))
    with pytest.raises(TypeError):
        ExecRequest(code="print(1)", files=[])
    for bad in (float("nan"), float("inf"), 5000):
        with pytest.raises(ValueError, match="wall_s"):
            Limits(wall_s=bad)
    with pytest.raises(ValueError, match="processes"):
        Limits(processes=2 ** 63)


def test_args_and_fetch_files(box, contained):
    r = box.run(ExecRequest(code="import sys\nopen('out.txt', 'w').write('-'.join(sys.argv[1:]))\n"
                                 "open('/tmp/t.bin', 'wb').write(b'\\x00\\x01')\n"
                                 "os_link = __import__('os').symlink('/etc/shadow', 'shadow')\n",
                            args=("a", "b c"), fetch_files=("out.txt", "/tmp/t.bin", "missing", "shadow"),
                            limits=LIM))
    import base64

    assert r.ok, r
    assert base64.b64decode(r.files["out.txt"]) == b"a-b c"
    assert base64.b64decode(r.files["/tmp/t.bin"]) == b"\x00\x01"
    assert "missing" not in r.files and "shadow" not in r.files  # symlinks are not followed


def test_each_instance_owns_its_cgroups():
    """Two instances (as two eval-code runs would have): closing one never removes the other's
    cgroup directories."""
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(probe().reason)
    a, b = LocalSandbox(slots=1), LocalSandbox(slots=1)
    try:
        assert b.run(ExecRequest(code="print(1)", limits=LIM)).ok
        assert a.run(ExecRequest(code="print(1)", limits=LIM)).ok
        dirs = b._cgroup_dirs(0)
        assert not set(dirs) & set(a._cgroup_dirs(0))
        a.close()
        assert all(os.path.isdir(d) for d in dirs)
        assert b.run(ExecRequest(code="print(2)", limits=LIM)).ok
    finally:
        a.close()
        b.close()
    assert not any(os.path.exists(d) for d in dirs)


def test_failed_cgroup_setup_fails_the_run_not_the_backend(monkeypatch):
    from agentsd.sandbox import local

    if not local.probe().ok or local.probe().cgroups == "none":
        pytest.skip("needs writable cgroups")
    with local.LocalSandbox(slots=1) as box:
        kind = box.describe()["cgroups"]
        assert kind != "none"
        real = local._write
        monkeypatch.setattr(local, "_write", lambda p, v: (_ for _ in ()).throw(OSError(22, "injected")))
        bad = box.run(ExecRequest(code="print(1)", limits=LIM))
        assert bad.status is Status.SANDBOX_ERROR and "injected" in bad.detail
        monkeypatch.setattr(local, "_write", real)
        assert box.describe()["cgroups"] == kind
        r = box.run(ExecRequest(code=CHILDREN_BOMB, limits=LIM.replace(memory_mb=128, wall_s=10, file_mb=16)))
        assert r.status is Status.MEMORY, r  # the cgroup still holds the run


def test_spawn_mode_has_a_backstop_when_the_caller_is_killed(tmp_path):
    """SIGKILL the harness mid-run: the program still dies shortly after its wall limit."""
    from agentsd.sandbox.local import probe

    if not probe().ok:
        pytest.skip(probe().reason)
    script = tmp_path / "harness.py"
    script.write_text("from agentsd.sandbox.local import LocalSandbox\n"
                      "from agentsd.sandbox import ExecRequest, Limits\n"
                      "box = LocalSandbox(slots=1, mode='spawn')\n"
                      "box.run(ExecRequest(code='import time\\ntime.sleep(10_000)', limits=Limits(wall_s=1)))\n")
    proc = subprocess.Popen([os.sys.executable, str(script)])
    deadline = time.monotonic() + 20
    while not sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(), "the run never started"
    proc.kill()
    proc.wait()
    assert wait_clean(timeout=12) == [], "the program outlived its wall limit after the caller died"


def test_python_installed_under_tmp_works(tmp_path_factory):
    """A virtualenv (a copied interpreter) under /tmp — the sandbox's own /tmp — still runs,
    whether the tests run in a virtualenv or with the machine's own interpreter: the child's
    site-packages point at *this* interpreter's (a ``.pth`` calling ``site.addsitedir``, which
    also runs their ``.pth`` files such as an editable install's finder);
    ``--system-site-packages`` would link the *base* interpreter's when run from inside a venv,
    and those lack our dependencies."""
    import site
    import sys

    from agentsd.sandbox.local import probe
    from agentsd.sandbox.runtime import SANDBOX_PYTHON

    if not probe().ok:
        pytest.skip(probe().reason)
    venv = tempfile_dir = f"/tmp/agentsd-venv-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", venv],
                       check=True, capture_output=True)
        py = os.path.join(venv, "bin", "python")
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        with open(os.path.join(venv, "lib", ver, "site-packages", "parent-site.pth"), "w") as f:
            for d in site.getsitepackages():
                f.write(f"import site; site.addsitedir({d!r})\n")
        code = ("from agentsd.sandbox.local import LocalSandbox\nfrom agentsd.sandbox import ExecRequest\n"
                "import sys\nwith LocalSandbox(slots=1) as b:\n"
                "    r = b.run(ExecRequest(code='import sys; print(sys.executable)'))\n"
                "    print(r.status.value, r.stdout.strip(), r.detail, b._runtime.host_python)\n")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        out = subprocess.run([py, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        # the sandbox runs the view built from the /tmp interpreter, at the neutral prefix
        assert out.stdout.split() == ["ok", SANDBOX_PYTHON, os.path.realpath(py)], out.stdout
    finally:
        shutil.rmtree(tempfile_dir, ignore_errors=True)


def _post(server, body, raw: bytes | None = None, headers=None):
    import httpx

    h = {"Authorization": "Bearer tok-12345678", **(headers or {})}
    if raw is not None:
        return httpx.post(server.url + "/run_code", content=raw, headers=h, timeout=60)
    return httpx.post(server.url + "/run_code", json=body, headers=h, timeout=60)


def test_server_answers_malformed_requests_with_422(server):
    base = {"code": "print(1)", "language": "python"}
    cases = [
        (None, b"[" * 20_000 + b"]" * 20_000),  # nesting beyond the JSON parser's recursion
        (None, b'{"code": "\xff\xfe", "language": "python"}'),  # invalid UTF-8
        (None, b'{"code": "print(1)", "language": "python", "run_timeout": Infinity}'),
        ({**base, "run_timeout": 5000}, None), ({**base, "run_timeout": 1e9}, None),
        ({**base, "run_timeout": -1}, None), ({**base, "agentsd": {"limits": {"processes": 2 ** 63}}}, None),
        ({**base, "files": []}, None), ({**base, "agentsd": {"cmd": "python"}}, None),
        ({**base, "files": {"a": "eA==", "a/b": "eA=="}}, None), ({**base, "files": {"x" * 300: ""}}, None),
        ({"code": "print(1)"}, None), ({**base, "language": "cobol"}, None),
        ({**base, "compile_timeout": "soon"}, None), ({**base, "args": "a b"}, None),
    ]
    for body, raw in cases:
        r = _post(server, body, raw)
        assert r.status_code == 422, (body if raw is None else raw[:60], r.status_code, r.text[:200])
        assert r.json()["message"] and r.json()["detail"]
    # the field path is named: in the message and in FastAPI's detail list
    r = _post(server, {**base, "agentsd": {"limits": {"processes": 2 ** 63}}})
    assert r.json()["message"].startswith("agentsd.limits: ") and "processes" in r.json()["message"]
    assert r.json()["detail"][0]["loc"] == ["body", "agentsd", "limits"]
    r = _post(server, {**base, "files": {"ok.txt": "eA==", "bad.txt": "not base64!"}})
    assert r.json()["detail"][0]["loc"] == ["body", "files", "bad.txt"], r.json()
    r = _post(server, {"code": "print(1)"})
    assert "language: Field required" in r.json()["message"]
    assert "python" in r.json()["message"]  # names the languages this machine has


def test_http_client_does_not_retry_422():
    from agentsd.sandbox.http_client import HttpSandbox
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.server import ServerConfig, serve_in_thread

    if not probe().ok:
        pytest.skip(probe().reason)
    seen = []

    class Fake:
        name = "fake"

        def run(self, req):
            seen.append(req)
            return ExecResult(Status.OK, exit_code=0)

        def close(self):
            pass

    srv = serve_in_thread(ServerConfig(concurrency=1), backend=Fake())
    try:
        box = HttpSandbox(srv.url, retries=3, backoff_s=0.01)
        box.body = lambda req: {"code": "x", "language": "python", "run_timeout": 5000}
        r = box.run(ExecRequest(code="print(1)"))
        assert r.status is Status.SANDBOX_ERROR and "HTTP 422" in r.detail and seen == []
    finally:
        srv.stop()


def test_server_clamps_limits_and_keeps_them(server):
    body = {"code": "print(1)", "language": "python",
            "agentsd": {"limits": {"file_mb": 10 ** 6, "processes": 10_000, "wall_s": 3000}}}
    r = _post(server, body)
    assert r.status_code == 200, r.text
    ag = r.json()["agentsd"]
    assert ag["status"] == "ok" and ag["limits"]["file_mb"] == 256 and ag["limits"]["wall_s"] == 120
    assert set(ag["clamped"]) == {"file_mb", "processes", "wall_s"}
    # the cgroups stayed on: 8 children of 80 MiB each exceed a 128 MiB budget
    r = _post(server, {"code": CHILDREN_BOMB, "language": "python",
                       "agentsd": {"limits": {"memory_mb": 128, "wall_s": 10, "file_mb": 16}}})
    assert r.json()["agentsd"]["status"] == "memory", r.json()["agentsd"]


def test_server_fusion_fetch_files_args_compile_timeout(server):
    import base64

    body = {"code": "import sys\nopen('res.txt', 'w').write(' '.join(sys.argv[1:]))\n", "language": "python",
            "compile_timeout": 5, "args": ["x", "y"], "fetch_files": ["res.txt"]}
    r = _post(server, body).json()
    assert r["status"] == "Success", r
    assert base64.b64decode(r["files"]["res.txt"]) == b"x y"


def test_server_times_out_slow_headers_and_bodies():
    from agentsd.sandbox.local import probe
    from agentsd.sandbox.server import ServerConfig, serve_in_thread

    if not probe().ok:
        pytest.skip(probe().reason)
    srv = serve_in_thread(ServerConfig(concurrency=1, header_timeout_s=0.5, body_timeout_s=0.5))
    try:
        host, port = srv.url.rsplit("/", 1)[1].split(":")
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        t0 = time.monotonic()
        assert s.recv(100) == b"" and time.monotonic() - t0 < 4  # closed by the server
        s.close()
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        assert b" 408 " in s.recv(1000)
        s.close()
    finally:
        srv.stop()
