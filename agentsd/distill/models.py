"""Building the trainable student: the embedded model or a tiny random-weight one, with LoRA.

``tiny_random_model`` gives a real transformers Llama with random weights (any vocabulary size,
e.g. the SmolLM2 tokenizer's) for tests and CPU smoke runs; ``random_model_like`` builds a
random-weight model from a named model's config (benchmarks of real sizes without the weights);
``with_lora`` wraps a model in a PEFT LoRA adapter.
"""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_random_model", "random_model_like", "with_lora", "LORA_TARGETS"]

#: projection names LoRA attaches to in Llama-style decoders
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_random_model(vocab_size: int = 256, hidden_size: int = 32, layers: int = 2,
                      heads: int = 4, seed: int = 0, init_std: float = 0.02,
                      max_positions: int = 4096, eos_token_id: int | None = None) -> Any:
    """A random-weight ``LlamaForCausalLM`` (tied embeddings) on CPU, deterministic per seed.
    ``init_std`` scales the random weights: larger values give peakier, more prompt-dependent
    next-token distributions (useful when a test needs the prompt to matter)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                      intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                      num_attention_heads=heads,
                      num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=True,
                      initializer_range=init_std, eos_token_id=eos_token_id,
                      pad_token_id=eos_token_id)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(gen_state)  # building a model must not shift the caller's RNG
    return model.eval()


def random_model_like(name: str, layers: int | None = None, dtype: Any = None) -> Any:
    """A random-weight model with the config of ``name`` (resolved like the policy backends);
    ``layers`` overrides the depth."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from agentsd.policy.models import resolve_model

    ref = resolve_model(name)
    cfg = AutoConfig.from_pretrained(ref.path, **ref.from_pretrained_kwargs())
    if layers is not None:
        cfg.num_hidden_layers = layers
    kw = {"dtype": dtype} if dtype is not None else {}
    return AutoModelForCausalLM.from_config(cfg, **kw).eval()


def with_lora(model: Any, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
              targets: tuple[str, ...] = LORA_TARGETS) -> Any:
    """Wrap ``model`` in a PEFT LoRA adapter named ``default`` on the ``targets`` projections
    that exist in it (B starts at zero, so the wrapped model computes what the base does)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    present = [t for t in targets if t in names]
    if not present:
        raise ValueError(f"none of the LoRA targets {targets} is a module of {type(model).__name__}; "
                         f"pass targets= with its projection names")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=present,
                     bias="none", task_type="CAUSAL_LM")
    import warnings

    with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, cfg)
