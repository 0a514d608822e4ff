"""What a skill body may say, and where each argument of a call came from.

A skill body is guidance a small model can act on: which call to make, in which order, and where
each argument comes from — never one episode's values. This module holds the pieces both
summarizers share:

- :func:`episode_calls` reads an episode's tool calls with, for every argument, *where its value
  came from*: the task text, an earlier tool result (which tool, which field), a count of an
  earlier result's items, or nowhere found. Values become placeholders
  (``<access_token from the bank__login result>``), so a rule holds for every task of a template;
- :data:`MAX_BODY_TOKENS` and :func:`body_tokens` bound a body in the embedded model's tokens;
- :func:`instance_values` / :func:`leaked_values` find the concrete values of the source episodes
  (names, numbers, ids that differ from one episode to the next) that a body must not contain.

>>> src = source_of("Tax advisor #32", "Task: On which date is my 'Tax advisor #32' event?", [])
>>> src.label("query")
'<the quoted text from the task>'
>>> src = source_of(17, "Task: delete it", [("calendar__search_events", {"result": {"results": [{"id": 17}]}})],
...                 arg="event_id")
>>> src.label("event_id")
'<id from the calendar__search_events result>'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentsd.trajectory import Trajectory

__all__ = ["MAX_BODY_TOKENS", "body_tokens", "Source", "SourcedCall", "source_of", "episode_calls",
           "task_text", "task_key", "parse_calls", "instance_values", "leaked_values", "clean_error"]

#: a skill body is at most this many tokens of the embedded model (SmolLM2): a rule, not a story
MAX_BODY_TOKENS = 80

_TOOL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
_RESPONSE_RE = re.compile(r"<tool_response>\s*(\{.*?\})\s*</tool_response>", re.DOTALL)


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    try:
        from agentsd.policy.models import load_tokenizer

        return load_tokenizer("smollm2")
    except Exception:  # the embedded model is not installed: fall back to an estimate
        return None


def body_tokens(text: str) -> int:
    """Tokens of ``text`` for the embedded model (SmolLM2's tokenizer when installed, else an
    over-estimate of one token per three characters)."""
    tok = _tokenizer()
    if tok is None:
        return -(-len(text) // 3)
    return len(tok(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class Source:
    """Where an argument value came from. ``kind``: ``task`` (in the task text), ``quoted`` (a
    quoted phrase of the task), ``result`` (a field of an earlier tool result), ``part`` (inside
    such a field), ``count`` (the number of items an earlier result listed), ``literal`` (the
    same value in every episode: part of the template, written as is) or ``unknown``."""

    kind: str
    tool: str = ""
    key: str = ""
    value: Any = None

    def label(self, arg: str) -> str:
        """The placeholder written in a rule for an argument named ``arg``."""
        if self.kind == "quoted":
            return "<the quoted text from the task>"
        if self.kind == "task":
            return f"<the {arg} given in the task>"
        if self.kind == "result":
            return f"<{self.key} from the {self.tool} result>"
        if self.kind == "part":
            return f"<the {arg} inside {self.key} of the {self.tool} result>"
        if self.kind == "count":
            return f"<the number of {self.key} in the {self.tool} result>"
        if self.kind == "literal":
            return json.dumps(self.value, ensure_ascii=False)
        return f"<the {arg} worked out from the results>"


@dataclass(frozen=True)
class SourcedCall:
    """One tool call of an episode: its name and each argument's value and :class:`Source`."""

    name: str
    args: tuple[tuple[str, Any, Source], ...]
    ok: bool = True

    def shape(self) -> tuple[str, tuple[str, ...]]:
        return self.name, tuple(a for a, _, _ in self.args)


def parse_calls(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``(name, arguments)`` of every Hermes ``<tool_call>`` in an action text."""
    out = []
    for m in _TOOL_RE.finditer(text or ""):
        try:
            d = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            args = d.get("arguments")
            out.append((d["name"], args if isinstance(args, dict) else {}))
    return out


def task_text(traj: Trajectory) -> str:
    """The task as the agent first read it: the first observation's user content."""
    if not traj.turns:
        return ""
    return "\n".join(str(m.get("content") or "") for m in traj.turns[0].observation
                     if m.get("role") == "user")


def task_key(traj: Trajectory) -> tuple:
    """What makes two episodes the same task: seed, task id and task text (one task played by
    several policies is one task, not several)."""
    if traj.seed is None and not traj.task_id:
        return (traj.id,)
    return (traj.env_id, traj.seed, traj.task_id, task_text(traj))


def _reply(traj: Trajectory, i: int) -> list[dict[str, Any]]:
    return list(traj.turns[i + 1].observation if i + 1 < len(traj.turns) else traj.final_observation)


def _results(msgs: Sequence[dict[str, Any]]) -> list[Any]:
    """The JSON payloads of the tool results in a reply, in call order."""
    out: list[Any] = []
    for m in msgs:
        content = str(m.get("content") or "")
        if m.get("role") == "tool":
            try:
                out.append(json.loads(content))
            except ValueError:
                out.append(content)
            continue
        for block in _RESPONSE_RE.finditer(content):
            try:
                out.append(json.loads(block.group(1)).get("content"))
            except (ValueError, AttributeError):
                out.append(None)
    return out


def _is_error(payload: Any) -> bool:
    return isinstance(payload, dict) and "error" in payload


def _walk(obj: Any, key: str = "", parent: dict | None = None) -> Iterator[tuple[str, Any, dict | None]]:
    """Every leaf of a JSON value as ``(field name, value, the dict holding it)``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, str(k), obj)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key, parent)
    else:
        yield key, obj, parent


def _lists(obj: Any, key: str = "") -> Iterator[tuple[str, list]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _lists(v, str(k))
    elif isinstance(obj, list):
        yield key, obj
        for v in obj:
            yield from _lists(v, key)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) or isinstance(b, int | float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower() and a.strip() != ""


def _in_task(value: Any, task: str) -> str | None:
    """``quoted`` / ``task`` when ``value`` is written in the task text, else None."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    if len(text) < 2 or isinstance(value, float | int) and len(text) < 2:
        return None
    m = re.search(r"(?<![\w@.+-])" + re.escape(text) + r"(?![\w@])", task, re.IGNORECASE)
    if not m:
        return None
    before, after = task[: m.start()], task[m.end():]
    if before.endswith(("'", '"')) and after.startswith(("'", '"')):
        return "quoted"
    return "task"


def source_of(value: Any, task: str, earlier: Sequence[tuple[str, Any]], app: str = "",
              arg: str = "") -> Source:
    """Where ``value`` came from: the task text first, then the most recent earlier tool result
    holding it (a field equal to it, then a field containing it, then a list of that many
    items). ``earlier`` is ``[(tool name, result payload), ...]`` in call order; ``app`` is the
    calling tool's app (a result row naming it, e.g. ``{"app": "bank", "password": ...}``, is
    named after it: ``the bank password``)."""
    if isinstance(value, list | dict):
        leaves = [v for _, v, _ in _walk(value)]
        srcs = {source_of(v, task, earlier, app, arg).kind for v in leaves}
        return Source("task" if srcs == {"task"} or srcs == {"quoted"} else "unknown")
    where = _in_task(value, task)
    if where:
        return Source(where)
    # an id field equal to a number is weak evidence unless the argument is an id itself
    id_arg = _is_id(arg)
    for ids in ((False, True) if not id_arg else (True, False)):
        for tool, payload in reversed(earlier):
            if _is_error(payload):
                continue
            for key, v, parent in _walk(payload):
                if _is_id(key) == ids and _same(value, v):
                    named = next((pv for pk, pv in (parent or {}).items()
                                  if pk != key and isinstance(pv, str) and app and pv.lower() == app), None)
                    return Source("result", tool, f"the {named} {key}" if named else key)
        if not id_arg and not ids:
            counted = _count_source(value, earlier)
            if counted:
                return counted
    for tool, payload in reversed(earlier):
        if _is_error(payload) or not isinstance(value, str) or len(value.strip()) < 4:
            continue
        for key, v, _ in _walk(payload):
            if isinstance(v, str) and value.strip().lower() in v.lower():
                return Source("part", tool, key)
    return _count_source(value, earlier) or Source("unknown")


def _is_id(name: str) -> bool:
    return name == "id" or name.endswith("_id")


def _count_source(value: Any, earlier: Sequence[tuple[str, Any]]) -> Source | None:
    try:
        n = int(str(value))
    except ValueError:
        return None
    if n >= 0:
        for tool, payload in reversed(earlier):
            for key, items in _lists(payload):
                if len(items) == n and key:
                    return Source("count", tool, key)
    return None


def episode_calls(traj: Trajectory) -> list[SourcedCall]:
    """The episode's tool calls in order, each argument with the :class:`Source` of its value
    (searched in the task and the results of the calls before it)."""
    task = task_text(traj)
    earlier: list[tuple[str, Any]] = []
    out = []
    for i, tu in enumerate(traj.turns):
        calls = parse_calls(tu.action_text)
        results = _results(_reply(traj, i))
        for j, (name, args) in enumerate(calls):
            app = name.split("__", 1)[0] if "__" in name else ""
            sourced = tuple((k, v, source_of(v, task, earlier, app, k)) for k, v in args.items())
            payload = results[j] if j < len(results) else None
            ok = tu.parse in ("", "ok") and not _is_error(payload)
            out.append(SourcedCall(name, sourced, ok=ok))
            earlier.append((name, payload))
    return out


def _values(obj: Any) -> Iterator[Any]:
    for _, v, _ in _walk(obj):
        yield v


def instance_values(trajectories: Iterable[Trajectory], min_len: int = 3) -> set[str]:
    """Concrete values of these episodes that a general rule must not contain: every argument
    value of their tool calls and every answer they gave, that is not shared by all the episodes
    of its call (what every episode passes, like a fixed search phrase, is part of the
    template). Short values (under ``min_len`` characters) and booleans are left out."""
    seen: dict[tuple[str, str], list[set[str]]] = {}
    counts: dict[str, int] = {}
    by_task: dict[tuple, list[Trajectory]] = {}
    for t in trajectories:  # episodes of one task (one seed, several policies) count once
        by_task.setdefault(task_key(t), []).append(t)
    for group in by_task.values():
        per: dict[tuple[str, str], set[str]] = {}
        names = set()
        for tu in (tu for t in group for tu in t.turns):
            for name, args in parse_calls(tu.action_text):
                names.add(name)
                for k, v in args.items():
                    per.setdefault((name, k), set()).update(
                        str(x).strip() for x in _values(v) if not isinstance(x, bool) and x is not None)
            m = re.search(r"<answer>(.*?)</answer>", tu.action_text or "", re.S | re.I)
            if m:
                per.setdefault(("<answer>", ""), set()).add(m.group(1).strip())
                names.add("<answer>")
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        for key, vals in per.items():
            seen.setdefault(key, []).append(vals)
    out: set[str] = set()
    for (name, _), groups in seen.items():
        shared = set.intersection(*groups) if len(groups) == counts.get(name, 0) and len(groups) > 1 else set()
        for vals in groups:
            out.update(v for v in vals - shared if len(v) >= min_len)
    return out


def leaked_values(body: str, values: Iterable[str]) -> list[str]:
    """The values of ``values`` that ``body`` contains as whole words (case-insensitive)."""
    low = body.lower()
    out = []
    for v in values:
        pat = r"(?<![\w])" + re.escape(v.lower()) + r"(?![\w])"
        if re.search(pat, low):
            out.append(v)
    return sorted(out)


_TAGGED_RE = re.compile(r"<tool_call>.*?(</tool_call>|$)", re.S)


def clean_error(text: str, limit: int = 140) -> str:
    """An env error as a rule quotes it: markup examples (``<tool_call>…``) replaced by words,
    whitespace collapsed, cut to ``limit`` characters at a word."""
    out = _TAGGED_RE.sub("a tool call", text or "")
    out = re.sub(r"</?answer>", "answer tags", out)
    out = out.replace("```", "")
    out = " ".join(out.split())
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + " …"
    return out
