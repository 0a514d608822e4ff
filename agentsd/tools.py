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

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from agentsd.types import ParseStatus

__all__ = ["Tool", "ToolCall", "ParsedAction", "parse_action", "action_text", "check_arguments",
           "validate_arguments"]

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
    ``"default"`` in its property dict. :meth:`parameters_schema` is the published schema and
    the one arguments are checked against."""

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

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of this tool's arguments: what :meth:`to_openai` publishes and what
        :func:`check_arguments` enforces (one source of truth). No arguments beyond the listed
        ones (``additionalProperties: false``); an optional argument also accepts ``null``,
        meaning "use the default", so the schema fits OpenAI strict mode."""
        required = self.required_names()
        props = {}
        for k, v in self.properties().items():
            prop = dict(v)
            if k not in required:
                prop = _nullable(prop)
            props[k] = prop
        return {"type": "object", "properties": props, "required": list(required),
                "additionalProperties": False}

    def to_openai(self, strict: bool = False) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry for this tool. ``strict=True`` gives the strict-mode
        form: every argument listed in ``required`` (optional ones pass ``null``), and the
        keywords strict mode does not take (``default``, ``maxLength``) left out, so a string over
        a length cap passes the strict schema and the env still rejects it."""
        params = self.parameters_schema()
        function: dict[str, Any] = {"name": self.name, "description": self.description}
        if strict:
            params = _strict(params)
            function["strict"] = True
        function["parameters"] = params
        return {"type": "function", "function": function}


_STRICT_UNSUPPORTED = ("default", "maxLength", "minLength")


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    typ = prop.get("type")
    if isinstance(typ, str) and typ != "null":
        prop["type"] = [typ, "null"]
    elif isinstance(typ, list) and "null" not in typ:
        prop["type"] = [*typ, "null"]
    if "enum" in prop and None not in prop["enum"]:
        prop["enum"] = [*prop["enum"], None]
    return prop


def _strict(schema: Any) -> Any:
    """``schema`` in OpenAI strict form (recursively: every object lists all its keys as required
    and forbids others; unsupported keywords dropped)."""
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if k not in _STRICT_UNSUPPORTED}
    if out.get("type") == "object" and isinstance(out.get("properties"), dict):
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


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
    return validate_arguments(tool, args)[1]


def validate_arguments(tool: Tool, args: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Check ``args`` against :meth:`Tool.parameters_schema` with ``jsonschema``. Returns the
    arguments ready to use (``null`` optional arguments dropped so the default applies, integral
    floats of integer arguments as ints) and ``None``, or ``None`` and a sentence saying what is
    wrong, naming the argument."""
    if not isinstance(args, dict):
        return None, f"arguments of {tool.name} must be a JSON object, got {_json_type_name(args)}"
    bad = _non_json_path(args)
    if bad is not None:
        return None, f"argument {bad} of {tool.name} is not a JSON value (NaN and Infinity are not JSON)"
    schema = tool.parameters_schema()
    errors = list(_validator(json.dumps(schema, sort_keys=True)).iter_errors(args))
    if errors:
        return None, _explain(tool, schema, args, errors)
    props = schema["properties"]
    return {k: _as_ints(props[k], v) for k, v in args.items() if v is not None}, None


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def _explain(tool: Tool, schema: dict[str, Any], args: dict[str, Any], errors: list[Any]) -> str:
    import jsonschema

    missing = [k for k in schema["required"] if k not in args]
    if missing:
        return f"{tool.name} is missing required argument(s): {', '.join(missing)}"
    extra = [k for k in args if k not in schema["properties"]]
    if extra:
        return (f"{tool.name} got unexpected argument(s): {', '.join(map(str, extra))}; "
                f"it takes: {', '.join(schema['properties']) or 'no arguments'}")
    e = jsonschema.exceptions.best_match(errors)
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                    for i, p in enumerate(e.absolute_path))
    if e.validator == "type":
        want = e.validator_value if isinstance(e.validator_value, str) else " or ".join(e.validator_value)
        return f"argument {where!r} of {tool.name} must be {want}, got {_json_type_name(e.instance)}"
    if e.validator == "enum":
        allowed = [v for v in e.validator_value if v is not None]
        return f"argument {where!r} of {tool.name} must be one of {allowed}, got {e.instance!r:.60}"
    if e.validator == "maxLength":
        return (f"argument {where!r} of {tool.name} is {len(e.instance)} characters long; "
                f"the limit is {e.validator_value}")
    if e.validator == "maxItems":
        return f"argument {where!r} of {tool.name} has {len(e.instance)} elements; the limit is {e.validator_value}"
    return f"argument {where!r} of {tool.name}: {e.message[:200]}"


def _non_json_path(v: Any, path: str = "") -> str | None:
    """The path of a value JSON cannot hold (a non-finite float, a non-string key), or ``None``."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(path or "arguments")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                return repr(f"{path}.{k}" if path else str(k))
            bad = _non_json_path(x, f"{path}.{k}" if path else k)
            if bad:
                return bad
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            bad = _non_json_path(x, f"{path}[{i}]")
            if bad:
                return bad
    return None


def _as_ints(schema: dict[str, Any], v: Any) -> Any:
    """JSON Schema counts ``1.0`` as an integer; hand the env an ``int``."""
    typ = schema.get("type")
    types = typ if isinstance(typ, list) else [typ]
    if isinstance(v, float) and "integer" in types and "number" not in types:
        return int(v)
    if isinstance(v, list) and isinstance(schema.get("items"), dict):
        return [_as_ints(schema["items"], x) for x in v]
    return v


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
            args, problem = validate_arguments(by_name[c.name], c.arguments)
            if problem:
                return ParsedAction(ParseStatus.BAD_ARGUMENTS, text=text, tool_calls=calls,
                                    error=problem)
            c.arguments = args
    answers = _ANSWER_RE.findall(text)
    answer = answers[-1].strip() if answers else None
    if not calls and answer is None:
        return ParsedAction(ParseStatus.NO_ACTION, text=text, error="no tool call or <answer> found")
    return ParsedAction(ParseStatus.OK, text=text, tool_calls=calls, answer=answer)
