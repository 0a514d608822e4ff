"""The policy-backend protocol: token ids in, token ids + text + logprobs out.

Every backend (``hf``, ``openai``, ``vllm``) implements :class:`Policy`. Prompts are token ids
(the rollout engine renders chat messages with the backend's tokenizer and keeps the ids), so what
the model saw is exactly what the trajectory stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["SamplingParams", "Generation", "Policy"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; validated on construction."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Generation:
    """One sampled continuation."""

    token_ids: list[int]
    #: log-probabilities of ``token_ids`` under the sampling distribution the backend reports
    logprobs: list[float]
    text: str
    #: "stop" (EOS or a stop string), "length" (max_tokens) or "abort"
    finish_reason: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """What the rollout engine, skill summarizer and evaluation need from a model."""

    #: a short id recorded in trajectories (e.g. "hf:SmolLM2-135M-Instruct")
    model_id: str
    #: a transformers tokenizer (chat template, encode/decode)
    tokenizer: Any

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Sample one continuation per prompt (batched)."""
        ...
