"""The ``vllm`` backend: the in-process vLLM engine (GPU; ``pip install 'agentsd[vllm]'``).

    policy = VLLMPolicy("Qwen/Qwen3-0.6B", gpu_memory_utilization=0.4)
    gens = policy.generate([prompt_ids], SamplingParams(max_tokens=128, seed=0))
    policy.push_weights(student.named_parameters())      # the trainer syncs the sampler

Thin on purpose: token-id prompts in (``TokensPrompt``), sampled token ids and their logprobs
out (``logprobs=0`` asks vLLM for the sampled token's logprob only; vLLM reports the model's
distribution as its version defines it — check ``logprobs_mode`` on vLLM >= 0.10 if the trainer's
importance weights need the processed one). ``vllm`` is imported only when this class is built.

Status: this module is **untested** — the project's CI and development machines have no GPU
and no vLLM. The weight push uses ``LLM.apply_model`` (vLLM >= 0.8) or the V0 driver-worker
path; other vLLM versions may need another route (``collective_rpc`` with a worker extension).
"""

from __future__ import annotations

from typing import Any

from agentsd.policy.base import Generation, SamplingParams

__all__ = ["VLLMPolicy"]


class VLLMPolicy:
    """A :class:`~agentsd.policy.base.Policy` over ``vllm.LLM`` (engine kwargs pass through)."""

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vllm backend needs vLLM on a CUDA machine: pip install "
                              "'agentsd[vllm]' (or use --backend hf / openai)") from e
        from agentsd.policy.models import resolve_model

        ref = resolve_model(model)
        if ref.gguf_file:
            engine_kwargs.setdefault("tokenizer", ref.path)
            path = f"{ref.path}/{ref.gguf_file}"
        else:
            path = ref.path
        self.llm = LLM(model=path, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id = f"vllm:{ref.model_id}"
        self.context_length = getattr(self.llm.llm_engine.model_config, "max_model_len", None)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        import vllm

        sp = vllm.SamplingParams(temperature=params.temperature, top_p=params.top_p,
                                 top_k=params.top_k if params.top_k else -1,
                                 max_tokens=params.max_tokens, stop=list(params.stop) or None,
                                 seed=params.seed, logprobs=0, skip_special_tokens=True)
        try:
            from vllm.inputs import TokensPrompt
            inputs: Any = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        except ImportError:  # old vLLM
            inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        outs = self.llm.generate(inputs, sp, use_tqdm=False)
        gens = []
        for o in outs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            lps = [float(d[t].logprob) for t, d in zip(ids, c.logprobs or [])] if c.logprobs else []
            gens.append(Generation(ids, lps, c.text, "length" if c.finish_reason == "length" else "stop"))
        return gens

    def push_weights(self, named_tensors: Any) -> None:
        """Load updated weights (an iterable of ``(name, tensor)``, HF parameter names) into the
        engine, so the next rollouts sample from the trainer's current policy."""
        weights = [(n, t.detach()) for n, t in named_tensors]
        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(lambda m: m.load_weights(weights))
        else:
            self.llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(weights)
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
