"""The text-agent env base class: a :class:`gymnasium.Env` whose observations are chat messages.

``reset(seed=…, options=…) -> (messages, info)`` and ``step(action) -> (messages, reward,
terminated, truncated, info)``, where ``messages`` are the *new* OpenAI-format messages this call
produced (the rollout engine appends them to the conversation) and ``action`` is the model's raw
text or an assistant message dict with ``tool_calls``.

Contract for subclasses (``check_env`` verifies it):

- randomness comes only from ``self.np_random`` (seeded by ``super().reset(seed=seed)``);
- a bad action never raises: it yields a feedback message, ``info["parse"]`` and, if the env
  charges one, a ``"format"`` term in ``info["reward_terms"]``;
- ``info`` always holds ``"parse"`` (a :class:`ParseStatus` value), ``"reward_terms"`` (floats
  summing to the reward) and, at the end of an episode, ``"success"`` (bool);
- :meth:`privileged` returns views that never appear in an observation.

A minimal env::

    class Guess(TextEnv):
        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.target = int(self.np_random.integers(10))
            return [self.user("Guess a digit: <answer>d</answer>")], {"task_id": "guess"}

        def step(self, action):
            p = self.parse(action)
            if not p.ok:
                return [self.user(p.error)], -0.1, False, False, self.info(p, format=-0.1)
            win = p.answer == str(self.target)
            return [self.user("right" if win else "wrong")], float(win), True, False, \\
                self.info(p, success=win, solved=float(win))
"""

from __future__ import annotations

import json
import multiprocessing
import string
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

from agentsd.tools import ParsedAction, Tool, parse_action
from agentsd.types import Action, Message, ParseStatus, Privileged

__all__ = ["TextEnv", "ChatSpace", "ActionSpace", "SharedChats"]


class ChatSpace(spaces.Space):
    """The observation space of text envs: a list of chat-message dicts.

    gymnasium's ``AsyncVectorEnv`` (``gymnasium.make_vec(..., vectorization_mode="async")``) passes
    observations through shared memory by default; a ChatSpace observation travels there as JSON
    in a slot of :attr:`shared_memory_bytes` per env (an observation that does not fit raises in
    the worker, naming ``shared_memory=False``, which sends observations through pipes instead).
    """

    #: shared-memory slot per env for gymnasium's async vector env (JSON of one observation)
    shared_memory_bytes: int = 1 << 20

    def __init__(self) -> None:
        super().__init__(shape=None, dtype=None)

    def contains(self, x: Any) -> bool:
        return isinstance(x, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content", ""), str)
            for m in x
        )

    def sample(self, mask: Any = None, probability: Any = None) -> list[Message]:
        return [{"role": "user", "content": ""}]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatSpace)


_LEN_BYTES = 8  # each shared-memory slot: the payload's length, then its UTF-8 JSON


@create_shared_memory.register(ChatSpace)
def _create_chat_shared_memory(space: ChatSpace, n: int = 1, ctx: Any = multiprocessing):
    return ctx.Array("B", n * space.shared_memory_bytes)


@write_to_shared_memory.register(ChatSpace)
def _write_chat_to_shared_memory(space: ChatSpace, index: int, value: list[Message], shared_memory: Any) -> None:
    data = json.dumps(value, ensure_ascii=False).encode()
    room = space.shared_memory_bytes - _LEN_BYTES
    if len(data) > room:
        raise ValueError(
            f"an observation of {len(data)} bytes (JSON) does not fit the {room}-byte shared-memory slot "
            "of ChatSpace; pass vector_kwargs={'shared_memory': False} to gymnasium.make_vec or raise "
            "ChatSpace.shared_memory_bytes")
    slot = np.frombuffer(shared_memory.get_obj(), dtype=np.uint8)[
        index * space.shared_memory_bytes:(index + 1) * space.shared_memory_bytes]
    slot[:_LEN_BYTES] = np.frombuffer(len(data).to_bytes(_LEN_BYTES, "little"), dtype=np.uint8)
    slot[_LEN_BYTES:_LEN_BYTES + len(data)] = np.frombuffer(data, dtype=np.uint8)


@read_from_shared_memory.register(ChatSpace)
def _read_chat_from_shared_memory(space: ChatSpace, shared_memory: Any, n: int = 1) -> SharedChats:
    return SharedChats(space, shared_memory, n)


class SharedChats(Sequence):
    """The batch of observations an async vector env keeps in shared memory: slot ``i`` is decoded
    when read, so this always shows the latest step. A copy (``copy.deepcopy``, which the vector
    env makes unless ``copy=False``) is a plain tuple of message lists, as the sync vector env gives."""

    def __init__(self, space: ChatSpace, shared_memory: Any, n: int) -> None:
        self.space, self.shared_memory, self.n = space, shared_memory, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(self.n)))
        if not -self.n <= i < self.n:
            raise IndexError(i)
        size = self.space.shared_memory_bytes
        slot = np.frombuffer(self.shared_memory.get_obj(), dtype=np.uint8)[(i % self.n) * size:(i % self.n + 1) * size]
        length = int.from_bytes(slot[:_LEN_BYTES].tobytes(), "little")
        return json.loads(slot[_LEN_BYTES:_LEN_BYTES + length].tobytes()) if length else []

    def __deepcopy__(self, memo: dict) -> tuple[list[Message], ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedChats({list(self)!r})"


class ActionSpace(spaces.Text):
    """The action space of text envs: any string up to ``max_length`` characters (any Unicode, not
    only gymnasium's default alphanumeric charset) or an assistant message dict (``content`` text
    and/or ``tool_calls``). ``sample()`` draws printable ASCII, which an env must survive."""

    def __init__(self, max_length: int, seed: Any = None) -> None:
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return len(x) <= self.max_length
        if not (isinstance(x, dict) and x.get("role", "assistant") == "assistant"):
            return False
        content, calls = x.get("content"), x.get("tool_calls")
        return (content is None or isinstance(content, str | list)) and (calls is None or isinstance(calls, list))

    def __repr__(self) -> str:
        return f"ActionSpace(max_length={self.max_length})"


class TextEnv(gymnasium.Env):
    """Base class for multi-turn text envs (see the module docstring for the contract)."""

    # text has no frame rate; gymnasium's checker warns when render_fps is missing
    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    #: tools this env offers (empty for envs that take plain-text answers)
    tools: tuple[Tool, ...] = ()
    #: actions longer than this are rejected with ``ParseStatus.TOO_LONG``
    max_action_chars: int = 20_000

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = ChatSpace()
        self.action_space = ActionSpace(self.max_action_chars)
        self._pending_seed: int | None = None
        #: the seed of the current episode (``None`` when reset without one)
        self.episode_seed: int | None = None

    # ---- helpers for subclasses -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Seed ``self.np_random``. A seed given to ``make(id, seed=…)`` applies to the first
        reset that passes none."""
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        self.episode_seed = seed
        super().reset(seed=seed)
        return [], {}

    def parse(self, action: Action) -> ParsedAction:
        """Parse ``action`` with the shared parser against this env's tools."""
        # an env without tools still rejects tool calls (as unknown tools)
        return parse_action(action, list(self.tools), max_chars=self.max_action_chars)

    @staticmethod
    def user(content: str) -> Message:
        return {"role": "user", "content": content}

    @staticmethod
    def system(content: str) -> Message:
        return {"role": "system", "content": content}

    @staticmethod
    def tool_result(content: str, call_id: str | None = None, name: str | None = None) -> Message:
        """An OpenAI tool message answering the call ``call_id``. ``name`` is accepted but not
        written: OpenAI's tool message has no ``name`` key (``tool_call_id`` identifies the call)."""
        msg: Message = {"role": "tool", "content": content}
        if call_id:
            msg["tool_call_id"] = call_id
        return msg

    @staticmethod
    def info(parsed: ParsedAction | ParseStatus, success: bool | None = None,
             **reward_terms: float) -> dict[str, Any]:
        """The standard ``info`` dict: parse status, reward terms and (at the end) success."""
        status = parsed.status if isinstance(parsed, ParsedAction) else parsed
        out: dict[str, Any] = {
            "parse": status.value,
            "reward_terms": {k: float(v) for k, v in reward_terms.items()},
        }
        if success is not None:
            out["success"] = bool(success)
        return out

    # ---- to override ------------------------------------------------------------------------
    def privileged(self) -> Privileged:
        """Privileged views for the current episode (teacher-only)."""
        return Privileged()

    def example_actions(self) -> list[Action]:
        """A few well-formed actions for this env (``check_env`` plays them)."""
        return []

    def oracle_action(self) -> Action | None:
        """An action that follows the privileged plan from the current state, or ``None`` when
        the env has no oracle. Demos and tests use it; it never reaches a student."""
        return None

    def render(self) -> str | None:
        """With ``render_mode="ansi"``: a line naming the env and the current task (envs with a
        picture to show, like Sokoban's board, override this)."""
        if self.render_mode != "ansi":
            return None
        name = self.spec.id if self.spec is not None else type(self).__name__
        return f"{name}: task {self.task_id}"

    @property
    def task_id(self) -> str | None:
        """An id of the current task (for grouping trajectories), or ``None``."""
        return None

    def openai_tools(self) -> list[dict[str, Any]]:
        """This env's tools as OpenAI ``tools=[...]`` schemas."""
        return [t.to_openai() for t in self.tools]
