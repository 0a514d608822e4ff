"""State-based grading: compare the world before and after, check the answer, catch collateral damage.

A task's :class:`Expectation` lists the changes it requires (records added, removed, changed)
and the answer it wants. :func:`grade` turns it into checks against the real diff of the two
worlds and lists collateral damage (any record added, removed or modified that no expectation
accounts for). Partial credit is ``passed / total`` checks, halved by collateral damage; the task
passes only when every check passes and nothing else changed. Pure functions of data::

    >>> from agentsd.envs.toolworld.grader import Expectation, answers_match
    >>> answers_match("$1,204.50", 1204.5, "number"), answers_match("bob  SMITH", "Bob Smith", "text")
    (True, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agentsd.envs.toolworld.world import TABLES, World, diff_worlds

__all__ = ["AllOf", "Lines", "Contains", "SetEq", "Includes", "Approx", "Added", "Removed", "Changed", "Expectation",
           "Check", "Grade", "grade", "answers_match", "matches"]


# ---- matchers for record fields (plain values mean "equal", strings case-insensitively) -------

@dataclass(frozen=True)
class Contains:
    """The field (a string) contains ``text``, case-insensitively."""

    text: str


@dataclass(frozen=True)
class SetEq:
    """The field (a list) holds exactly these values, in any order (strings case-insensitive)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Includes:
    """The field (a list) holds at least these values."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Approx:
    """The field is a number within ``tol`` of ``value``."""

    value: float
    tol: float = 0.5  # cents, for money stored in cents


@dataclass(frozen=True)
class AllOf:
    """Every matcher in ``parts`` holds."""

    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Lines:
    """The field is a list of order lines with exactly these ``(product_id, quantity)`` pairs."""

    pairs: tuple[tuple[int, int], ...]


def _norm(v: Any) -> Any:
    return " ".join(v.split()).casefold() if isinstance(v, str) else v


def matches(actual: Any, want: Any) -> bool:
    """Does a record field match an expectation value or matcher?"""
    if isinstance(want, AllOf):
        return all(matches(actual, p) for p in want.parts)
    if isinstance(want, Lines):
        return isinstance(actual, list) and sorted(
            (i.get("product_id"), i.get("quantity")) for i in actual if isinstance(i, dict)) == sorted(want.pairs)
    if isinstance(want, Contains):
        return isinstance(actual, str) and _norm(want.text) in _norm(actual)
    if isinstance(want, SetEq | Includes):
        if not isinstance(actual, list):
            return False
        got = {_norm(x) for x in actual}
        need = {_norm(x) for x in want.values}
        return got == need if isinstance(want, SetEq) else need <= got
    if isinstance(want, Approx):
        return isinstance(actual, int | float) and abs(actual - want.value) <= want.tol
    return _norm(actual) == _norm(want)


# ---- expectations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Added:
    """A new record in ``table`` whose fields match ``where``."""

    table: str
    where: dict[str, Any]
    what: str


@dataclass(frozen=True)
class Removed:
    table: str
    key: Any
    what: str


@dataclass(frozen=True)
class Changed:
    """Record ``key`` of ``table`` now has these field values (other fields must not change)."""

    table: str
    key: Any
    fields: dict[str, Any]
    what: str


@dataclass
class Expectation:
    """What a correct run does. ``answer`` is ``None`` for tasks that need no answer;
    ``answer_kind`` is ``"number"``, ``"text"`` or ``"list"``. ``may_change`` names tables whose
    incidental changes are harmless (for example the stock of products a task buys)."""

    answer: Any = None
    answer_kind: str = "text"
    added: list[Added] = field(default_factory=list)
    removed: list[Removed] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    may_change: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Grade:
    """All checks of one episode. ``collateral`` lists unexpected changes (collateral damage).
    ``partial`` = passed / total task checks, halved when there is collateral damage; the task
    succeeds only when every check passes and nothing else changed."""

    checks: list[Check]
    collateral: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def partial(self) -> float:
        frac = self.passed / len(self.checks) if self.checks else 1.0
        return frac * (0.5 if self.collateral else 1.0)

    @property
    def success(self) -> bool:
        return all(c.passed for c in self.checks) and not self.collateral

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "partial": round(self.partial, 4),
                "checks_passed": self.passed, "checks_total": len(self.checks),
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
                "collateral_damage": list(self.collateral)}


_NUM_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def answers_match(got: Any, want: Any, kind: str) -> bool:
    """Compare an agent's answer to the expected one. Numbers: the first number in the answer,
    within 0.01 (``$1,204.50`` matches ``1204.5``). Text: equal up to case, spacing and a final
    period. Lists: the same set of comma/newline-separated items."""
    if got is None:
        return False
    text = str(got).strip()
    if kind == "number":
        m = _NUM_RE.search(text)
        if not m:
            return False
        try:
            return abs(float(m.group().replace(",", "")) - float(want)) < 0.01 + 1e-9
        except ValueError:
            return False
    if kind == "list":
        items = {_norm(x).strip(" .") for x in re.split(r"[,\n;]+", text) if x.strip(" .")}
        return items == {_norm(str(x)) for x in want}
    return _norm(text).rstrip(".").strip("'\"") == _norm(str(want))


def grade(before: World, after: World, exp: Expectation, answer: Any) -> Grade:
    """Grade one episode: one check per expected change and per answer; every change no
    expectation accounts for is collateral damage."""
    d = diff_worlds(before, after)
    checks: list[Check] = []
    if exp.answer is not None:
        ok = answers_match(answer, exp.answer, exp.answer_kind)
        checks.append(Check("answer", ok, f"got {str(answer)[:80]!r}" if not ok else ""))
    accounted: set[tuple[str, Any]] = set()
    for a in exp.added:
        hit = next((k for k in d.added[a.table] if (a.table, k) not in accounted
                    and all(matches(after.tables[a.table][k].get(f), v) for f, v in a.where.items())), None)
        if hit is not None:
            accounted.add((a.table, hit))
        checks.append(Check(a.what, hit is not None, "" if hit is not None else f"no new {a.table} record matches"))
    for r in exp.removed:
        ok = r.key not in after.tables[r.table]
        accounted.add((r.table, r.key))
        checks.append(Check(r.what, ok, "" if ok else "still there"))
    for c in exp.changed:
        rec = after.tables[c.table].get(c.key)
        bad = [f for f, v in c.fields.items() if rec is None or not matches(rec.get(f), v)]
        accounted.add((c.table, c.key))
        checks.append(Check(c.what, not bad, f"wrong {', '.join(bad)}" if bad else ""))
    collateral = [f"changed {c.table}[{c.key!r}].{f}" for c in exp.changed
                  for f in d.changed[c.table].get(c.key, []) if f not in c.fields]
    for t in TABLES:
        if t in exp.may_change:
            continue
        collateral += [f"added {t}[{k!r}]" for k in d.added[t] if (t, k) not in accounted]
        collateral += [f"removed {t}[{k!r}]" for k in d.removed[t] if (t, k) not in accounted]
        collateral += [f"changed {t}[{k!r}]" for k in d.changed[t] if (t, k) not in accounted]
    return Grade(checks, collateral)
