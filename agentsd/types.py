"""The small shared vocabulary every stage relies on: messages, parse statuses, stop reasons,
privileged views.

Observations are lists of OpenAI-format chat messages (the *new* messages produced by one
``reset`` or ``step``); actions are the model's raw text or an assistant message dict::

    >>> from agentsd.types import Privileged, ParseStatus
    >>> p = Privileged(answer="42", notes="the sum overflows int8")
    >>> sorted(p.views())
    ['answer', 'notes']
    >>> ParseStatus.OK.value
    'ok'
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

__all__ = ["Message", "Action", "ParseStatus", "StopReason", "Privileged"]


class Message(TypedDict, total=False):
    """One OpenAI-format chat message (``role`` and ``content``; ``tool_calls`` / ``name`` /
    ``tool_call_id`` where relevant)."""

    role: str
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str
    name: str


#: What an env accepts in ``step``: raw model text or an assistant message dict.
Action = str | dict


class ParseStatus(str, enum.Enum):
    """How an action parsed. Anything but ``OK`` comes with a feedback observation."""

    OK = "ok"
    NO_ACTION = "no_action"  # no recognizable action in the text
    INVALID_JSON = "invalid_json"  # a tool call whose JSON does not parse
    UNKNOWN_TOOL = "unknown_tool"  # a tool name the env does not offer
    BAD_ARGUMENTS = "bad_arguments"  # arguments missing, extra or of the wrong type
    INVALID_ACTION = "invalid_action"  # parsed, but not a legal action for this env
    TOO_LONG = "too_long"  # exceeded the env's action-length cap
    BAD_TYPE = "bad_type"  # neither text nor a message dict


class StopReason(str, enum.Enum):
    """Every way an episode can end (recorded in trajectories)."""

    TERMINATED = "terminated"  # the env said the episode is over (solved, submitted, failed)
    MAX_TURNS = "max_turns"  # the turn limit truncated the episode
    MAX_TOKENS = "max_tokens"  # the episode's token budget ran out
    CONTEXT_LENGTH = "context_length"  # the next prompt would not fit the model's context
    PARSE_FAILURES = "parse_failures"  # too many unparseable actions in a row
    ERROR = "error"  # infrastructure failure (env or backend raised)


@dataclass
class Privileged:
    """Privileged views of the current episode. They condition the teacher only and must never
    appear in an observation (``check_env`` proves it for every registered env).

    ``next_step`` is step-wise: an env fills it from the state reached so far (for example the
    next moves of an optimal plan), so a teacher context can change turn by turn.
    ``construction`` is π-Play's view, for envs whose tasks are generated: the steps by which
    the task was built (the template drawn, the facts planted, what the grader was set to check).
    """

    answer: str | None = None
    solution: str | None = None
    plan: list[str] | None = None
    next_step: str | None = None
    hidden_tests: str | None = None
    notes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    construction: list[str] | None = None

    def views(self) -> dict[str, Any]:
        """The non-empty views by name (``extra`` entries included)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra" and v not in (None, "", [])}
        out.update({k: v for k, v in self.extra.items() if v not in (None, "", [])})
        return out

    def secrets(self, min_len: int = 8) -> list[str]:
        """Strings that must not leak into observations. Short ones are skipped: a two-letter
        answer or a one-move plan cannot be told apart from ordinary text. A list view (a plan)
        counts as its space-joined form and as each long item."""
        out: list[str] = []
        for v in self.views().values():
            if isinstance(v, str):
                if len(v.strip()) >= min_len:
                    out.append(v.strip())
            elif isinstance(v, list | tuple) and all(isinstance(i, str) for i in v):
                joined = " ".join(i.strip() for i in v)
                if len(joined) >= 2 * min_len:
                    out.append(joined)
                out.extend(i.strip() for i in v if len(i.strip()) >= 2 * min_len)
        return out
