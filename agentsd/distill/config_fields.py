"""The pieces every config dataclass is written with: a field with ``--help`` text and a declared
range, and the one function that checks the declarations.

A field says what its value must be where it is declared; ``check_fields`` (called first in
``__post_init__``) raises one line naming the class, the field and the allowed range::

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     steps: int = _f(4, "steps to run", kind=int, ge=1)
    ...     rate: float = _f(0.5, "share kept", ge=0, lt=1)
    ...     def __post_init__(self) -> None:
    ...         check_fields(self)
    >>> Demo(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: Demo.steps must be a positive int, got 0
    >>> Demo(rate=1.0)
    Traceback (most recent call last):
    ...
    ValueError: Demo.rate must be in [0, 1), got 1.0

Checks that relate two fields (or reach outside the config: the env, the machine) stay code in
``__post_init__``, written with :func:`_check` in the same one-line style.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Range", "_f", "check_fields", "field_range", "help_with_range", "_check"]

_KINDS = (int, float, str, bool)


def _num(x: Any) -> str:
    """``1`` for 1.0, ``0.5`` for 0.5: bounds read as they are written."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


@dataclass(frozen=True)
class Range:
    """What one field's value must be. ``kind`` is ``int`` (not a bool), ``float`` (any finite
    number), ``str`` or ``bool``; a bound without a kind means ``float``. ``off`` is one value
    allowed outside the bounds that switches the feature off (``is_clip``: 0 or >= 1);
    ``optional`` allows ``None``; ``note`` follows the requirement in the error (what the
    special values mean)."""

    kind: type | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False
    off: Any = None
    optional: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        kind = self.kind
        if kind is None and any(b is not None for b in self._bounds()):
            kind = float
        if kind is None and self.nonempty:
            kind = str
        if kind is not None and kind not in _KINDS:
            raise TypeError(f"Range.kind must be one of int, float, str, bool, got {kind!r}")
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise TypeError("Range: give at most one lower bound (ge, gt) and one upper (le, lt)")
        object.__setattr__(self, "kind", kind)
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    def _bounds(self) -> tuple[float | None, ...]:
        return self.ge, self.gt, self.le, self.lt

    def ok(self, v: Any) -> bool:
        """Whether ``v`` meets the declaration."""
        if v is None and self.optional:
            return True
        if self.off is not None and v == self.off and type(v) is not bool:
            return True
        if self.kind is int and not (isinstance(v, int) and not isinstance(v, bool)):
            return False
        if self.kind is float and not (isinstance(v, int | float) and not isinstance(v, bool)
                                       and math.isfinite(v)):
            return False
        if self.kind is str and not isinstance(v, str):
            return False
        if self.kind is bool and not isinstance(v, bool):
            return False
        if self.nonempty and not (isinstance(v, str) and v.strip()):
            return False
        if self.choices is not None and v not in self.choices:
            return False
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def interval(self) -> str:
        """The bounds alone: ``>= 1``, ``> 0``, ``in [0, 1)``; ``''`` without bounds."""
        lo = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        hi = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if lo and hi:
            return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
        if lo:
            return f"{'>=' if lo[0] == '[' else '>'} {_num(lo[1])}"
        if hi:
            return f"{'<=' if hi[0] == ']' else '<'} {_num(hi[1])}"
        return ""

    def describe(self) -> str:
        """The requirement as the error says it: ``a positive int``, ``an int >= 0``, ``a
        finite number >= 0``, ``in [0, 1]``, ``one of 'token', 'sequence'``."""
        iv = self.interval()
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind is int:
            text = ("a positive int" if iv == ">= 1" else f"an int {iv}" if iv else "an int")
        elif self.kind is float:
            two_sided = iv.startswith("in ")
            text = iv if two_sided else f"a finite number {iv}" if iv else "a finite number"
        elif self.kind is str:
            text = "a non-empty str" if self.nonempty else "a str"
        elif self.kind is bool:
            text = "a bool (true or false)"
        else:
            text = "set"
        if self.off is not None:
            text = f"{self.off!r} (off) or {text}"
        if self.optional:
            text += " or None"
        return text

    def short(self) -> str:
        """What ``--help`` appends to the field's text: the bounds (``>= 1``, ``0 (off) or >=
        1``); ``''`` for a field without bounds (choices are in the help text itself)."""
        iv = self.interval()
        if iv and self.off is not None:
            iv = f"{self.off!r} (off) or {iv}"
        return iv


def _f(default: Any, help: str = "", *, kind: type | None = None, ge: float | None = None,
       gt: float | None = None, le: float | None = None, lt: float | None = None,
       choices: Any = None, nonempty: bool = False, off: Any = None, optional: bool = False,
       note: str = "", **kw: Any) -> Any:
    """A dataclass field with ``--help`` text and, optionally, a declared :class:`Range`
    (stored in the field's metadata as ``range``; :func:`check_fields` checks it). An empty
    ``help`` leaves the flag's help to the field's ``#:`` comment."""
    metadata: dict[str, Any] = {"help": help} if help else {}
    if (kind is not None or choices is not None or nonempty or optional or off is not None
            or any(b is not None for b in (ge, gt, le, lt))):
        metadata["range"] = Range(kind=kind, ge=ge, gt=gt, le=le, lt=lt, choices=choices,
                                  nonempty=nonempty, off=off, optional=optional, note=note)
    elif note:
        raise TypeError("_f: a note explains a declared range; declare one (kind=, ge=, ...)")
    return field(default=default, metadata=metadata, **kw)


def field_range(f: dataclasses.Field) -> Range | None:
    """The :class:`Range` declared on a dataclass field, if any."""
    return f.metadata.get("range") if f.metadata else None


def check_fields(obj: Any) -> None:
    """Check every declared field of the dataclass instance ``obj``; the first value out of its
    range raises ``ValueError("<Class>.<field> must be <range>[ <note>], got <value>")``."""
    cls = type(obj).__name__
    for f in dataclasses.fields(obj):
        r = field_range(f)
        if r is not None:
            v = getattr(obj, f.name)
            _check(r.ok(v), cls, f.name, f"must be {r.describe()}" + (f" {r.note}" if r.note else ""), v)


def help_with_range(text: str | None, f: dataclasses.Field) -> str | None:
    """``text`` with the field's declared bounds appended, ``(>= 1)``, unless it already says
    them."""
    r = field_range(f)
    short = r.short() if r is not None else ""
    if not short or not text or f"({short})" in text:
        return text
    return f"{text} ({short})"


def _check(ok: bool, cls: str, name: str, msg: str, value: Any) -> None:
    """The one-line error of a hand-written check (those that relate fields, or reach outside
    the config): ``<cls>.<name> <msg>, got <value>``."""
    if not ok:
        raise ValueError(f"{cls}.{name} {msg}, got {value!r}")
