"""One source of truth for tool arguments: the schema an env publishes is the rule it enforces.

Every tool of every registered env is checked both ways on random arguments: valid under the
published JSON schema (by ``jsonschema``, independently of agentsd) if and only if the env's parser
accepts the call. The schemas are OpenAI strict-mode compatible.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentsd
from agentsd.tools import Tool, parse_action, validate_arguments
from agentsd.types import ParseStatus


def _env_tools() -> dict[str, tuple[str, Tool]]:
    """Every distinct tool of the registry, by name, with one env id that offers it."""
    out: dict[str, tuple[str, Tool]] = {}
    for env_id in sorted(agentsd.list_envs()):
        env = agentsd.make(env_id)
        for t in env.unwrapped.tools:
            out.setdefault(t.name, (env_id, t))
        env.close()
    return out


TOOLS = _env_tools()
NAMES = sorted(TOOLS)

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=12),
                  st.floats(allow_nan=False, allow_infinity=False, width=32))
_json = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                st.dictionaries(st.text(max_size=4), c, max_size=3)),
                     max_leaves=6)


def _plausible(prop: dict) -> st.SearchStrategy:
    """Values near the schema (right type, enum members, edges such as over-long strings), so both
    sides of the boundary get drawn."""
    if "enum" in prop:
        return st.one_of(st.sampled_from(prop["enum"]), _json)
    types = prop["type"] if isinstance(prop.get("type"), list) else [prop.get("type")]
    options = []
    for t in types:
        if t == "string":
            options += [st.text(max_size=20), st.just("x" * (prop.get("maxLength", 10) + 1))]
        elif t == "integer":
            options += [st.integers(-5, 10**9), st.integers(-3, 3).map(float)]
        elif t == "number":
            options += [st.integers(-100, 100), st.floats(-1e6, 1e6, allow_nan=False)]
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
        elif t == "array":
            item = _plausible(prop.get("items", {})) if prop.get("items") else _json
            options += [st.lists(item, max_size=3),
                        st.just(["a@b.example"] * (prop.get("maxItems", 3) + 1))]
    return st.one_of(*options) if options else _json


@st.composite
def _arguments(draw, tool: Tool) -> dict:
    schema = tool.parameters_schema()
    args = {}
    for k, prop in schema["properties"].items():
        how = draw(st.sampled_from(["omit", "plausible", "plausible", "plausible", "any"]))
        if how == "plausible":
            args[k] = draw(_plausible(prop))
        elif how == "any":
            args[k] = draw(_json)
    if draw(st.integers(0, 9)) == 0:
        args[draw(st.text(min_size=1, max_size=6))] = draw(_json)
    return args


def _call(name: str, args: dict) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def _strings(x):
    """Every string inside ``x`` (dict values and list items, recursively)."""
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list | tuple):
        for v in x:
            yield from _strings(v)


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_schema_valid_iff_the_env_accepts(data):
    name = data.draw(st.sampled_from(NAMES))
    _, tool = TOOLS[name]
    args = data.draw(_arguments(tool))
    published = tool.to_openai()["function"]["parameters"]
    valid = jsonschema.Draft202012Validator(published).is_valid(args)
    parsed = parse_action(_call(name, args), [t for _, t in TOOLS.values()])
    assert (parsed.status is ParseStatus.OK) == valid, (name, args, parsed.error)
    assert (validate_arguments(tool, args)[1] is None) == valid
    if not valid:
        assert parsed.status is ParseStatus.BAD_ARGUMENTS and name in parsed.error
    strict = tool.to_openai(strict=True)["function"]["parameters"]
    full = {k: args.get(k) for k in published["properties"]}  # strict mode always sends every key
    short = all(len(v) <= 5000 for v in _strings(full))  # strict mode drops maxLength
    if jsonschema.Draft202012Validator(strict).is_valid(full) and short:
        assert parse_action(_call(name, full), [tool]).ok, (name, full)


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_strict_mode_compatible(name):
    _, tool = TOOLS[name]
    for strict in (False, True):
        fn = tool.to_openai(strict=strict)["function"]
        params = fn["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert params["additionalProperties"] is False
        if strict:
            assert fn["strict"] is True and sorted(params["required"]) == sorted(params["properties"])
            assert all("default" not in p for p in params["properties"].values())
        for k, p in params["properties"].items():  # optional arguments accept null (= the default)
            if k not in tool.required_names():
                assert "null" in p["type"]


def test_the_reported_disagreements_are_gone():
    env = agentsd.make("ToolWorld-v0", seed=0)
    env.reset()
    bad = _call("calendar__create_event", {"title": "t", "start": "2025-01-01 10:00", "end": "2025-01-01 11:00",
                                           "attendees": [1, 2]})
    _, _, _, _, info = env.step(bad)
    assert info["parse"] == "bad_arguments"  # the schema says an array of strings
    obs, _, _, _, info = env.step(_call("calendar__update_event", {"event_id": 1, "attendees": None}))
    assert info["parse"] == "ok"  # explicit null where the default is null
    assert "name" not in obs[0] and obs[0]["tool_call_id"] == "c1"  # OpenAI's tool message has no name
    obs, _, _, _, info = env.step(_call("api_docs", {"app": None}))
    assert info["parse"] == "ok" and "Apps" in obs[0]["content"]
