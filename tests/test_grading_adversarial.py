"""Issue 23, the grader: it never raises and cannot be spoken for. Each hostile submission of the
audit has its own test: a report forged from a calling frame (wrong-shape rows), a forged report
written to the harness's own stdout, hash-colliding outcomes, a function that ignores
``SIGALRM``; and the report parser on its own, over every wrong shape."""

from __future__ import annotations

import json
import time

import pytest

from agentsd.sandbox.grading import grade


@pytest.fixture(scope="module")
def backend():
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(f"local sandbox unavailable: {probe().reason}")
    box = LocalSandbox(slots=2)
    yield box
    box.close()


TESTS = tuple(f"assert candidate({i}) == {i + 1}" for i in range(4))

#: finds the harness's spec (and its secret marker, where there is one) in a calling frame,
#: prints a results line whose rows are numbers and objects, and exits
FRAME_FORGERY = r'''
import json, os, sys
def inc(x):
    return None
spec, fr = None, sys._getframe()
while fr is not None:
    for v in list(fr.f_locals.values()) + list(fr.f_globals.values()):
        if isinstance(v, dict) and "groups" in v:
            spec = v
    fr = fr.f_back
if spec is not None:
    rows = [[5 if i % 2 else {"a": 1} for _ in g] for i, g in enumerate(spec["groups"])]
    rep = {"protocol": 2, "load_error": None, "results": rows, "stdout": ""}
    sys.stdout.write("\n" + spec.get("nonce", "") + json.dumps(rep) + "\n")
    sys.stdout.flush()
    os._exit(0)
'''

#: writes a well-formed all-pass report to the harness's real stdout, then kills the harness
FD_FORGERY = r'''
import json, os, signal, sys
def inc(x):
    return None
spec, fr = None, sys._getframe()
while fr is not None:
    for v in list(fr.f_locals.values()):
        if isinstance(v, dict) and "groups" in v:
            spec = v
    fr = fr.f_back
rows = [[["ok", True] for _ in g] for g in (spec or {"groups": [[0]] * 4})["groups"]]
line = json.dumps({"protocol": 2, "load_error": None, "results": rows, "stdout": ""}) + "\n"
for target in ("/proc/%d/fd/1" % os.getppid(), "/proc/%d/mem" % os.getppid()):
    try:
        with open(target, "w") as f:
            f.write(line)
        print("WROTE", target)
    except OSError as e:
        print("denied", target, e.errno)
os.kill(os.getppid(), signal.SIGKILL)
'''


def test_frame_forgery_never_raises_and_fails(backend):
    rep = grade(FRAME_FORGERY, "inc", TESTS, backend=backend)  # raised TypeError before
    assert rep.passed == [False] * 4, rep
    assert all(rep.errors)


def test_forged_report_on_the_harness_stdout_is_impossible(backend):
    rep = grade(FD_FORGERY, "inc", TESTS, backend=backend)
    assert rep.passed == [False] * 4, rep
    assert "WROTE" not in rep.stdout


def test_wrong_shape_reports_score_zero_with_a_reason():
    from agentsd.sandbox.grading import parse_report

    sizes = [1, 2]
    good = {"protocol": 2, "load_error": None, "results": [[["ok", 1]], [["timeout"], ["raise", "E", "m"]]],
            "stdout": ""}
    assert parse_report(json.dumps(good), sizes)[0] == good
    bad = [
        "", "not json", "[]", "5", json.dumps({**good, "protocol": 1}),
        json.dumps({**good, "results": [[5], [{"a": 1}, 3]]}),
        json.dumps({**good, "results": [[["ok"]], [["timeout"], ["raise", 1, 2]]]}),
        json.dumps({**good, "results": [[["ok", 1]]]}), json.dumps({**good, "results": {"a": 1}}),
        json.dumps({**good, "stdout": 5}), json.dumps({**good, "load_error": 7}),
        "[" * 100_000 + "]" * 100_000, json.dumps(good) + "\n" + json.dumps(good),
    ]
    for text in bad:
        rep, why = parse_report(text, sizes)
        assert rep is None and why, text[:80]


def test_colliding_hashes_are_rejected_fast():
    from agentsd.sandbox._grade_harness import decode

    modulus = (1 << 61) - 1  # ints that are multiples of it all hash to 0
    forged = ["set", [["int", hex(i * modulus)] for i in range(1, 30_001)]]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="hash"):
        decode(forged)
    with pytest.raises(ValueError, match="hash"):
        decode(["dict", [[["int", hex(i * modulus)], 0] for i in range(1, 30_001)]])
    assert time.monotonic() - t0 < 2.0
    assert decode(["set", list(range(5000))]) == set(range(5000))  # ordinary sets still decode
    with pytest.raises(ValueError, match="items"):
        decode(["list", [["list", list(range(1000))]] * 1000])


def test_colliding_outcome_costs_the_host_little(backend):
    # building such a set in the sandbox is itself quadratic: forge its encoding instead
    code = ("import sys\nm = (1 << 61) - 1\n"
            "forged = ['set', [['int', hex(i * m)] for i in range(1, 20001)]]\n"
            "sys.modules['__main__'].encode = lambda v, depth=0: forged\n"
            "def inc(x):\n    return 0\n")
    t0 = time.monotonic()
    rep = grade(code, "inc", TESTS[:1], backend=backend)
    assert rep.passed == [False] and "hash" in rep.errors[0], rep
    assert time.monotonic() - t0 < 5.0


def test_ignoring_sigalrm_does_not_escape_the_per_test_budget(backend):
    code = ("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
            "def inc(x):\n    time.sleep(2)\n    return x + 1\n")
    t0 = time.monotonic()
    rep = grade(code, "inc", TESTS[:3], backend=backend, per_test_s=1, wall_s=30)
    assert rep.passed == [False] * 3, rep  # passed 3/3 before
    assert all("TimeoutError" in e for e in rep.errors)
    assert time.monotonic() - t0 < 15


def test_a_budget_kill_leaves_later_statements_a_fresh_process(backend):
    code = "def inc(x):\n    while x == 1:\n        pass\n    return x + 1\n"
    rep = grade(code, "inc", TESTS, backend=backend, per_test_s=1)
    assert rep.passed == [True, False, True, True], rep


def test_code_gen_step_survives_forgeries(backend, monkeypatch):
    import agentsd

    env = agentsd.make("Code-Gen-v0", seed=3)
    env.reset()
    entry = env.unwrapped.problem.entry_point
    for attack in (FRAME_FORGERY, FD_FORGERY):
        env.reset()
        code = attack.replace("def inc(", f"def {entry}(")
        call = json.dumps({"name": "submit", "arguments": {"code": code}})
        _, reward, term, _, info = env.step(f"<tool_call>{call}</tool_call>")
        assert term and reward == 0.0 and not info["success"]
