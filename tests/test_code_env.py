"""The code env: grading is a pure function over a real sandbox; the gold solution scores full
marks; privileged views stay out of observations; garbage never starts the sandbox."""

from __future__ import annotations

import json

import numpy as np
import pytest

import agentsd
from agentsd.envs.code import (
    TEMPLATES,
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    CodeEnv,
    defines,
    extract_code,
    generate_problem,
    grade,
    humaneval_problems,
    validate,
)


@pytest.fixture(scope="module")
def backend():
    from agentsd.sandbox.local import LocalSandbox, probe

    if not probe().ok:
        pytest.skip(f"local sandbox unavailable: {probe().reason}")
    box = LocalSandbox(slots=2)
    yield box
    box.close()


def _call(name: str, code: str) -> str:
    return f'<tool_call>{json.dumps({"name": name, "arguments": {"code": code}})}</tool_call>'


def test_grade_reports_each_test(backend):
    code = "def inc(x):\n    if x == 2:\n        raise ValueError('two')\n    return x + 1 if x else 5\n"
    tests = ("assert candidate(1) == 2", "assert candidate(0) == 1", "assert candidate(2) == 3")
    rep = grade(code, "inc", tests, backend=backend)
    assert rep.passed == [True, False, False]
    assert rep.errors[1].startswith("AssertionError") and "ValueError: two" in rep.errors[2]
    assert rep.pass_rate == pytest.approx(1 / 3) and not rep.all_passed


def test_grade_per_test_timeout(backend):
    code = "def f(x):\n    while x == 1:\n        pass\n    return x\n"
    rep = grade(code, "f", ("assert candidate(1) == 1", "assert candidate(2) == 2"), backend=backend,
                per_test_s=1)
    assert rep.passed == [False, True]
    assert "TimeoutError" in rep.errors[0]


def test_grade_crash_and_exit_fail_every_test(backend):
    rep = grade("import os\nos._exit(0)\n", "f", ("assert candidate(1)",) * 3, backend=backend)
    assert rep.passed == [False] * 3 and "ended its own process" in rep.errors[0]


@pytest.mark.parametrize("seed", range(12))
def test_generated_problems_are_deterministic_and_split(seed):
    a = generate_problem(np.random.default_rng(seed))
    b = generate_problem(np.random.default_rng(seed))
    assert a == b
    assert len(a.visible_tests) == 3 and len(a.hidden_tests) >= 10
    names = {TEMPLATES[i].signature.split("(")[0] for i in TEST_TEMPLATES}
    assert a.entry_point not in names  # train templates by default
    assert generate_problem(np.random.default_rng(seed), TEST_TEMPLATES).entry_point in names
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)


def test_gold_solutions_score_full_marks_generated(backend):
    env = CodeEnv("generated", subset="all")
    assert validate(env, list(range(24))) == []


def test_humaneval_split_and_views():
    probs = humaneval_problems()
    assert len(probs) == 164
    train, test = CodeEnv("humaneval", subset="train"), CodeEnv("humaneval", subset="test")
    assert len(train._pool) + len(test._pool) == 164
    assert not {p.task_id for p in train._pool} & {p.task_id for p in test._pool}
    seeds = agentsd.split_seeds("Code-HumanEval-v0", "test", 41)
    env = agentsd.make("Code-HumanEval-v0", split="test")
    seen = set()
    for s in seeds:
        env.reset(seed=s)
        seen.add(env.unwrapped.task_id)
    assert seen == {p.task_id for p in test._pool}  # 41 consecutive test seeds cover the subset


@pytest.mark.slow
def test_gold_solutions_score_full_marks_humaneval_all(backend):
    env = CodeEnv("humaneval")
    assert validate(env, list(range(164))) == []


def test_episode_run_tests_then_submit(backend):
    env = agentsd.make("Code-Gen-v0", seed=5)
    obs, info = env.reset()
    base = env.unwrapped
    p = base.problem
    assert p.prompt in obs[1]["content"]
    wrong = f"def {p.entry_point}(*args):\n    return None\n"
    obs, r, term, trunc, info = env.step(_call("run_tests", wrong))
    assert r == 0.0 and not term and info["tests"] == "visible"
    assert info["tests_total"] == 3 and info["tests_passed"] == 0
    assert "FAIL" in obs[0]["content"]
    obs, r, term, trunc, info = env.step(_call("run_tests", p.solution))
    assert info["tests_passed"] == 3 and "3/3 visible tests passed" in obs[0]["content"]
    obs, r, term, trunc, info = env.step("<answer>```python\n" + p.solution + "```</answer>")
    assert term and r == 1.0 and info["success"] and info["reward_terms"] == {"pass_rate": 1.0}
    assert info["tests_total"] == len(p.hidden_tests)


def test_partial_credit_is_the_hidden_pass_rate(backend):
    env = CodeEnv("humaneval")
    env.reset(seed=0)  # has_close_elements
    code = "def has_close_elements(numbers, threshold):\n    return False\n"
    _, r, term, _, info = env.step(_call("submit", code))
    assert term and 0 < r < 1 and not info["success"]
    assert r == pytest.approx(info["tests_passed"] / info["tests_total"])


def test_garbage_and_uncompilable_code_never_start_the_sandbox(monkeypatch):
    import agentsd.envs.code as mod

    def boom(*a, **k):
        raise AssertionError("the sandbox must not run for this action")

    monkeypatch.setattr(mod, "grade", boom)
    env = CodeEnv("generated")
    env.reset(seed=1)
    for a in ["hello", _call("run_tests", "def f(:"), _call("run_tests", "x = 1"),
              _call("nope", "x"), "<answer></answer>", None, 7]:
        obs, r, term, trunc, info = env.step(a)
        assert isinstance(obs[0]["content"], str)
        if term:
            env.reset(seed=1)


def test_privileged_views_never_in_observations(backend):
    env = agentsd.make("Code-Gen-v0", seed=2)
    obs, _ = env.reset()
    texts = [m["content"] for m in obs]
    p = env.unwrapped.privileged()
    assert p.solution and p.hidden_tests and p.notes
    o, *_ = env.step(_call("run_tests", "def f():\n    pass\n"))
    texts += [m["content"] for m in o]
    for secret in p.secrets():
        assert all(secret not in t for t in texts)


def test_helpers():
    assert extract_code("text\n```python\nx = 1\n```\nmore") == "x = 1"
    assert extract_code("def f(): pass") == "def f(): pass"
    assert defines("def f(): pass", "f") and not defines("def g(): pass", "f")
    assert defines("exec('def f(): 1')", "f")  # unclear means "maybe": the sandbox decides
    with pytest.raises(ValueError, match="problems"):
        CodeEnv("leetcode")


# ---------------------------------------------------------------------------------------------
# reward forgery (issue 13): hidden tests never run in the candidate's process

#: a stub that finds the grading harness in its own process and prints a results line claiming
#: every test passed, then exits (scored 1.0 when the tests ran in the candidate's process)
FORGE_RESULTS = '''
import sys, json, os
def _forge(*a, **k):
    m = sys.modules.get("__main__")
    nonce, spec = getattr(m, "_nonce", None), getattr(m, "_spec", None)
    if nonce and spec:
        rows = [[flag, True, ""] for _, flag in spec["steps"]]
        sys.__stdout__.write("\\n" + nonce + json.dumps(rows) + "\\n")
        sys.__stdout__.flush()
    os._exit(0)
'''

ATTACKS = {
    "printed_results_line": FORGE_RESULTS + "{entry} = _forge\n",
    "rigged_eq": ("class _Any:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
                  "    def __hash__(self): return 0\n    def __bool__(self): return True\n"
                  "def {entry}(*a, **k):\n    return _Any()\n"),
    "sys_exit_at_load": "import sys\nsys.exit(0)\ndef {entry}(*a, **k): pass\n",
    "sys_exit_in_call": "import sys\ndef {entry}(*a, **k):\n    sys.exit(0)\n",
    "patched_builtins": ("import builtins\nbuiltins.AssertionError = type('N', (Exception,), {{}})\n"
                         "class _T:\n    def __eq__(s, o): return True\nbuiltins.isinstance = lambda *a: True\n"
                         "def {entry}(*a, **k):\n    return _T()\n"),
    "exit_code_zero_at_exit": ("import atexit, os\natexit.register(lambda: os._exit(0))\n"
                               "def {entry}(*a, **k):\n    raise SystemExit(0)\n"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_forged_submissions_score_zero_on_generated_problems(backend, attack):
    env = CodeEnv("generated", subset="all")
    for seed in range(12):
        env.reset(seed=seed)
        code = ATTACKS[attack].format(entry=env.problem.entry_point)
        _, reward, term, _, info = env.step(_call("submit", code))
        assert term and reward == 0.0 and not info["success"], (attack, env.task_id, info)


@pytest.mark.parametrize("attack", ["printed_results_line", "rigged_eq", "patched_builtins"])
def test_forged_submissions_score_zero_on_humaneval(backend, attack):
    env = CodeEnv("humaneval")
    for seed in range(7):
        env.reset(seed=seed)
        code = env.problem.prompt + "    pass\n" + ATTACKS[attack].format(entry=env.problem.entry_point)
        _, reward, _, _, info = env.step(_call("submit", code))
        assert reward == 0.0, (attack, env.task_id, info)


def test_hidden_tests_and_expected_values_are_not_in_the_candidates_process(backend):
    """Everything readable in the candidate's process (stdin, modules, every live object) holds
    the arguments at most: no test source, no expected value."""
    env = CodeEnv("generated", subset="all")
    env.reset(seed=3)
    p = env.problem
    spy = ("import gc, sys, json\n_seen = []\n"
           f"def {p.entry_point}(*a, **k):\n"
           "    if not _seen:\n"
           "        _seen.append(1)\n"
           "        strs = [o for o in gc.get_objects() if isinstance(o, (str, dict, list))]\n"
           "        print(json.dumps([repr(o)[:400] for o in strs if 'assert' in repr(o) or 'candidate' in repr(o)]))\n"
           "        print(repr(sys.modules.get('__main__').__dict__)[:20000])\n"
           "    return None\n")
    rep = grade(spy, p.entry_point, p.hidden_tests, flags=p.test_flags, reference=p.solution, backend=backend)
    assert not rep.all_passed
    for t in p.hidden_tests:
        assert t not in rep.stdout
        expected = t.rsplit("==", 1)[1].strip()
        assert f"== {expected}" not in rep.stdout


def test_grader_keeps_humaneval_semantics_for_helpers_and_randomized_tests(backend):
    """HumanEval/38 (random inputs, a helper from the prompt): the canonical solution passes in
    one sandbox run; a submission redefining the prompt's helper to the identity does not."""
    env = CodeEnv("humaneval")
    env.reset(seed=38)
    p = env.problem
    rep = grade(p.solution, p.entry_point, p.hidden_tests, setup=p.setup, flags=p.test_flags,
                reference=p.solution, backend=backend)
    assert rep.all_passed and rep.rounds == 1, rep
    cheat = "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"
    rep = grade(cheat, p.entry_point, p.hidden_tests, setup=p.setup, flags=p.test_flags,
                reference=p.solution, backend=backend)
    assert not rep.all_passed


def test_adaptive_tests_get_another_round(backend):
    rep = grade("def f(x):\n    return x * 2\n", "f", ("y = candidate(3)\nassert candidate(y) == 12",),
                backend=backend)
    assert rep.passed == [True] and rep.rounds == 2


def test_codec_round_trips_plain_values_and_refuses_objects():
    from agentsd.sandbox._grade_harness import decode, encode

    vals = [None, True, 0, -(2 ** 80), 1.5, float("inf"), "s\udcff", b"\x00", (1, [2, {3: (4,)}]),
            {frozenset({1}), 2}, 1 + 2j, {"a": [None]}]
    for v in vals:
        back = decode(json.loads(json.dumps(encode(v))))
        assert back == v and type(back) is type(v)
    with pytest.raises(TypeError):
        encode(object())
    for bad in (["int"], ["eval", "1"], {"a": 1}, ["list", [["tuple", 5]]], ["float", "1e400"]):
        with pytest.raises(ValueError):
            decode(bad)
