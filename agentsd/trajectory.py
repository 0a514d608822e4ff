"""The trajectory: the unit that flows from rollouts to skills to the trainer.

Token-in/token-out: an episode's token sequence is the concatenation, turn by turn, of the
tokens actually fed to the model (``prompt_ids``: the rendered new observation messages plus the
generation prompt) and the tokens it sampled (``action_ids``). It is never rebuilt by re-rendering
the chat, so teacher and student score the identical action tokens::

    >>> t = Trajectory(env_id="Sokoban-v0", turns=[
    ...     Turn(prompt_ids=[1, 2, 3], action_ids=[4, 5], action_logprobs=[-0.1, -0.2]),
    ...     Turn(prompt_ids=[6], action_ids=[7], action_logprobs=[-0.3])])
    >>> t.token_ids(), t.action_mask()
    ([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 1, 1, 0, 1])
    >>> t.response_ids()  # what follows the first prompt (the teacher scores these)
    [4, 5, 6, 7]
    >>> Trajectory.from_dict(t.to_dict()) == t
    True
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agentsd.types import Message

__all__ = ["SCHEMA_VERSION", "Turn", "Trajectory"]

#: bump when a field changes meaning; readers refuse newer major versions with a clear error
SCHEMA_VERSION = 1


@dataclass
class Turn:
    """One agent turn: what was fed, what was sampled, what the env said."""

    #: new messages the env produced before this action (the reset observation for turn 0)
    observation: list[Message] = field(default_factory=list)
    #: tokens fed before the action this turn (rendered observation + generation prompt)
    prompt_ids: list[int] = field(default_factory=list)
    #: tokens the sampler produced (the action)
    action_ids: list[int] = field(default_factory=list)
    #: the sampler's log-probabilities of ``action_ids`` (same length)
    action_logprobs: list[float] = field(default_factory=list)
    action_text: str = ""
    reward: float = 0.0
    reward_terms: dict[str, float] = field(default_factory=dict)
    parse: str = ""
    #: why generation stopped this turn ("stop", "length", ...)
    finish_reason: str = ""
    #: JSON-safe extra env info for this step
    info: dict[str, Any] = field(default_factory=dict)
    #: seconds: "generate", "env"
    timings: dict[str, float] = field(default_factory=dict)
    #: teacher-only views of the state this turn acted from (``agentsd.hints.turn_views``:
    #: privileged views plus ``reference``, the next gold action in the env's action format);
    #: recorded at rollout time when asked, so the trainer never replays an episode
    privileged: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trajectory:
    """One episode (see the module docstring)."""

    env_id: str = ""
    turns: list[Turn] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    spec_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    task_id: str | None = None
    split: str | None = None
    policy: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    success: bool = False
    total_reward: float = 0.0
    #: a :class:`~agentsd.types.StopReason` value
    stop_reason: str = ""
    #: messages the env produced after the last action (never fed to the model)
    final_observation: list[Message] = field(default_factory=list)
    #: names of the skills the teacher was shown for this episode (filled by the skill stage)
    skills: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def token_ids(self) -> list[int]:
        """The full token sequence as the model saw it."""
        return [t for turn in self.turns for t in (*turn.prompt_ids, *turn.action_ids)]

    def action_mask(self) -> list[int]:
        """1 on sampled action tokens, 0 on env/prompt tokens (aligned with :meth:`token_ids`)."""
        return [m for turn in self.turns
                for m in (*([0] * len(turn.prompt_ids)), *([1] * len(turn.action_ids)))]

    def sampler_logprobs(self) -> list[float]:
        """Sampler log-probs aligned with :meth:`token_ids` (0.0 off the action tokens)."""
        return [x for turn in self.turns
                for x in (*([0.0] * len(turn.prompt_ids)), *turn.action_logprobs)]

    def prompt_len(self) -> int:
        """Length of the first prompt (the task as the student saw it)."""
        return len(self.turns[0].prompt_ids) if self.turns else 0

    def response_ids(self) -> list[int]:
        """Everything after the first prompt: what a teacher with another prefix must score."""
        return self.token_ids()[self.prompt_len():]

    def num_action_tokens(self) -> int:
        return sum(len(t.action_ids) for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        version = int(d.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"trajectory schema v{version} is newer than this agentsd "
                             f"(reads up to v{SCHEMA_VERSION}); upgrade agentsd")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        turn_fields = {f.name for f in fields(Turn)}
        kw["turns"] = [Turn(**{k: v for k, v in t.items() if k in turn_fields})
                       for t in d.get("turns", [])]
        return cls(**kw)
