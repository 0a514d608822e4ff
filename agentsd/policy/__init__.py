"""Policy backends: one protocol (:class:`~agentsd.policy.base.Policy`) for ``hf``, ``openai``
and ``vllm``."""

from agentsd.policy.base import Generation, Policy, SamplingParams

__all__ = ["Generation", "Policy", "SamplingParams"]
