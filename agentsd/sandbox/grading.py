"""Grading that the graded code cannot forge: hidden tests run on the host, the candidate's function
runs in the sandbox, and only plain data crosses between them.

    >>> rep = grade("def inc(x):\\n    return x + 1\\n", "inc",
    ...             ("assert candidate(1) == 2", "assert candidate(0) == 0"),
    ...             backend=box)                                             # doctest: +SKIP
    >>> rep.passed                                                           # doctest: +SKIP
    [True, False]

How a grading goes (:func:`grade`):

1. **Inputs, on the host.** Each test statement runs against a recording stand-in for
   ``candidate`` that answers with the trusted ``reference`` (or ``None``, asserts switched off,
   when there is none), so the grader learns every argument tuple the tests will pass. Cached per
   test set.
2. **Outputs, in the sandbox.** One run loads the candidate's code in a process of its own and
   calls its entry point on those arguments (:mod:`agentsd.sandbox._grade_harness`); a harness
   process that runs no candidate code enforces one ``per_test_s`` budget per test statement
   from outside (SIGKILL), and alone writes the report — outcomes in a tagged JSON codec that
   decodes only to built-in types — on a stdout the candidate never holds. The host accepts
   only a report of exactly that shape (:func:`parse_report`); anything else fails every test
   with the reason.
3. **Verdicts, on the host.** Each statement runs again, now with ``candidate`` answering from
   those outcomes (a recorded exception is re-raised, a timeout raises ``TimeoutError``). A call
   the first pass did not foresee (arguments that depend on the candidate's earlier answers) is
   sent to the sandbox in another round (at most ``max_rounds``).

Statements run with a private, per-statement seeded ``random`` module (``import random`` in a test
gets it), so both host passes draw the same inputs and the process's own ``random`` is untouched,
and with a line-trace deadline of ``per_test_s`` each.

What this defends against: anything the candidate does in its own process — printing a forged
report (its stdout is a pipe the harness reads as data), ``sys.exit``/``os._exit``, ignoring
``SIGALRM``, monkeypatching builtins or the harness, returning objects with a rigged
``__eq__``/``__hash__``/``__repr__``, sending malformed or hash-colliding outcomes (bounded
decoding, see :func:`~agentsd.sandbox._grade_harness.decode`), reading the tests (they are not
there; only the arguments are) — changes at most the outputs it reports for its own calls, or
fails its tests. It does **not**
defend against: a candidate that computes the right answers (that is solving the task); state
kept between calls within one run (calls share one process, as in HumanEval, until a budget
runs out: the next statement then gets a fresh process); tests that check
that the candidate mutated an argument in place (mutations do not travel back); outputs that are
not plain data (a generator, a custom class) — they fail. The test code and the reference are
trusted and run on the host; a test that feeds a candidate's output to a builtin that does C-level
work of that size (``range(n)`` consumed by ``sum``, ``"x" * n``) is not interrupted by the
deadline, which only sees Python lines.
"""

from __future__ import annotations

import ast
import builtins
import collections
import copy
import hashlib
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

from agentsd.sandbox._grade_harness import PROTOCOL, decode, encode, valid_row

__all__ = ["TestReport", "grade", "split_check", "parse_report", "HARNESS_SOURCE"]

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_grade_harness.py")) as _f:
    HARNESS_SOURCE = _f.read()

_TEST_FILE = "<hidden test>"


@dataclass
class TestReport:
    """Per-test outcomes of one grading. ``passed``/``errors`` cover test statements only
    (setup statements are not counted); ``status`` is the sandbox status of the (first) run;
    ``stdout`` what the candidate printed; ``rounds`` how many sandbox runs it took."""

    passed: list[bool]
    errors: list[str]
    status: str
    detail: str = ""
    stdout: str = ""
    rounds: int = 0
    statements_ok: list[bool] = field(default_factory=list)  # every statement, tests or not

    @property
    def pass_rate(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def all_passed(self) -> bool:
        return bool(self.passed) and all(self.passed)


class _NeedCall(BaseException):
    """A call whose outcome the host does not know yet (a BaseException: tests cannot catch it)."""


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a built-in one."""


def _key(args: tuple, kwargs: dict) -> tuple[str, list]:
    enc = [encode(tuple(args)), encode(dict(kwargs))]
    return json.dumps(enc, sort_keys=True), enc


class _Discover:
    """``candidate`` during the input pass: records each call, answers with the reference."""

    def __init__(self, reference: Any) -> None:
        self.reference, self.calls = reference, {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, enc = _key(args, kwargs)
        self.calls.setdefault(key, enc)
        if self.reference is None:
            return None
        return self.reference(*copy.deepcopy(args), **copy.deepcopy(kwargs))


class _Replay:
    """``candidate`` during the verdict pass: answers from the sandbox's outcomes."""

    def __init__(self, own: dict, shared: dict, per_test_s: float) -> None:
        self.own, self.shared, self.per_test_s = own, shared, per_test_s
        self.missing: dict[str, list] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, enc = _key(args, kwargs)
        row = self.own.get(key)
        if row is None:
            row = self.shared.get(key)
        if row is None:
            self.missing.setdefault(key, enc)
            raise _NeedCall()
        return _outcome(row, self.per_test_s)


def _outcome(row: list, per_test_s: float) -> Any:
    kind = row[0] if isinstance(row, list) and row else None
    if kind == "ok" and len(row) == 2:
        return decode(row[1])
    if kind == "timeout":
        raise TimeoutError(f"the test took longer than {per_test_s:g}s")
    if kind == "unserializable":
        raise TypeError(f"your function returned something that is not plain data ({str(row[1])[:120]})")
    if kind == "raise" and len(row) == 3:
        name, msg = str(row[1])[:100], str(row[2])[:300]
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception) and cls is not AssertionError:
            try:
                err = cls(msg)
            except Exception:  # noqa: BLE001 - a builtin with another signature
                err = CandidateError(f"{name}: {msg}")
        else:  # not a builtin, or something the test's own asserts could be confused with
            err = CandidateError(f"{name}: {msg}")
        err.from_candidate = True  # type: ignore[attr-defined]
        raise err
    raise ValueError(f"malformed outcome {str(row)[:80]}")


def _describe(e: BaseException) -> str:
    if getattr(e, "from_candidate", False):
        text = str(e) if isinstance(e, CandidateError) else f"{type(e).__name__}: {e}"
        return ("your code raised " + text)[:300]
    if isinstance(e, AssertionError):
        return "AssertionError: wrong result" + (f": {e}" if str(e) else "")
    return f"{type(e).__name__}: {e}"[:300]


# ---------------------------------------------------------------------------------------------
# host execution of trusted test code

def _private_builtins(rng: Any) -> dict:
    """Builtins whose ``import random`` yields a module bound to ``rng`` (thread-safe, seedable,
    and the process's global ``random`` state is never touched)."""
    import random as _random

    mod = types.ModuleType("random")
    mod.__dict__.update({k: v for k, v in vars(_random).items() if not k.startswith("__")})
    for name in dir(_random.Random):
        if not name.startswith("_") and callable(getattr(rng, name, None)):
            setattr(mod, name, getattr(rng, name))
    real_import = builtins.__import__

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "random" and level == 0:
            return mod
        return real_import(name, globals, locals, fromlist, level)

    b = dict(vars(builtins))
    b["__import__"] = _import
    return b


class _Deadline:
    """Raise ``TimeoutError`` in host test code (Python lines only) past ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> _Deadline:
        self.end = time.monotonic() + self.seconds
        self.prev = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(self.prev)

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename in (_TEST_FILE, "<reference>") else None

    def _local(self, frame, event, arg):
        if event == "line" and time.monotonic() > self.end:
            raise TimeoutError(f"the test took longer than {self.seconds:g}s on the grader")
        return self._local


def _neutralize_asserts(src: str) -> str:
    """The statement with every ``assert x`` turned into ``x`` (the input pass must not stop at
    a wrong stand-in answer)."""

    class T(ast.NodeTransformer):
        def visit_Assert(self, node: ast.Assert) -> ast.AST:
            return ast.copy_location(ast.Expr(self.visit(node.test)), node)

    return ast.unparse(ast.fix_missing_locations(T().visit(ast.parse(src))))


def _namespace(reference: str, setup: str, entry: str) -> tuple[dict, Any, str | None]:
    """A fresh test namespace: the reference (its helpers), the setup; the reference's entry
    point, and an error if the trusted part itself fails."""
    rng = __import__("random").Random(0)
    ns: dict[str, Any] = {"__builtins__": _private_builtins(rng), "__name__": "__grader__", "_rng": rng}
    try:
        if reference:
            exec(compile(reference, "<reference>", "exec"), ns)
        ref = ns.get(entry)
        if setup:
            exec(compile(setup, _TEST_FILE, "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - the problem itself is broken
        return ns, None, f"test setup failed: {_describe(e)}"
    return ns, ref, None


def _run_statement(ns: dict, i: int, src: str, proxy: Any, entry: str, per_test_s: float) -> BaseException | None:
    ns["candidate"] = ns[entry] = proxy
    ns["_rng"].seed(f"statement-{i}")
    try:
        with _Deadline(per_test_s):
            exec(compile(src, _TEST_FILE, "exec"), ns)
        return None
    except BaseException as e:  # noqa: BLE001 - the test's verdict (or _NeedCall)
        return e


_INPUTS: collections.OrderedDict[str, list[dict]] = collections.OrderedDict()
_INPUTS_LOCK = threading.Lock()


def _inputs(reference: str, setup: str, entry: str, tests: tuple[str, ...], per_test_s: float) -> list[dict]:
    """Per statement, the calls the tests make (key -> encoded call), found with the reference."""
    key = hashlib.sha256(json.dumps([reference, setup, entry, tests]).encode()).hexdigest()
    with _INPUTS_LOCK:
        if key in _INPUTS:
            _INPUTS.move_to_end(key)
            return _INPUTS[key]
    ns, ref, err = _namespace(reference, setup, entry)
    out = []
    for i, src in enumerate(tests):
        proxy = _Discover(ref if err is None else None)
        try:
            quiet = _neutralize_asserts(src)
        except SyntaxError:
            quiet = src
        _run_statement(ns, i, quiet, proxy, entry, per_test_s)
        out.append(proxy.calls)
    with _INPUTS_LOCK:
        _INPUTS[key] = out
        while len(_INPUTS) > 512:
            _INPUTS.popitem(last=False)
    return out


# ---------------------------------------------------------------------------------------------
# the sandbox side

def _sandbox_round(code: str, entry: str, groups: list[list], backend: Any, per_test_s: float,
                   wall_s: float, memory_mb: int) -> tuple[Any, dict | None, str, str]:
    """One run of the harness; returns (ExecResult, report or None, what the code printed, why
    the report was rejected)."""
    from agentsd.sandbox import ExecRequest, Limits

    spec = {"code": code, "entry": entry, "per_test_s": per_test_s, "groups": groups}
    req = ExecRequest(code=HARNESS_SOURCE, stdin=json.dumps(spec) + "\n",
                      limits=Limits(wall_s=wall_s, memory_mb=memory_mb, output_kb=1024))
    res = backend.run(req)
    report, why = parse_report(res.stdout, [len(g) for g in groups])
    user_out = report["stdout"] if report is not None else ""
    return res, report, user_out, why


#: the most bytes of harness output the host parses (the run's own output cap is 1 MiB)
MAX_REPORT_BYTES = 1024 * 1024


def parse_report(stdout: str, group_sizes: list[int]) -> tuple[dict | None, str]:
    """The harness's report from a run's stdout, or ``(None, why)`` when it is missing or has
    any other shape than the one the harness writes (see :mod:`agentsd.sandbox._grade_harness`).
    Never raises; bounded in size (:data:`MAX_REPORT_BYTES`) and depth."""
    if not stdout.strip():
        return None, "the grading harness wrote no report (it was killed or the run failed)"
    if len(stdout) > MAX_REPORT_BYTES:
        return None, f"the grading report is over {MAX_REPORT_BYTES // 1024} KiB"
    try:
        rep = json.loads(stdout)
    except (ValueError, RecursionError):
        return None, "the grading report is not one JSON object"
    if not isinstance(rep, dict) or rep.get("protocol") != PROTOCOL:
        return None, "the grading report has the wrong shape"
    load_error, results, out = rep.get("load_error"), rep.get("results"), rep.get("stdout")
    if not isinstance(out, str) or not isinstance(results, list) or not (
            load_error is None or isinstance(load_error, str)):
        return None, "the grading report has the wrong shape"
    want = [] if load_error else group_sizes
    if len(results) != len(want) or not all(
            isinstance(rows, list) and len(rows) == n and all(valid_row(r) for r in rows)
            for rows, n in zip(results, want)):
        return None, "the grading report's outcomes do not match the calls sent"
    return rep, ""


def grade(code: str, entry: str, tests: tuple[str, ...], *, setup: str = "",
          flags: tuple[bool, ...] | None = None, reference: str = "", backend: Any,
          per_test_s: float = 3, wall_s: float = 20.0, memory_mb: int = 512,
          max_rounds: int = 3) -> TestReport:
    """Grade ``code`` (defining ``entry``) on ``tests`` (statement sources calling ``candidate``)
    without running any test in the candidate's process (see the module docstring). ``setup``
    and ``reference`` (trusted code defining the helpers the tests use and a correct ``entry``)
    run on the host. Never raises: infrastructure failures come back as
    ``status="sandbox_error"`` with every test failed, a malformed or missing report as the
    run's status with every test failed and the reason in ``errors``, and a failure of the
    grader itself as ``status="grader_error"``."""
    tests = tuple(tests)
    flags = tuple(flags) if flags is not None else (True,) * len(tests)
    try:
        return _grade(code, entry, tests, setup, flags, reference, backend, per_test_s, wall_s,
                      memory_mb, max_rounds)
    except Exception as e:  # noqa: BLE001 - a backstop: grading never raises
        why = f"the grader failed: {type(e).__name__}: {e}"[:300]
        n = sum(bool(f) for f in flags)
        return TestReport([False] * n, [why] * n, "grader_error", why, "", 0, [False] * len(tests))


def _grade(code, entry, tests, setup, flags, reference, backend, per_test_s, wall_s, memory_mb,
           max_rounds) -> TestReport:
    n_tests = sum(flags)
    calls = _inputs(reference, setup, entry, tests, per_test_s)
    own: list[dict] = [{} for _ in tests]
    shared: dict[str, list] = {}
    needed = [dict(c) for c in calls]
    first = None
    verdicts: list[BaseException | None | str] = []
    for rounds in range(1, max_rounds + 1):
        if any(needed) or first is None:  # at least one run: whether the code loads is news
            order = [list(n.items()) for n in needed]
            res, report, user_out, why = _sandbox_round(
                code, entry, [[enc for _, enc in g] for g in order], backend, per_test_s, wall_s,
                memory_mb)
            if first is None:
                first = (res, user_out)
            if report is None:
                return _failed(res, user_out, n_tests, len(tests), rounds, why)
            if report.get("load_error"):
                err = str(report["load_error"])[:300]
                return TestReport([False] * n_tests, [err] * n_tests, first[0].status.value,
                                  first[0].detail, first[1], rounds, [False] * len(tests))
            for i, (group, rows) in enumerate(zip(order, report["results"])):
                for (key, _), row in zip(group, rows):
                    own[i][key] = row
                    if row[0] in ("ok", "raise"):
                        shared.setdefault(key, row)
        ns, _, err = _namespace(reference, setup, entry)
        if err is not None:
            return TestReport([False] * n_tests, [err] * n_tests, "not_run", err, "", rounds - 1,
                              [False] * len(tests))
        verdicts, needed = [], []
        for i, src in enumerate(tests):
            proxy = _Replay(own[i], shared, per_test_s)
            verdicts.append(_run_statement(ns, i, src, proxy, entry, per_test_s))
            needed.append(proxy.missing)
        if not any(needed):
            break
    status, detail, stdout = first[0].status.value, first[0].detail, first[1]
    ok = [v is None for v in verdicts]
    errors = ["" if v is None else
              "the test's inputs depend on your earlier answers beyond what the grader resolves"
              if isinstance(v, _NeedCall) else _describe(v) for v in verdicts]
    return TestReport([o for o, f in zip(ok, flags) if f], [e for e, f in zip(errors, flags) if f],
                      status, detail, stdout, rounds, ok)


def split_check(test: str, entry: str = "check") -> tuple[str, tuple[str, ...], tuple[bool, ...]]:
    """A HumanEval-style test module (``def check(candidate): ...`` plus module-level code) as
    ``(setup, statements, is_test flags)``: the module-level code, each statement of ``check``'s
    body (with its parameter bound to ``candidate`` when it has another name), and whether the
    statement asserts anything. ``ValueError`` when there is no ``check``."""
    tree = ast.parse(test)
    setup, steps, flags, found = [], [], [], False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            found = True
            params = [a.arg for a in node.args.args]
            alias = f"{params[0]} = candidate\n" if params and params[0] != "candidate" else ""
            for st in node.body:
                steps.append(alias + ast.unparse(st))
                flags.append(any(isinstance(n, ast.Assert) for n in ast.walk(st)))
        else:
            setup.append(ast.unparse(node))
    if not found:
        raise ValueError(f"the test defines no {entry}() function")
    return "\n".join(setup), tuple(steps), tuple(flags)


def _failed(res: Any, user_out: str, n_tests: int, n_statements: int, rounds: int,
            why: str = "") -> TestReport:
    """Every test failed because the run gave no usable report; the error says why."""
    if res.status.value == "ok":
        err = f"no usable grading report: {why}"
    else:
        what = {"timeout": "the run hit the time limit", "memory": "the run hit the memory limit",
                "output_limit": "the run printed too much output",
                "sandbox_error": "the sandbox failed"}.get(res.status.value, "the program exited early")
        err = f"{what}: {res.detail or res.stderr[-300:].strip()}".strip().rstrip(":")
    return TestReport([False] * n_tests, [err[:300]] * n_tests, res.status.value, res.detail or why,
                      user_out, rounds, [False] * n_statements)
