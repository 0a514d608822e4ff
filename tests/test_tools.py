"""The shared action parser: every format models emit, and every way it can go wrong."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agentsd.tools import Tool, parse_action
from agentsd.types import ParseStatus

ADD = Tool("add", "Add two integers.", {"a": "integer", "b": "integer"})
NOTE = Tool("note", "Write a note.", {"text": "string", "tag": {"type": "string", "default": "x"}})
TOOLS = [ADD, NOTE]


def test_openai_tool_calls_message():
    msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    p = parse_action(msg, TOOLS)
    assert p.status is ParseStatus.OK
    assert p.tool_calls[0].name == "add" and p.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert p.tool_calls[0].id == "c1"


def test_hermes_tags_several_calls():
    text = ('thinking...<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>\n'
            '<tool_call>{"name": "note", "arguments": {"text": "hi"}}</tool_call>')
    p = parse_action(text, TOOLS)
    assert p.ok and [c.name for c in p.tool_calls] == ["add", "note"]


def test_answer_tag_last_wins():
    p = parse_action("<answer>1</answer> no wait <answer> 2 </answer>")
    assert p.ok and p.answer == "2"


def test_statuses():
    assert parse_action("just words", TOOLS).status is ParseStatus.NO_ACTION
    assert parse_action("<tool_call>{bad</tool_call>", TOOLS).status is ParseStatus.INVALID_JSON
    assert parse_action('<tool_call>{"name": "sub", "arguments": {}}</tool_call>', TOOLS).status \
        is ParseStatus.UNKNOWN_TOOL
    bad = parse_action('<tool_call>{"name": "add", "arguments": {"a": "1", "b": 2}}</tool_call>', TOOLS)
    assert bad.status is ParseStatus.BAD_ARGUMENTS and "'a' of add must be integer, got string" in bad.error
    missing = parse_action('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>', TOOLS)
    assert missing.status is ParseStatus.BAD_ARGUMENTS and "missing" in missing.error
    extra = parse_action('<tool_call>{"name": "note", "arguments": {"text": "a", "z": 1}}</tool_call>', TOOLS)
    assert extra.status is ParseStatus.BAD_ARGUMENTS and "unexpected" in extra.error
    boolint = parse_action('<tool_call>{"name": "add", "arguments": {"a": true, "b": 2}}</tool_call>', TOOLS)
    assert boolint.status is ParseStatus.BAD_ARGUMENTS
    assert parse_action(None).status is ParseStatus.BAD_TYPE
    assert parse_action("x" * 11, max_chars=10).status is ParseStatus.TOO_LONG


def test_optional_argument_and_schema():
    p = parse_action('<tool_call>{"name": "note", "arguments": {"text": "a"}}</tool_call>', TOOLS)
    assert p.ok
    schema = NOTE.to_openai()
    assert schema["function"]["parameters"]["required"] == ["text"]
    assert schema["function"]["parameters"]["properties"]["tag"]["default"] == "x"
    json.dumps(schema)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                 st.builds(lambda n, a: f'<tool_call>{{"name": {json.dumps(n)}, "arguments": {a}}}</tool_call>',
                           st.text(max_size=10), st.sampled_from(["{}", "[]", "1", '{"a": 1}', "{", '"s"']))))
def test_fuzzed_actions_never_raise(action):
    p = parse_action(action, TOOLS)
    assert isinstance(p.status, ParseStatus)
    assert p.ok or p.error
