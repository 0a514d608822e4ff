"""The ``hf`` backend: batched sampling with a transformers causal LM (CPU or GPU).

Wrap a model already in memory (the trainer's student, LoRA adapters included; nothing is
reloaded or copied), or load one by name::

    from agentsd.policy import HFPolicy, SamplingParams

    policy = HFPolicy(model, tokenizer, model_id="student@step100")   # in-memory, no reload
    policy = HFPolicy.from_pretrained("smollm2")                        # embedded default
    [gen] = policy.generate([tokenizer.encode("Hello")], SamplingParams(max_tokens=8, seed=0))
    gen.token_ids, gen.logprobs, gen.text, gen.finish_reason

Prompts are token ids; they are left-padded into one batch and decoded with the KV cache. The
sampling loop is our own (not ``model.generate``) so that ``logprobs`` are exactly the
log-probabilities of the sampled tokens under the distribution they were drawn from:
``log_softmax(logits / temperature)`` after top-k and top-p filtering (renormalized). With
``temperature=0`` (greedy) they are the model's plain ``log_softmax(logits)``.

Generation stops per sequence at an EOS token (kept in ``token_ids``; ``finish_reason="stop"``),
when the decoded text contains a stop string (tokens up to and including the one that completed
it are kept; ``"stop"``), or at ``max_tokens`` (``"length"``). ``text`` is the decoding of
``token_ids`` without special tokens, so text and tokens always agree.

A seed makes a call reproducible (same prompts, same batch, same seed -> same tokens); the
global torch RNG is never touched.
"""

from __future__ import annotations

import time
from typing import Any

from agentsd.policy.base import Generation, SamplingParams

__all__ = ["HFPolicy"]


class HFPolicy:
    """A :class:`~agentsd.policy.base.Policy` over a transformers causal LM.

    ``model`` may be in training mode (it is switched to eval for sampling and restored after)
    and may be a PEFT model. ``eos_token_ids`` defaults to the tokenizer's EOS plus the model's
    ``generation_config.eos_token_id``.
    """

    def __init__(self, model: Any, tokenizer: Any, model_id: str | None = None,
                 eos_token_ids: list[int] | None = None, context_length: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or f"hf:{getattr(model.config, '_name_or_path', '') or type(model).__name__}"
        self.eos_token_ids = sorted(set(eos_token_ids or _eos_ids(model, tokenizer)))
        if not self.eos_token_ids:
            raise ValueError("no EOS token id: the tokenizer has no eos_token and the model's "
                             "generation_config has no eos_token_id; pass eos_token_ids=[...]")
        #: the model's context window (prompt + generated tokens); the rollout engine respects it
        self.context_length = context_length or getattr(model.config, "max_position_embeddings", None)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_ids[0])
        self._cache_kwarg = _cache_kwarg()

    @classmethod
    def from_pretrained(cls, name: str = "smollm2", *, device: str | None = None,
                        dtype: Any = None) -> HFPolicy:
        """Load a model by short name, local path or hub id (see :mod:`agentsd.policy.models`)."""
        from agentsd.policy.models import load_model, resolve_model

        model, tok = load_model(name, device=device, dtype=dtype)
        return cls(model, tok, model_id=f"hf:{resolve_model(name).model_id}")

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Sample one continuation per prompt, all prompts in one left-padded batch."""
        import torch

        if not prompts:
            return []
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self._generate(prompts, params)
        finally:
            if was_training:
                self.model.train()

    # ---- internals -----------------------------------------------------------------------------
    def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        import torch

        t0 = time.perf_counter()
        dev = self.device
        B, T = len(prompts), max(len(p) for p in prompts)
        ids_BT = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        mask_BT = torch.zeros((B, T), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids_BT[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
            mask_BT[b, T - len(p):] = 1
        ids_BT, mask_BT = ids_BT.to(dev), mask_BT.to(dev)
        # left padding: positions count real tokens only, so a padded row sees the same
        # positions as it would alone
        pos_BT = (mask_BT.cumsum(-1) - 1).clamp(min=0)
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=dev).manual_seed(int(params.seed))
        eos = torch.tensor(self.eos_token_ids, device=dev)

        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        alive = list(range(B))  # original row of each row still in the batch
        # logits for the last position only: full-prompt logits would be B*T*V floats
        out = self.model(input_ids=ids_BT, attention_mask=mask_BT, position_ids=pos_BT,
                         use_cache=True, logits_to_keep=1)
        cache = _cache_of(out)
        logits_BV = out.logits[:, -1, :].float()
        next_pos_B = pos_BT[:, -1] + 1
        for _step in range(params.max_tokens):
            tok_B, lp_B = _sample(logits_BV, params, gen)
            done_rows = []
            tok_list, lp_list = tok_B.tolist(), lp_B.tolist()
            is_eos = torch.isin(tok_B, eos).tolist()
            for r, b in enumerate(alive):
                out_ids[b].append(tok_list[r])
                out_lp[b].append(lp_list[r])
                if is_eos[r] or (params.stop and self._hit_stop(out_ids[b], params.stop)):
                    finish[b] = "stop"
                    done_rows.append(r)
            if len(out_ids[alive[0]]) >= params.max_tokens or len(done_rows) == len(alive):
                break
            keep = [r for r in range(len(alive)) if r not in set(done_rows)]
            if done_rows:
                # drop finished rows so later steps only pay for live sequences
                idx = torch.tensor(keep, device=dev)
                cache.batch_select_indices(idx)
                tok_B, mask_BT, next_pos_B = tok_B[idx], mask_BT[idx], next_pos_B[idx]
                alive = [alive[r] for r in keep]
            mask_BT = torch.cat([mask_BT, mask_BT.new_ones((len(alive), 1))], dim=1)
            out = self.model(input_ids=tok_B[:, None], attention_mask=mask_BT,
                             position_ids=next_pos_B[:, None], use_cache=True,
                             **{self._cache_kwarg: cache})
            cache = _cache_of(out)
            logits_BV = out.logits[:, -1, :].float()
            next_pos_B = next_pos_B + 1
        wall = time.perf_counter() - t0
        return [Generation(token_ids=out_ids[b], logprobs=out_lp[b],
                           text=self.tokenizer.decode(out_ids[b], skip_special_tokens=True),
                           finish_reason=finish[b],
                           meta={"batch_size": B, "batch_wall_s": wall})
                for b in range(B)]

    def _hit_stop(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        # a stop string can span a few tokens; decoding a short tail keeps this O(1) per step
        longest = max(len(s) for s in stop)
        tail = self.tokenizer.decode(ids[-(longest + 2):], skip_special_tokens=False)
        return any(s in tail for s in stop)


def _sample(logits_BV: Any, params: SamplingParams, gen: Any) -> tuple[Any, Any]:
    """Draw one token per row; return ``(tokens_B, logprobs_B)`` under the sampled distribution."""
    import torch

    if params.temperature == 0:
        logp_BV = torch.log_softmax(logits_BV, dim=-1)
        tok_B = logp_BV.argmax(dim=-1)
        return tok_B, logp_BV.gather(-1, tok_B[:, None])[:, 0]
    logits_BV = logits_BV / params.temperature
    if params.top_k and params.top_k < logits_BV.shape[-1]:
        kth_B1 = torch.topk(logits_BV, params.top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if params.top_p < 1.0:
        sorted_BV, order_BV = torch.sort(logits_BV, dim=-1, descending=True)
        cum_BV = torch.softmax(sorted_BV, dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_BV = (cum_BV - torch.softmax(sorted_BV, dim=-1)) >= params.top_p
        sorted_BV = sorted_BV.masked_fill(drop_BV, float("-inf"))
        logits_BV = torch.full_like(logits_BV, float("-inf")).scatter(-1, order_BV, sorted_BV)
    logp_BV = torch.log_softmax(logits_BV, dim=-1)
    # inverse-CDF sampling: one uniform per row; much faster than torch.multinomial on CPU for
    # large vocabularies. Zero-probability tokens have an empty CDF interval, so never win.
    cdf_BV = logp_BV.double().exp().cumsum(dim=-1)
    u_B1 = torch.rand((cdf_BV.shape[0], 1), generator=gen, device=cdf_BV.device, dtype=torch.float64)
    tok_B = torch.searchsorted(cdf_BV, u_B1 * cdf_BV[:, -1:], right=True)[:, 0]
    tok_B = tok_B.clamp(max=logp_BV.shape[-1] - 1)
    return tok_B, logp_BV.gather(-1, tok_B[:, None])[:, 0]


def _cache_kwarg() -> str:
    # transformers 5.2x renamed ``past_key_values`` to ``cache``; support both
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _cache_of(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    if isinstance(e, int):
        ids.append(e)
    elif isinstance(e, list | tuple):
        ids.extend(int(x) for x in e)
    return ids
