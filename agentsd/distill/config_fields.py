"""The pieces every trainer config section is written with: a field with ``--help`` text and
the one-line range checks (each names the section, the field and the allowed range)."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

__all__ = ["_f", "_check", "_pos_int", "_nonneg"]


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


def _check(ok: bool, cls: str, name: str, msg: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{cls}.{name} {msg}, got {value!r}")


def _pos_int(cls: str, obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, cls, n,
               "must be a positive int", v)


def _nonneg(cls: str, obj: Any, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(isinstance(v, int | float) and math.isfinite(v) and v >= 0, cls, n,
               "must be a finite number >= 0", v)
