"""The trajectory store: append-only JSONL that survives crashes, Parquet export/import,
filtering and grouping.

One trajectory per line (:meth:`Trajectory.to_dict`, which carries ``schema_version``)::

    from agentsd.store import TrajectoryWriter, read_trajectories, group_by, filter_trajectories

    with TrajectoryWriter("runs/sokoban.jsonl") as w:     # append mode; one flush per record
        rollout(policy, "Sokoban-v0", seeds=range(8), on_trajectory=w.write)
    trajs = read_trajectories("runs/sokoban.jsonl")
    by_task = group_by(trajs, "task_id")                  # {task_id: [Trajectory, ...]}
    wins = filter_trajectories(trajs, success=True)
    write_parquet(trajs, "runs/sokoban.parquet"); read_parquet("runs/sokoban.parquet") == trajs

Crash tolerance: each record is written with one ``write`` of a complete line and flushed, so a
killed writer loses at most the record in flight (``fsync=True`` also survives power loss). A
reader skips a truncated, corrupt or wrong-shape line (:func:`record_problem`) with a warning
(``strict=True`` raises instead, naming the line), and a writer reopening a file whose last line
was cut starts on a fresh line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agentsd.trajectory import SCHEMA_VERSION, Trajectory

__all__ = ["TrajectoryWriter", "iter_trajectories", "read_trajectories", "read_jsonl", "write_jsonl",
           "write_parquet", "read_parquet", "load", "filter_trajectories", "group_by",
           "StoreError", "register_show", "format_trajectory"]


class StoreError(ValueError):
    """A trajectory file that cannot be read; the message names the file and line."""


class TrajectoryWriter:
    """Append trajectories to a JSONL file, one complete line per record."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.count = 0
        self._f = open(self.path, "a+b")  # noqa: SIM115 - closed in close()
        self._f.seek(0, os.SEEK_END)
        if self._f.tell() > 0:
            self._f.seek(-1, os.SEEK_END)
            if self._f.read(1) != b"\n":
                # the last writer died mid-record: never glue a new record onto that fragment
                self._f.write(b"\n")

    def write(self, traj: Trajectory) -> None:
        line = json.dumps(traj.to_dict(), ensure_ascii=False, allow_nan=True) + "\n"
        self._f.write(line.encode("utf-8"))
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.count += 1

    def write_all(self, trajs: Iterable[Trajectory]) -> None:
        for t in trajs:
            self.write(t)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(trajs: Iterable[Trajectory], path: str | os.PathLike, *, append: bool = False) -> int:
    """Write trajectories to ``path`` (replacing it unless ``append``); return how many."""
    p = Path(path)
    if not append and p.exists():
        p.unlink()
    with TrajectoryWriter(p) as w:
        w.write_all(trajs)
        return w.count


def iter_trajectories(path: str | os.PathLike, *, strict: bool = False) -> Iterator[Trajectory]:
    """Yield the trajectories of a JSONL file, skipping (with a warning) lines that do not parse
    (a record cut by a crash) unless ``strict``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no trajectory file at {p}; write one with `agentsd rollout --out {p}`")
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
                if not isinstance(d, dict):
                    raise ValueError(f"expected a JSON object, got {type(d).__name__}")
            except ValueError as e:
                msg = f"{p}:{n}: not a complete trajectory record ({e}); " + (
                    "the writer was probably killed mid-record" if not raw.endswith(b"\n")
                    else "the line is corrupt")
                if strict:
                    raise StoreError(msg) from e
                warnings.warn(msg + "; skipping it", stacklevel=2)
                continue
            version = d.get("schema_version")
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise StoreError(f"{p}:{n}: trajectory schema v{version} is newer than this agentsd "
                                 f"(reads up to v{SCHEMA_VERSION}); upgrade agentsd")
            problem = record_problem(d)
            if problem is None:
                try:
                    traj = Trajectory.from_dict(_with_stable_id(d, raw))
                except (TypeError, ValueError) as e:
                    problem = str(e)[:300]
            if problem is not None:
                msg = f"{p}:{n}: not a trajectory record ({problem})"
                if strict:
                    raise StoreError(msg)
                warnings.warn(msg + "; skipping it", stacklevel=2)
                continue
            yield traj


#: JSON types of a record's fields (a field may be absent: it takes its default)
_TRAJ_TYPES: dict[str, Any] = {
    "env_id": str, "turns": list, "id": str, "spec_kwargs": dict, "seed": (int, type(None)),
    "task_id": (str, type(None)), "split": (str, type(None)), "policy": str, "sampling": dict,
    "success": bool, "total_reward": (int, float), "stop_reason": str, "final_observation": list,
    "skills": list, "meta": dict, "schema_version": int}
_TURN_TYPES: dict[str, Any] = {
    "observation": list, "prompt_ids": list, "action_ids": list, "action_logprobs": list,
    "action_text": str, "reward": (int, float), "reward_terms": dict, "parse": str,
    "finish_reason": str, "info": dict, "timings": dict, "privileged": dict}


def record_problem(d: dict) -> str | None:
    """Why ``d`` is not a trajectory record (``None`` when it is one): it must hold ``env_id``
    and ``turns`` and every known field must have its JSON type, so a stray object such as
    ``{"turns": 5}`` or ``{}`` is skipped like a corrupt line, never read as an empty episode."""
    missing = [k for k in ("env_id", "turns") if k not in d]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for where, obj, types in [("", d, _TRAJ_TYPES)] + [
            (f"turns[{i}].", t, _TURN_TYPES) for i, t in enumerate(d["turns"])
            if isinstance(d["turns"], list)]:
        if not isinstance(obj, dict):
            return f"{where[:-1]} is a {type(obj).__name__}, not an object"
        for k, want in types.items():
            v = obj.get(k)
            if k in obj and (not isinstance(v, want) or (want is int and isinstance(v, bool))):
                return f"{where}{k} is a {type(v).__name__}"
        for k in ("prompt_ids", "action_ids"):
            if k in obj and not all(type(x) is int for x in obj[k]):
                return f"{where}{k} holds a non-integer"
    return None


def _with_stable_id(d: dict, raw: bytes) -> dict:
    """A record without an ``id`` gets one derived from its bytes: the same on every read."""
    if "id" in d:
        return d
    import hashlib

    return {**d, "id": "sha256-" + hashlib.sha256(raw.strip()).hexdigest()[:32]}


def read_trajectories(path: str | os.PathLike, *, strict: bool = False) -> list[Trajectory]:
    """All trajectories of a trajectory file: JSONL (see :func:`iter_trajectories`) or, by its
    ``.parquet`` suffix, Parquet (:func:`read_parquet`; read as text it is only "corrupt
    lines")."""
    if Path(path).suffix == ".parquet":
        return read_parquet(path)
    return list(iter_trajectories(path, strict=strict))


#: alias used by the skill stage
read_jsonl = read_trajectories


# ---------------------------------------------------------------------------------------------
# Parquet: one row per trajectory; turns are a list of structs. Free-form dicts (kwargs, info,
# reward terms, messages) are JSON strings, so the schema is fixed whatever the env puts there.

_EP_JSON = ("spec_kwargs", "sampling", "final_observation", "meta")
_TURN_JSON = ("observation", "reward_terms", "info", "timings")


def _arrow_schema() -> Any:
    import pyarrow as pa

    turn = pa.struct([
        ("observation", pa.string()), ("prompt_ids", pa.list_(pa.int64())),
        ("action_ids", pa.list_(pa.int64())), ("action_logprobs", pa.list_(pa.float64())),
        ("action_text", pa.string()), ("reward", pa.float64()), ("reward_terms", pa.string()),
        ("parse", pa.string()), ("finish_reason", pa.string()), ("info", pa.string()),
        ("timings", pa.string()),
    ])
    return pa.schema([
        ("id", pa.string()), ("env_id", pa.string()), ("seed", pa.int64()), ("task_id", pa.string()),
        ("split", pa.string()), ("policy", pa.string()), ("success", pa.bool_()),
        ("total_reward", pa.float64()), ("stop_reason", pa.string()), ("num_turns", pa.int64()),
        ("num_action_tokens", pa.int64()), ("skills", pa.list_(pa.string())),
        ("spec_kwargs", pa.string()), ("sampling", pa.string()), ("final_observation", pa.string()),
        ("meta", pa.string()), ("schema_version", pa.int64()), ("turns", pa.list_(turn)),
    ])


def _row(t: Trajectory) -> dict[str, Any]:
    d = t.to_dict()
    for k in _EP_JSON:
        d[k] = json.dumps(d[k], ensure_ascii=False)
    for turn in d["turns"]:
        for k in _TURN_JSON:
            turn[k] = json.dumps(turn[k], ensure_ascii=False)
    d["num_turns"] = len(t.turns)
    d["num_action_tokens"] = t.num_action_tokens()
    return d


def write_parquet(trajs: Iterable[Trajectory], path: str | os.PathLike) -> int:
    """Export trajectories to a Parquet file (one row each); return how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row(t) for t in trajs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema()), str(path))
    return len(rows)


def read_parquet(path: str | os.PathLike) -> list[Trajectory]:
    """Import trajectories written by :func:`write_parquet`."""
    import pyarrow.parquet as pq

    out = []
    for d in pq.read_table(str(path)).to_pylist():
        d.pop("num_turns", None)
        d.pop("num_action_tokens", None)
        for k in _EP_JSON:
            d[k] = json.loads(d[k]) if d.get(k) is not None else None
        turns = []
        for turn in d.get("turns") or []:
            for k in _TURN_JSON:
                turn[k] = json.loads(turn[k]) if turn.get(k) is not None else {}
            turns.append(turn)
        d["turns"] = turns
        out.append(Trajectory.from_dict(d))
    return out


def load(path: str | os.PathLike) -> list[Trajectory]:
    """Read a ``.jsonl`` or ``.parquet`` trajectory file."""
    p = Path(path)
    if p.suffix == ".parquet":
        return read_parquet(p)
    return read_trajectories(p)


# ---------------------------------------------------------------------------------------------
# selection

def filter_trajectories(trajs: Iterable[Trajectory], *, env_id: str | None = None,
                        task_id: str | None = None, success: bool | None = None,
                        stop_reason: str | None = None,
                        where: Callable[[Trajectory], bool] | None = None) -> list[Trajectory]:
    """The trajectories matching every given criterion."""
    out = []
    for t in trajs:
        if env_id is not None and t.env_id != env_id:
            continue
        if task_id is not None and t.task_id != task_id:
            continue
        if success is not None and bool(t.success) != success:
            continue
        if stop_reason is not None and t.stop_reason != str(getattr(stop_reason, "value", stop_reason)):
            continue
        if where is not None and not where(t):
            continue
        out.append(t)
    return out


def group_by(trajs: Iterable[Trajectory], key: str | Callable[[Trajectory], Any] = "task_id"
             ) -> dict[Any, list[Trajectory]]:
    """Group trajectories (first-seen key order) by an attribute name (``"task_id"``,
    ``"success"``, ``"env_id"``, ...) or a function."""
    fn = key if callable(key) else (lambda t: getattr(t, key))
    out: dict[Any, list[Trajectory]] = {}
    for t in trajs:
        out.setdefault(fn(t), []).append(t)
    return out


# ---------------------------------------------------------------------------------------------
# `agentsd show`

def format_trajectory(t: Trajectory, tokens: bool = False, tokenizer: Any = None) -> str:
    """A readable rendering of one episode."""
    lines = [f"episode {t.id}  env {t.env_id}  seed {t.seed}  task {t.task_id}",
             f"policy {t.policy}  success {t.success}  reward {t.total_reward:+.3f}  "
             f"stop {t.stop_reason}  turns {len(t.turns)}  tokens {len(t.token_ids())} "
             f"({t.num_action_tokens()} sampled)"]
    if t.meta.get("error"):
        lines.append(f"error: {t.meta['error']}")
    for i, turn in enumerate(t.turns, 1):
        lines.append(f"\n=== turn {i} ===")
        lines += [_fmt_msg(m) for m in turn.observation]
        lines.append(f"--- action ({len(turn.action_ids)} tokens, {turn.finish_reason}) ---")
        lines.append(turn.action_text)
        lines.append(f"--- reward {turn.reward:+.3f} {turn.reward_terms} parse={turn.parse}")
        if tokens:
            lines.append(f"prompt_ids {turn.prompt_ids}\naction_ids {turn.action_ids}")
            if tokenizer is not None:
                lines.append(f"fed: {tokenizer.decode(turn.prompt_ids)!r}")
    if t.final_observation:
        lines.append("\n=== final observation ===")
        lines += [_fmt_msg(m) for m in t.final_observation]
    return "\n".join(lines)


def _fmt_msg(m: dict[str, Any]) -> str:
    return f"[{m.get('role')}] {m.get('content', '')}"


def register_show(sub: Any) -> None:
    p = sub.add_parser("show", help="pretty-print episodes from a trajectory file (.jsonl/.parquet)")
    p.add_argument("file", help="trajectory file written by `agentsd rollout --out`")
    p.add_argument("-i", "--index", type=int, default=None,
                   help="show only the episode at this position (0-based; negative counts back)")
    p.add_argument("--id", default=None, help="show only the episode with this id")
    p.add_argument("--success", choices=["yes", "no"], default=None, help="only (un)successful episodes")
    p.add_argument("--summary", action="store_true", help="one line per episode instead of full text")
    p.add_argument("--tokens", action="store_true", help="also print the token ids of every turn")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: Any) -> int:
    import sys

    try:
        trajs = load(args.file)
    except (FileNotFoundError, StoreError) as e:
        print(f"agentsd show: {e}", file=sys.stderr)
        return 2
    if args.success is not None:
        trajs = filter_trajectories(trajs, success=args.success == "yes")
    if args.id is not None:
        trajs = [t for t in trajs if t.id == args.id]
        if not trajs:
            print(f"agentsd show: no episode with id {args.id!r} in {args.file}", file=sys.stderr)
            return 2
    if args.index is not None:
        if not -len(trajs) <= args.index < len(trajs):
            print(f"agentsd show: --index {args.index} is out of range; {args.file} has "
                  f"{len(trajs)} matching episodes", file=sys.stderr)
            return 2
        trajs = [trajs[args.index]]
    for i, t in enumerate(trajs):
        if args.summary:
            print(f"{i:4d} {t.id[:12]} {t.env_id} seed={t.seed} success={t.success} "
                  f"reward={t.total_reward:+.2f} turns={len(t.turns)} stop={t.stop_reason}")
        else:
            print(("\n" + "#" * 80 + "\n" if i else "") + format_trajectory(t, tokens=args.tokens))
    if not trajs:
        print(f"(no matching episodes in {args.file})")
    return 0

