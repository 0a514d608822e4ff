"""The policy-backend protocol: token ids in, token ids + text + logprobs out.

Every backend (``hf``, ``openai``, ``vllm``) implements :class:`Policy`. Prompts are token ids
(the rollout engine renders chat messages with the backend's tokenizer and keeps the ids), so what
the model saw is exactly what the trajectory stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentsd.distill.config_fields import _f, check_fields

__all__ = ["SamplingParams", "Generation", "Policy"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; validated on construction."""

    temperature: float = _f(1.0, ge=0, note="(0 = greedy)")
    top_p: float = _f(1.0, gt=0, le=1)
    top_k: int = _f(0, kind=int, ge=0, note="(0 = off)")
    max_tokens: int = _f(256, kind=int, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)


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
