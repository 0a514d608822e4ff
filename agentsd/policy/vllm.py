"""The ``vllm`` backend: the in-process vLLM engine (GPU; ``pip install 'agentsd[vllm]'``).

    policy = VLLMPolicy("Qwen/Qwen3-0.6B", gpu_memory_utilization=0.4)
    gens = policy.generate([prompt_ids], SamplingParams(max_tokens=128, seed=0))
    policy.push_weights(student)          # the trainer syncs the sampler after every update

Token-id prompts in (``TokensPrompt``), sampled token ids and their logprobs out (``logprobs=0``
asks vLLM for the sampled token's logprob only).

**Which log-probs.** vLLM >= 0.10.2 reports ``logprobs_mode``: by default ``raw_logprobs`` (the
model's ``log_softmax(logits)``, before temperature and top-k/top-p). The trainer's importance
weight needs the distribution the tokens were drawn from, so the engine is built with
``logprobs_mode="processed_logprobs"`` where vLLM has it; :attr:`VLLMPolicy.logprobs` records
which convention the engine returns (``"processed"`` or ``"raw"``) and the sampler layer
(:mod:`agentsd.distill.samplers`) refuses raw ones when temperature != 1 or top-p < 1.

**Weight sync.** vLLM's ``load_weights`` takes Hugging Face checkpoint names
(``model.layers.0.self_attn.q_proj.weight``) and stacks q/k/v and gate/up itself. A PEFT model's
parameters are named ``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` /
``...lora_A.default.weight``, which vLLM cannot map, so :func:`merged_hf_weights` pushes each
LoRA-wrapped projection's *merged* weight ``W + scale * B @ A`` under its plain HF name (only those
projections change during LoRA training; full fine-tuning pushes every parameter).

Status: the engine path is **untested** here (no GPU, no vLLM); :func:`merged_hf_weights` is
unit-tested on CPU (tests/test_samplers.py). ``push_weights`` uses ``LLM.apply_model``
(vLLM >= 0.8) or the V0 driver-worker path; other versions may need ``collective_rpc``.
"""

from __future__ import annotations

from typing import Any

from agentsd.policy.base import Generation, SamplingParams

__all__ = ["VLLMPolicy", "merged_hf_weights", "hf_name", "vllm_missing_message"]


def vllm_missing_message() -> str | None:
    """``None`` when vLLM is importable here, else the one-line error saying what to do."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return None
    return ("vLLM is not installed here: pip install 'agentsd[vllm]' on a CUDA machine, or use "
            "--rollout.sampler hf (in-process) or openai (vLLM servers, --rollout.servers URL)")


def hf_name(peft_name: str) -> str:
    """A PEFT parameter/module name as the plain Hugging Face checkpoint names it.

    >>> hf_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
    'model.layers.0.self_attn.q_proj.weight'
    >>> hf_name("model.embed_tokens.weight")
    'model.embed_tokens.weight'
    """
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


def merged_hf_weights(model: Any, changed_only: bool = True) -> list[tuple[str, Any]]:
    """``(hf_name, tensor)`` pairs a vLLM engine can ``load_weights``: for a PEFT LoRA model each
    adapted projection's merged weight (``changed_only=False`` adds every other base weight), for
    a plain model its parameters as they are. Tensors are detached; nothing in ``model`` changes."""
    import torch

    if not hasattr(model, "peft_config"):
        return [(n, p.detach()) for n, p in model.named_parameters()]
    out: list[tuple[str, Any]] = []
    merged: set[str] = set()
    with torch.no_grad():
        for name, mod in model.named_modules():
            lora_a = getattr(mod, "lora_A", None)
            if lora_a is None or not hasattr(mod, "base_layer") or not hasattr(mod, "get_delta_weight"):
                continue
            w = mod.base_layer.weight.detach().clone()
            for adapter in getattr(mod, "active_adapters", ["default"]):
                if adapter in lora_a:
                    w += mod.get_delta_weight(adapter).to(w.dtype)
            key = hf_name(name) + ".weight"
            out.append((key, w))
            merged.add(key)
    if not changed_only:
        seen = {id(t) for _, t in out}
        for n, p in model.named_parameters():
            key = hf_name(n)
            if "lora_" in n or key in merged or id(p) in seen:
                continue
            out.append((key, p.detach()))
    return out


class VLLMPolicy:
    """A :class:`~agentsd.policy.base.Policy` over ``vllm.LLM`` (engine kwargs pass through)."""

    def __init__(self, model: str, processed_logprobs: bool = True, **engine_kwargs: Any) -> None:
        msg = vllm_missing_message()
        if msg:
            raise ImportError(msg)
        from vllm import LLM

        from agentsd.policy.models import resolve_model

        ref = resolve_model(model)
        if ref.gguf_file:
            engine_kwargs.setdefault("tokenizer", ref.path)
            path = f"{ref.path}/{ref.gguf_file}"
        else:
            path = ref.path
        #: which log-probs the engine returns: "processed" (of the sampling distribution) or "raw"
        self.logprobs = "raw"
        if processed_logprobs and "logprobs_mode" not in engine_kwargs:
            try:
                self.llm = LLM(model=path, logprobs_mode="processed_logprobs", **engine_kwargs)
                self.logprobs = "processed"
            except TypeError:  # vLLM < 0.10.2: no logprobs_mode, raw log-probs
                self.llm = LLM(model=path, **engine_kwargs)
        else:
            self.llm = LLM(model=path, **engine_kwargs)
            if "processed" in str(engine_kwargs.get("logprobs_mode", "")):
                self.logprobs = "processed"
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

    def push_weights(self, model_or_named_tensors: Any, changed_only: bool = True) -> int:
        """Load updated weights into the engine, so the next rollouts sample from the trainer's
        current policy: a model (PEFT LoRA adapters merged and renamed, see
        :func:`merged_hf_weights`; ``changed_only=False`` also pushes the weights LoRA leaves
        alone) or an iterable of ``(hf_name, tensor)``. Returns the number of tensors pushed."""
        if hasattr(model_or_named_tensors, "named_parameters"):
            weights = merged_hf_weights(model_or_named_tensors, changed_only=changed_only)
        else:
            weights = [(n, t.detach()) for n, t in model_or_named_tensors]
        _load_into_engine(self.llm, weights)
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        return len(weights)


def _load_into_engine(llm: Any, weights: list[tuple[str, Any]]) -> None:
    if hasattr(llm, "apply_model"):
        llm.apply_model(lambda m: m.load_weights(weights))
    else:
        llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(weights)
