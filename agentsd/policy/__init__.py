"""Policy backends: one protocol (:class:`~agentsd.policy.base.Policy`) for ``hf``, ``openai``
and ``vllm``.

    >>> from agentsd.policy import HFPolicy, SamplingParams   # doctest: +SKIP
    >>> policy = HFPolicy(model, tokenizer)                   # wrap an in-memory model  # doctest: +SKIP
    >>> policy = load_policy("hf", "smollm2")                 # or load one by name  # doctest: +SKIP

Backends import their heavy dependencies (torch, transformers, httpx, vllm) only when used.
"""

from __future__ import annotations

from typing import Any

from agentsd.policy.base import Generation, Policy, SamplingParams
from agentsd.policy.hf import HFPolicy
from agentsd.policy.models import ModelNotFoundError, resolve_model

__all__ = ["Generation", "Policy", "SamplingParams", "HFPolicy", "ModelNotFoundError",
           "resolve_model", "load_policy", "BACKENDS"]

#: backend name -> what it is
BACKENDS = {
    "hf": "transformers in this process (CPU or GPU)",
    "openai": "an OpenAI-compatible HTTP server (vLLM serve, SGLang, llama.cpp server)",
    "vllm": "the in-process vLLM engine (GPU, optional extra agentsd[vllm])",
}


def load_policy(backend: str, model: str = "smollm2", **kwargs: Any) -> Policy:
    """Build a policy by backend name. ``kwargs`` go to the backend (``hf``: ``device``,
    ``dtype``; ``openai``: ``base_url``, ``api_key``, ``tokenizer``, ...; ``vllm``: engine
    arguments)."""
    if backend == "hf":
        return HFPolicy.from_pretrained(model, **kwargs)
    if backend == "openai":
        from agentsd.policy.openai import OpenAIPolicy

        return OpenAIPolicy(model=model, **kwargs)
    if backend == "vllm":
        from agentsd.policy.vllm import VLLMPolicy

        return VLLMPolicy(model, **kwargs)
    raise ValueError(f"unknown policy backend {backend!r}; choose one of {sorted(BACKENDS)}")
