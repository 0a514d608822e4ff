"""Action parsing shared by every env: the formats models actually emit.

Recognized, in order of precedence:

1. an assistant message dict with OpenAI ``tool_calls``
   (``{"role": "assistant", "tool_calls": [{"function": {"name": ..., "arguments": "{json}"}}]}``);
2. Hermes/Qwen-style tags in text: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``;
3. a final answer in text: ``<answer>...</answer>``.

Parsing never raises. It returns a :class:`ParsedAction` whose ``status`` is a
:class:`~agentsd.types.ParseStatus` and whose ``error`` is a sentence an env can show the model::

    >>> t = Tool("add", "Add two integers.", {"a": "integer", "b": "integer"})
    >>> p = parse_action('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
    ...                  tools=[t])
    >>> p.status.value, p.tool_calls[0].arguments
    ('ok', {'a': 1, 'b': 2})
    >>> parse_action("<tool_call>{oops</tool_call>", tools=[t]).status.value
    'invalid_json'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agentsd.types import ParseStatus

__all__ = ["Tool", "ToolCall", "ParsedAction", "parse_action", "action_text", "check_arguments"]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Tool:
    """A tool an env offers. ``parameters`` maps argument name to a JSON-schema type name
    (``"string"``, ``"integer"``, ``"number"``, ``"boolean"``, ``"array"``, ``"object"``) or to a
    full JSON-schema property dict; ``required`` defaults to every parameter without a
    ``"default"`` in its property dict."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] | None = None

    def properties(self) -> dict[str, dict[str, Any]]:
        return {
            k: (v if isinstance(v, dict) else {"type": v}) for k, v in self.parameters.items()
        }

    def required_names(self) -> tuple[str, ...]:
        if self.required is not None:
            return tuple(self.required)
        return tuple(k for k, v in self.properties().items() if "default" not in v)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry for this tool."""
        props = {
            k: {kk: vv for kk, vv in v.items() if kk != "default"} | (
                {"default": v["default"]} if "default" in v else {}
            )
            for k, v in self.properties().items()
        }
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": props,
                    "required": list(self.required_names()),
                },
            },
        }


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass
class ParsedAction:
    """The result of parsing one action. ``text`` is the action's visible text (content)."""

    status: ParseStatus
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is ParseStatus.OK


def action_text(action: Any) -> str | None:
    """The visible text of an action (``None`` when the action is neither text nor a message)."""
    if isinstance(action, str):
        return action
    if isinstance(action, dict):
        content = action.get("content")
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # OpenAI content parts
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            return "".join(p for p in parts if isinstance(p, str))
        return None
    return None


def check_arguments(tool: Tool, args: Any) -> str | None:
    """Return a sentence saying what is wrong with ``args`` for ``tool``, or ``None`` if fine."""
    if not isinstance(args, dict):
        return f"arguments of {tool.name} must be a JSON object, got {type(args).__name__}"
    props = tool.properties()
    missing = [k for k in tool.required_names() if k not in args]
    if missing:
        return f"{tool.name} is missing required argument(s): {', '.join(missing)}"
    extra = [k for k in args if k not in props]
    if extra:
        return (
            f"{tool.name} got unexpected argument(s): {', '.join(map(str, extra))}; "
            f"it takes: {', '.join(props) or 'no arguments'}"
        )
    for k, v in args.items():
        typ = props[k].get("type")
        allowed = _JSON_TYPES.get(typ) if isinstance(typ, str) else None
        if allowed is None:
            continue
        if isinstance(v, bool) and bool not in allowed:  # bool is an int subclass in Python
            return f"argument {k!r} of {tool.name} must be {typ}, got boolean"
        if not isinstance(v, allowed):
            return f"argument {k!r} of {tool.name} must be {typ}, got {_json_type_name(v)}"
        if "enum" in props[k] and v not in props[k]["enum"]:
            return f"argument {k!r} of {tool.name} must be one of {props[k]['enum']}, got {v!r}"
    return None


def _json_type_name(v: Any) -> str:
    for name, types in _JSON_TYPES.items():
        if isinstance(v, types) and not (isinstance(v, bool) and name in ("integer", "number")):
            return name
    return type(v).__name__


def _decode_arguments(raw: Any) -> tuple[Any, str | None]:
    if isinstance(raw, dict):
        return raw, None
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        try:
            return json.loads(raw), None
        except (json.JSONDecodeError, RecursionError) as e:
            return None, f"tool-call arguments are not valid JSON ({e.__class__.__name__}: {e})"
    return None, f"tool-call arguments must be a JSON object, got {type(raw).__name__}"


def _calls_from_message(msg: dict) -> tuple[list[ToolCall], ParseStatus, str | None]:
    calls: list[ToolCall] = []
    raw_calls = msg.get("tool_calls")
    if not isinstance(raw_calls, list):
        return [], ParseStatus.INVALID_JSON, "tool_calls must be a list of calls"
    for i, c in enumerate(raw_calls):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return [], ParseStatus.INVALID_JSON, f"tool call #{i} has no function name"
        args, err = _decode_arguments(fn.get("arguments"))
        if err:
            return [], ParseStatus.INVALID_JSON, err
        calls.append(ToolCall(fn["name"], args, c.get("id")))
    return calls, ParseStatus.OK, None


def _calls_from_text(text: str) -> tuple[list[ToolCall], ParseStatus, str | None]:
    calls: list[ToolCall] = []
    for i, m in enumerate(_TOOL_CALL_RE.finditer(text)):
        body = m.group(1).strip()
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, RecursionError) as e:
            return [], ParseStatus.INVALID_JSON, (
                f"the JSON inside <tool_call> #{i} does not parse ({e}); write "
                '<tool_call>{"name": "...", "arguments": {...}}</tool_call>'
            )
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return [], ParseStatus.INVALID_JSON, (
                f'<tool_call> #{i} must hold an object with a "name" and "arguments"'
            )
        args, err = _decode_arguments(obj.get("arguments", obj.get("parameters")))
        if err:
            return [], ParseStatus.INVALID_JSON, err
        calls.append(ToolCall(obj["name"], args))
    return calls, ParseStatus.OK, None


def parse_action(
    action: Any,
    tools: list[Tool] | None = None,
    *,
    max_chars: int | None = None,
    max_calls: int | None = None,
) -> ParsedAction:
    """Parse a model action into tool calls and/or an ``<answer>``.

    ``tools`` (when given) validates names and arguments. ``max_chars`` caps the action text;
    ``max_calls`` caps the number of tool calls in one action.
    """
    text = action_text(action)
    if text is None:
        return ParsedAction(
            ParseStatus.BAD_TYPE,
            error=f"an action must be text or an assistant message dict, got {type(action).__name__}",
        )
    if max_chars is not None and len(text) > max_chars:
        return ParsedAction(
            ParseStatus.TOO_LONG, text=text[:max_chars],
            error=f"the action is {len(text)} characters long; the limit is {max_chars}",
        )
    if isinstance(action, dict) and action.get("tool_calls"):
        calls, status, err = _calls_from_message(action)
    else:
        calls, status, err = _calls_from_text(text)
    if status is not ParseStatus.OK:
        return ParsedAction(status, text=text, error=err)
    if max_calls is not None and len(calls) > max_calls:
        return ParsedAction(
            ParseStatus.BAD_ARGUMENTS, text=text,
            error=f"{len(calls)} tool calls in one action; at most {max_calls} allowed",
        )
    if tools is not None:
        by_name = {t.name: t for t in tools}
        for c in calls:
            if c.name not in by_name:
                return ParsedAction(
                    ParseStatus.UNKNOWN_TOOL, text=text, tool_calls=calls,
                    error=f"unknown tool {c.name[:80]!r}; available: {', '.join(by_name)}",
                )
            problem = check_arguments(by_name[c.name], c.arguments)
            if problem:
                return ParsedAction(ParseStatus.BAD_ARGUMENTS, text=text, tool_calls=calls,
                                    error=problem)
    answers = _ANSWER_RE.findall(text)
    answer = answers[-1].strip() if answers else None
    if not calls and answer is None:
        return ParsedAction(ParseStatus.NO_ACTION, text=text, error="no tool call or <answer> found")
    return ParsedAction(ParseStatus.OK, text=text, tool_calls=calls, answer=answer)
