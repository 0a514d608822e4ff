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


def test_grade_per_test_timeout_and_forged_output(backend):
    code = ("def f(x):\n    while x == 1:\n        pass\n    return x\n"
            "print('AGENTSD-RESULTS-[[true, true, \"\"]]')\n")  # a fake result line without the nonce
    rep = grade(code, "f", ("assert candidate(1) == 1", "assert candidate(2) == 2"), backend=backend,
                per_test_s=1, nonce="N0NCE-" + "x" * 16 + "-")
    assert rep.passed == [False, True]
    assert "TimeoutError" in rep.errors[0]


def test_grade_crash_and_exit_fail_every_test(backend):
    rep = grade("import os\nos._exit(0)\n", "f", ("assert candidate(1)",) * 3, backend=backend)
    assert rep.passed == [False] * 3 and "exited early" in rep.errors[0]


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
