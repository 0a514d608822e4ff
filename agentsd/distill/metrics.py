"""Per-step metrics: one JSON line per step in ``metrics.jsonl`` plus TensorBoard scalars.

Keys are ``section/name`` (``loss/total``, ``kl/mean``, ``rollout/success``, ``eval/success``,
``teacher/age``, ``time/tokens_per_s`` ...). Keys under ``time/`` depend on the machine; every
other value is a deterministic function of the config, seed and step (resume tests compare them).

A metric may carry its spread as ``<key>_std`` (``eval/success_std``); :func:`metric_series` and
:func:`mean_curve` turn rows (or several seeds' curves) into a mean and a spread per step, which is
what the report draws as a band.

On resume the JSONL is cut back to the checkpoint's step and TensorBoard events after it are
purged, so a resumed run's files read as if it had never stopped. ``resume_step=0`` means no
checkpoint was loaded: the run starts over, so every earlier row goes (a run killed before its
first checkpoint had already logged step 0, which the restart logs again). And a step logged
again after a resume replaces the earlier session's rows from that step on: no step ever has
two rows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "read_metrics", "summarize_values", "masked_values", "Series",
           "metric_series", "mean_curve", "mean_std"]


def summarize_values(values: Sequence[float], prefix: str, pcts: Sequence[int] = (50, 95),
                     ) -> dict[str, float]:
    """``{prefix/mean, prefix/p50, prefix/p95, prefix/max}`` of ``values`` (empty: nothing)."""
    import numpy as np

    if len(values) == 0:
        return {}
    a = np.asarray(values, dtype=np.float64)
    out = {f"{prefix}/mean": float(a.mean()), f"{prefix}/max": float(a.max())}
    for p in pcts:
        out[f"{prefix}/p{p}"] = float(np.percentile(a, p))
    return out


def masked_values(x_BT: Any, mask_BT: Any) -> list[float]:
    """The entries of a ``[B, T]`` tensor where ``mask_BT`` is set, as floats."""
    return x_BT.detach()[mask_BT.bool()].float().tolist()


class MetricsWriter:
    """Append-only JSONL (flushed and fsynced per line, so a killed run keeps every finished
    step) and optional TensorBoard."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._old_max = self._truncate_after(resume_step if resume_step > 0 else -1)
        self._f = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dev extra; JSONL is always written
                self.tb = None
            else:
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"),
                                        purge_step=resume_step + 1 if resume_step > 0 else 0)

    def _truncate_after(self, step: int) -> int:
        """Keep rows with ``step`` <= ``step``; returns the largest step kept (-1: none)."""
        if not self.path.exists():
            return -1
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        os.replace(tmp, self.path)
        return max((r.get("step", 0) for r in keep), default=-1)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if step <= self._old_max:  # an earlier session logged this step: its rows from here go
            self._f.close()
            self._old_max = self._truncate_after(step - 1)
            self._f = self.path.open("a", encoding="utf-8")
        row = {"step": step, **{k: _clean(v) for k, v in values.items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and v is not None:
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` (a truncated last line, from a killed writer, is skipped)."""
    rows = []
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass(frozen=True)
class Series:
    """One metric against step: its mean at each step, the spread (sample std; 0 where nothing
    says how much it varies) and how many values went into each mean."""

    steps: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def has_spread(self) -> bool:
        return any(s > 0 for s in self.std)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), as ``scripts/compare.py``
    reports ``mean ± std`` over seeds."""
    import statistics

    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _aggregate(points: Iterable[tuple[int, float, float | None]]) -> Series:
    by_step: dict[int, list[tuple[float, float | None]]] = {}
    for step, value, std in points:
        by_step.setdefault(int(step), []).append((float(value), std))
    steps, means, stds, ns = [], [], [], []
    for step in sorted(by_step):
        vals = by_step[step]
        m, s = mean_std([v for v, _ in vals])
        if len(vals) == 1 and vals[0][1] is not None:
            s = float(vals[0][1])  # one run that logged its own spread
        steps.append(step)
        means.append(m)
        stds.append(s)
        ns.append(len(vals))
    return Series(steps, means, stds, ns)


def metric_series(rows: Sequence[dict[str, Any]], key: str) -> Series:
    """``key`` against step. Several rows at one step (one per seed) give their mean and sample
    std; a single row's spread is its ``<key>_std`` when logged. Rows without ``key`` (or with
    ``None``, a non-finite value) are skipped."""
    return _aggregate((r.get("step", 0), r[key], r.get(f"{key}_std"))
                      for r in rows if isinstance(r.get(key), int | float))


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> Series:
    """Several seeds' ``(step, value)`` curves as one: mean and sample std at every step any seed
    logged (a step some seeds lack averages the seeds that have it; ``n`` says how many)."""
    return _aggregate((step, value, None) for curve in curves for step, value in curve)
