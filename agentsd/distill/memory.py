"""Memory chosen for the user: the micro-batch size and gradient checkpointing from a budget.

An update holds the weights, the gradients and optimizer state of the trainable tensors, and
the activations of one micro-batch, which grow with its tokens; the teacher's no-grad forward
and the chunked output head add a transient. :func:`choose` estimates each from the model's
config and picks, within ``--optim.memory-budget-gb`` (0: a safe share of the machine, half of
the available RAM or 80% of the free GPU memory):

1. without gradient checkpointing, the largest micro-batch that fits, if it holds at least
   :data:`MIN_TOKENS` tokens (a typical episode);
2. else, with gradient checkpointing (a layer keeps only its input; the backward recomputes
   it), the largest micro-batch that fits.

An explicit flag wins: ``--optim.max-tokens-per-micro-batch`` other than its default is kept
(checkpointing is switched on only if that micro-batch does not fit without it), and
``--model.gradient-checkpointing true`` is kept. ``--optim.memory-budget-gb -1`` turns the
choice off (the flags as given). The estimate is deliberately generous (a safety factor on
the activations), so a budget is a ceiling, not a target.

>>> rule = MemoryChoice(budget_gb=8.0, source="--optim.memory-budget-gb", fixed_gb=1.0,
...                     act_mb_per_token=1.5, act_mb_per_token_checkpointed=0.2,
...                     max_tokens_per_micro_batch=4608, gradient_checkpointing=False)
>>> rule.line()  # doctest: +NORMALIZE_WHITESPACE
'memory: budget 8.0 GB (--optim.memory-budget-gb); weights+optimizer+transients 1.0 GB;
 micro-batch 4608 tokens, gradient checkpointing off (1.50 MB/token; checkpointed 0.20)'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["MemoryChoice", "choose", "resolve", "machine_budget_gb", "check_rows", "MIN_TOKENS"]

log = logging.getLogger(__name__)

#: the smallest micro-batch worth running without checkpointing (about one ToolWorld episode)
MIN_TOKENS = 2048
#: the default of ``--optim.max-tokens-per-micro-batch``: another value is the user's choice
DEFAULT_TOKENS = 4096
#: chosen micro-batches are multiples of this and at most :data:`MAX_TOKENS`
STEP, MAX_TOKENS = 256, 32768
#: margin on the activation estimate (allocator slack, kernels' workspaces)
SAFETY = 1.3
GB = 1024 ** 3


@dataclass(frozen=True)
class MemoryChoice:
    """What :func:`choose` picked and why (all sizes in GB / MB per token)."""

    budget_gb: float
    source: str
    fixed_gb: float
    act_mb_per_token: float
    act_mb_per_token_checkpointed: float
    max_tokens_per_micro_batch: int
    gradient_checkpointing: bool
    kept: tuple[str, ...] = ()

    def line(self) -> str:
        """The one line printed and logged at the first update."""
        kept = f"; kept {', '.join(self.kept)}" if self.kept else ""
        return (f"memory: budget {self.budget_gb:.1f} GB ({self.source}); weights+optimizer+"
                f"transients {self.fixed_gb:.1f} GB; micro-batch {self.max_tokens_per_micro_batch} "
                f"tokens, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'} "
                f"({self.act_mb_per_token:.2f} MB/token; checkpointed "
                f"{self.act_mb_per_token_checkpointed:.2f}){kept}")


def machine_budget_gb(device: Any = "cpu") -> tuple[float, str]:
    """A safe share of the machine: 80% of the free memory of a CUDA device, else half of
    the RAM available now (other processes keep theirs)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return 0.8 * free / GB, f"auto: 80% of {free / GB:.1f} GB free on {dev}"
    avail = _available_ram()
    return 0.5 * avail / GB, f"auto: half of {avail / GB:.1f} GB available RAM"


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2


def _shape(model: Any) -> dict[str, int]:
    c = model.config
    c = c.get_text_config() if hasattr(c, "get_text_config") else c
    D = int(c.hidden_size)
    heads = int(getattr(c, "num_attention_heads", 1) or 1)
    kv = int(getattr(c, "num_key_value_heads", heads) or heads)
    return {"D": D, "I": int(getattr(c, "intermediate_size", 4 * D) or 4 * D),
            "L": int(c.num_hidden_layers), "V": int(c.vocab_size), "kvD": D * kv // heads}


def _estimates(model: Any, cfg: Any, act_bytes: int) -> tuple[float, float, float]:
    """``(fixed bytes, activation bytes per token, the same checkpointed)``."""
    s = _shape(model)
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    # fp32 gradient + AdamW's two moments; a teacher snapshot (ema / sync / frozen without LoRA)
    opt = trainable * 4 * 3 + (trainable * 4 if cfg.teacher.mode != "live" else 0)
    head = cfg.loss.chunk_size * s["V"] * 4 * 3  # a chunk of fp32 logits, its softmax and grad
    teacher = min(cfg.teacher.max_tokens_per_forward, 8192) * (4 * s["D"] + 3 * s["I"]) * act_bytes
    fixed = weights + opt + head + teacher + 0.5 * GB  # the interpreter, tokenizer, envs
    # saved for backward per layer and token: norms, q/k/v, attention in/out, the MLP's gate,
    # up, activation and product (LoRA's rank-r inputs are negligible)
    per_layer = 10 * s["D"] + 4 * s["kvD"] + 4 * s["I"]
    act = SAFETY * s["L"] * per_layer * act_bytes
    act_ckpt = SAFETY * (s["L"] * s["D"] + per_layer) * act_bytes
    return fixed, act, act_ckpt


def choose(model: Any, cfg: Any) -> MemoryChoice | None:
    """The micro-batch size and checkpointing for ``cfg.optim.memory_budget_gb`` (see the
    module docstring); ``None`` when the choice is off (a negative budget). Raises a one-line
    ``ValueError`` when the budget does not hold the weights and optimizer state."""
    import torch

    oc, mc = cfg.optim, cfg.model
    if oc.memory_budget_gb < 0:
        return None
    dev = next(model.parameters()).device
    if oc.memory_budget_gb > 0:
        budget, source = oc.memory_budget_gb, "--optim.memory-budget-gb"
    else:
        budget, source = machine_budget_gb(dev)
    bf16 = dev.type == "cuda" and mc.dtype in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    fixed, act, act_ckpt = _estimates(model, cfg, 2 if bf16 else 4)
    room = budget * GB - fixed
    if room < act_ckpt * STEP:
        raise ValueError(f"--optim.memory-budget-gb {budget:.1f}: the weights, optimizer state and "
                         f"transients alone take ~{fixed / GB:.1f} GB; raise the budget")
    kept: list[str] = []
    explicit_tokens = oc.max_tokens_per_micro_batch != DEFAULT_TOKENS
    if explicit_tokens:
        kept.append("--optim.max-tokens-per-micro-batch")
        tokens = oc.max_tokens_per_micro_batch
        gc = bool(mc.gradient_checkpointing) or tokens * act > room
    elif mc.gradient_checkpointing or room / act < MIN_TOKENS:
        gc, tokens = True, _round(room / act_ckpt)
    else:
        gc, tokens = False, _round(room / act)
    if mc.gradient_checkpointing:
        kept.append("--model.gradient-checkpointing")
    return MemoryChoice(budget, source, fixed / GB, act / 2 ** 20, act_ckpt / 2 ** 20, int(tokens),
                        gc, tuple(kept))


def _round(tokens: float) -> int:
    return int(max(STEP, min(MAX_TOKENS, int(tokens) // STEP * STEP)))


def resolve(model: Any, cfg: Any) -> MemoryChoice | None:
    """:func:`choose` once per model (later updates reuse it): switches gradient checkpointing
    on when chosen, prints and logs the choice."""
    done = getattr(model, "_agentsd_memory", None)
    if done is not None and done[0] == cfg.optim.memory_budget_gb:
        return done[1]
    choice = choose(model, cfg)
    if choice is not None:
        on = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x
        on = getattr(model, "is_gradient_checkpointing", True) if on is None else on
        if choice.gradient_checkpointing and not on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        from agentsd.distill import distributed

        if distributed.world().is_main:
            print(choice.line(), flush=True)
        log.info(choice.line())
    model._agentsd_memory = (cfg.optim.memory_budget_gb, choice)
    return choice


def check_rows(lengths: list[int], max_tokens: int, choice: MemoryChoice | None) -> None:
    """A row longer than a micro-batch: one line naming its length and the flags."""
    if choice is None or not lengths or max(lengths) <= max_tokens:
        return
    n = max(lengths)
    how = ("chosen from --optim.memory-budget-gb "
           f"{choice.budget_gb:.1f}" if "--optim.max-tokens-per-micro-batch" not in choice.kept
           else "as set")
    raise ValueError(f"a {n}-token row does not fit a micro-batch of {max_tokens} tokens "
                     f"(--optim.max-tokens-per-micro-batch, {how}): raise "
                     "--optim.max-tokens-per-micro-batch or --optim.memory-budget-gb, or shorten "
                     "episodes (--rollout.max-turns, --rollout.max-tokens)")
