"""Chat rendering, token-in/token-out: observation messages become prompt token ids with the
tokenizer's chat template, and later turns render only the *suffix* after the model's own action
tokens, so a trajectory is never re-rendered. The rollout engine (:mod:`agentsd.rollout`), the
demonstrations and the teacher's rows (:mod:`agentsd.teacher_context`) all render through
:class:`ChatRenderer`, so their token ids agree.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

from agentsd.types import Message

__all__ = ["ChatRenderer"]


#: stands in for the last action when rendering; private-use code points cannot collide with text
_SENTINEL = "\ue000agentsd-action\ue001"


class ChatRenderer:
    """Turns observation messages into prompt token ids with the tokenizer's chat template.

    The first prompt is the rendered observation plus the generation prompt. For later turns the
    model has already seen everything up to the end of its own action tokens, so only the
    *suffix* is rendered: the template's closing of the assistant turn, the new messages and the
    next generation prompt. Chat templates cannot render a suffix on their own, so the
    conversation is rendered twice with a placeholder for the last action — without the new
    messages and with them — and the suffix is what follows the placeholder. The renderer checks
    that the first rendering is a prefix of the second (``prefix_mismatches`` counts templates
    that rewrite earlier turns, such as ones that drop past reasoning; the suffix is still what
    follows the placeholder). Closing tokens the model already sampled (its EOS, e.g.
    ``<|im_end|>``) are not repeated.
    """

    def __init__(self, tokenizer: Any, tools: list[dict[str, Any]] | None = None) -> None:
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.prefix_mismatches = 0
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._lock = threading.Lock()  # fast tokenizers must not be used from two threads at once

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        kw: dict[str, Any] = {"tools": self.tools} if self.tools else {}
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    def first(self, messages: list[Message]) -> list[int]:
        """Prompt ids for the first turn."""
        if not messages:
            raise ValueError("the env's reset returned no messages; the model needs a prompt")
        return self.encode(self.render(list(messages), add_generation_prompt=True))

    def next(self, history: list[Message], new_messages: list[Message],
             action_ids: Sequence[int]) -> list[int]:
        """Prompt ids after an action: ``history`` is the conversation before that action,
        ``new_messages`` what the env answered, ``action_ids`` the sampled action tokens."""
        base = [*history, {"role": "assistant", "content": _SENTINEL}]
        without = self.render(base, add_generation_prompt=False)
        with_new = self.render([*base, *new_messages], add_generation_prompt=True)
        if with_new.count(_SENTINEL) != 1:
            raise ValueError("the chat template did not render the assistant message exactly "
                             "once; cannot find the suffix to feed after the action")
        if not with_new.startswith(without):
            self.prefix_mismatches += 1
            if self.prefix_mismatches == 1:
                warnings.warn("the chat template renders earlier turns differently once new "
                              "messages follow; feeding the suffix after the action as rendered "
                              "with the new messages", stacklevel=2)
        tail = self.encode(with_new[with_new.index(_SENTINEL) + len(_SENTINEL):])
        return tail[self._overlap(action_ids, tail):]

    def _overlap(self, action_ids: Sequence[int], tail: list[int]) -> int:
        # the model's own closing special tokens (EOS) are already in the sequence
        for k in (2, 1):
            if (len(action_ids) >= k and list(action_ids[-k:]) == tail[:k]
                    and all(t in self._special for t in tail[:k])):
                return k
        return 0
