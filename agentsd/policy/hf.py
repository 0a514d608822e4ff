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

KV reuse across calls: pass ``cache_keys`` (one per prompt, e.g. an episode id) and each row's
keys/values are kept after the call; when that key comes back with a prompt that extends the kept
tokens (an episode's next turn: previous prompt + action + observation), only the new suffix is
prefilled. Rows of one batch may reuse different amounts (or nothing): each row reads
``pad* kept pad* suffix``, with the attention mask hiding both pads and positions counting real
tokens only. A prompt that does not extend the kept tokens (a template that re-tokenizes the turn
boundary) reuses the common prefix and is counted in ``kv_stats.prefix_mismatches``::

    g1 = policy.generate([p1], params, cache_keys=["ep0"])
    g2 = policy.generate([p1 + g1[0].token_ids + obs], params, cache_keys=["ep0"])  # prefills obs
    policy.release(["ep0"])                                                       # episode over
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentsd.policy.base import Generation, SamplingParams

__all__ = ["HFPolicy", "KVReuseStats"]


@dataclass
class KVReuseStats:
    """What KV reuse across calls did (see :meth:`HFPolicy.generate`'s ``cache_keys``)."""

    #: rows that came with a key (turns after the first of an episode, plus first turns)
    keyed_rows: int = 0
    #: prompt tokens whose keys/values came from a stored cache instead of a forward pass
    reused_tokens: int = 0
    #: prompt tokens run through the model (the new suffixes, and full prompts without a cache)
    prefilled_tokens: int = 0
    #: rows whose stored tokens were not a prefix of the new prompt: only the common prefix
    #: was reused (a full prefill when nothing was common)
    prefix_mismatches: int = 0
    #: kept caches dropped (oldest first) to stay within ``kv_budget_bytes``
    evictions: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class _KVEntry:
    #: the tokens whose keys/values are stored: the last prompt plus all but the last sampled token
    ids: list[int]
    #: per layer ``(keys_HLD, values_HLD)`` of just those tokens (no padding)
    kv: list[tuple[Any, Any]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


class HFPolicy:
    """A :class:`~agentsd.policy.base.Policy` over a transformers causal LM.

    ``model`` may be in training mode (it is switched to eval for sampling and restored after)
    and may be a PEFT model. ``eos_token_ids`` defaults to the tokenizer's EOS plus the model's
    ``generation_config.eos_token_id``.

    ``cache_implementation``: ``"growing"`` (default: a cache that grows in chunks, so a decode
    step writes one slot instead of copying the whole cache; finished rows leave the batch; KV
    reuse across calls with ``cache_keys``), ``"dynamic"`` (transformers' ``DynamicCache``, which
    concatenates every step; otherwise the same) or ``"static"`` (one preallocated cache per call,
    fixed shapes; ``cache_keys`` are ignored: every call prefills in full). ``compile``
    (needs ``"static"`` and a CUDA device) runs the decode step through ``torch.compile`` with
    CUDA graphs; the first call for each new (batch, cache length) pair compiles.

    ``kv_budget_bytes`` bounds the memory of kept caches (on the model's device); past it the
    oldest are dropped and those episodes prefill in full on their next turn (``None``: no bound).
    """

    def __init__(self, model: Any, tokenizer: Any, model_id: str | None = None,
                 eos_token_ids: list[int] | None = None, context_length: int | None = None, *,
                 cache_implementation: str = "growing", compile: bool = False,
                 kv_budget_bytes: int | None = 8 * 2**30) -> None:
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
        if cache_implementation not in ("growing", "dynamic", "static"):
            raise ValueError(f"cache_implementation must be 'growing', 'dynamic' or 'static', "
                             f"got {cache_implementation!r}")
        if compile and cache_implementation != "static":
            raise ValueError("compile=True needs cache_implementation='static': a growing cache "
                             "changes shape every step, so the compiled forward would recompile per token")
        if compile and self.device.type != "cuda":
            raise ValueError(f"compile=True is GPU-only (the model is on {self.device}): its gain "
                             f"comes from CUDA graphs; on CPU use the default dynamic cache (with "
                             f"KV reuse across turns), or cache_implementation='static' uncompiled")
        if cache_implementation == "growing":
            try:
                _growing_cache_class()()
            except Exception as e:  # noqa: BLE001 - a transformers without this cache API
                warnings.warn(f"cache_implementation='growing' is unavailable with this "
                              f"transformers ({type(e).__name__}: {e}); using 'dynamic'",
                              stacklevel=2)
                cache_implementation = "dynamic"
        self.cache_implementation = cache_implementation
        self.compile = compile
        self._decode_fn: Any = None
        self._static: tuple[int, int, Any] | None = None  # (batch, length, cache) of the last call
        if kv_budget_bytes is not None and kv_budget_bytes < 0:
            raise ValueError(f"kv_budget_bytes must be >= 0 or None, got {kv_budget_bytes}")
        self.kv_budget_bytes = kv_budget_bytes
        self._kv: dict[Hashable, _KVEntry] = {}  # insertion order = age: a used entry is re-kept
        self._kv_bytes = 0
        self.kv_stats = KVReuseStats()
        #: why KV reuse is off for this model (``None`` while it works)
        self.kv_reuse_unsupported: str | None = None
        odd = _non_attention_layers(model)
        if odd and cache_implementation != "static":
            # e.g. linear-attention or state-space layers: their state is not a per-token cache
            # to cut rows from, and the model needs its own cache class
            self.kv_reuse_unsupported = (f"KV reuse needs attention layers only; this model "
                                         f"also has {', '.join(odd)} layers")
            warnings.warn(f"{self.kv_reuse_unsupported}: every call prefills in full, with the "
                          f"model's own cache", stacklevel=2)

    @classmethod
    def from_pretrained(cls, name: str = "smollm2", *, device: str | None = None,
                        dtype: Any = None, **kwargs: Any) -> HFPolicy:
        """Load a model by short name, local path or hub id (see :mod:`agentsd.policy.models`);
        ``kwargs`` go to the constructor (``cache_implementation``, ``compile``)."""
        from agentsd.policy.models import load_model, resolve_model

        model, tok = load_model(name, device=device, dtype=dtype)
        return cls(model, tok, model_id=f"hf:{resolve_model(name).model_id}", **kwargs)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def supports_kv_reuse(self) -> bool:
        """Whether ``cache_keys`` can save prefill work (dynamic cache, full-attention layers)."""
        return self.cache_implementation != "static" and self.kv_reuse_unsupported is None

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 cache_keys: Sequence[Hashable] | None = None) -> list[Generation]:
        """Sample one continuation per prompt, all prompts in one left-padded batch.

        ``cache_keys`` (one hashable per prompt, e.g. an episode id) turn on KV reuse: after the
        call the keys and values of each row are kept under its key, and a later prompt with the
        same key prefills only the tokens after the longest common prefix with what was kept
        (exact: a causal model's keys and values for a prefix do not depend on what follows).
        Call :meth:`release` when an episode ends; the caller owns the keys' lifetime, and kept
        caches are stale once the weights change.
        """
        import torch

        if not prompts:
            return []
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        if cache_keys is not None and len(cache_keys) != len(prompts):
            raise ValueError(f"cache_keys has {len(cache_keys)} keys for {len(prompts)} prompts")
        if cache_keys is not None and len(set(cache_keys)) != len(cache_keys):
            raise ValueError("cache_keys must be distinct within a call (one per episode)")
        if not self.supports_kv_reuse:
            cache_keys = None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self._generate(prompts, params, cache_keys)
        finally:
            if was_training:
                self.model.train()

    def release(self, cache_keys: Iterable[Hashable] | None = None) -> None:
        """Drop the caches kept under ``cache_keys`` (all of them when ``None``)."""
        for k in list(self._kv) if cache_keys is None else cache_keys:
            self._take(k)

    def _take(self, key: Hashable) -> _KVEntry | None:
        entry = self._kv.pop(key, None)
        if entry is not None:
            self._kv_bytes -= entry.nbytes
        return entry

    def _keep(self, key: Hashable, entry: _KVEntry) -> None:
        self._kv[key] = entry
        self._kv_bytes += entry.nbytes
        while self.kv_budget_bytes is not None and self._kv_bytes > self.kv_budget_bytes:
            self._take(next(iter(self._kv)))
            self.kv_stats.evictions += 1

    # ---- internals -----------------------------------------------------------------------------
    def _generate(self, prompts: list[list[int]], params: SamplingParams,
                  keys: Sequence[Hashable] | None) -> list[Generation]:
        import torch

        t0 = time.perf_counter()
        dev = self.device
        B = len(prompts)
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=dev).manual_seed(int(params.seed))
        if self.cache_implementation == "static":
            out_ids, out_lp, finish = self._decode_static(prompts, params, gen)
            reuse_B = [0] * B
        else:
            out_ids, out_lp, finish, reuse_B = self._decode_dynamic(prompts, params, gen, keys)
        wall = time.perf_counter() - t0
        return [Generation(token_ids=out_ids[b], logprobs=out_lp[b],
                           text=self.tokenizer.decode(out_ids[b], skip_special_tokens=True),
                           finish_reason=finish[b],
                           meta={"batch_size": B, "batch_wall_s": wall,
                                 "kv_reused_tokens": reuse_B[b],
                                 "prefill_tokens": len(prompts[b]) - reuse_B[b]})
                for b in range(B)]

    def _decode_dynamic(self, prompts: list[list[int]], params: SamplingParams, gen: Any,
                        keys: Sequence[Hashable] | None) -> tuple[Any, ...]:
        """The default loop: a growing cache; finished rows leave the batch (and, with keys,
        leave their keys/values behind for the episode's next call)."""
        import torch

        dev = self.device
        B = len(prompts)
        entries = [self._take(k) for k in keys] if keys is not None else [None] * B
        reuse_B = [self._reusable(e, p) for e, p in zip(entries, prompts)]
        if keys is not None:
            self.kv_stats.keyed_rows += B
            self.kv_stats.reused_tokens += sum(reuse_B)
        self.kv_stats.prefilled_tokens += sum(len(p) for p in prompts) - sum(reuse_B)
        cache, ids_BS, mask_BT, pos_BS = self._prefill_inputs(prompts, entries, reuse_B)
        del entries
        eos = torch.tensor(self.eos_token_ids, device=dev)
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        alive = list(range(B))  # original row of each row still in the batch
        # logits for the last position only: full-prompt logits would be B*T*V floats
        out = self.model(input_ids=ids_BS, attention_mask=mask_BT, position_ids=pos_BS,
                         use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
        cache = _cache_of(out)
        if keys is not None and not self._storable(cache):
            keys = None
        logits_BV = out.logits[:, -1, :].float()
        next_pos_B = pos_BS[:, -1] + 1

        def keep_kv(rows: list[int]) -> None:
            # the cache holds each row's prompt and all its sampled tokens but the last
            for r in rows:
                b = alive[r]
                self._store(keys[b], cache, r, mask_BT[r], prompts[b] + out_ids[b][:-1])

        for _step in range(params.max_tokens):
            tok_B, lp_B = _sample(logits_BV, params, gen)
            done_rows = self._append_step(alive, tok_B, lp_B, eos, params, out_ids, out_lp, finish)
            if len(out_ids[alive[0]]) >= params.max_tokens or len(done_rows) == len(alive):
                break
            if done_rows:
                if keys is not None:
                    keep_kv(done_rows)
                # drop finished rows so later steps only pay for live sequences
                done = set(done_rows)
                keep = [r for r in range(len(alive)) if r not in done]
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
        if keys is not None:
            keep_kv(list(range(len(alive))))
        return out_ids, out_lp, finish, reuse_B

    def _reusable(self, entry: _KVEntry | None, prompt: list[int]) -> int:
        """How many leading prompt tokens ``entry`` covers (at least one token is left to run)."""
        if entry is None:
            return 0
        n = len(entry.ids)
        if prompt[:n] != entry.ids:
            # e.g. a prompt re-rendered from text whose tokens differ at the turn boundary
            self.kv_stats.prefix_mismatches += 1
            n = next((i for i, (a, b) in enumerate(zip(entry.ids, prompt)) if a != b),
                     min(n, len(prompt)))
        return min(n, len(prompt) - 1)

    def _prefill_inputs(self, prompts: list[list[int]], entries: list[_KVEntry | None],
                        reuse_B: list[int]) -> tuple[Any, Any, Any, Any]:
        """The first forward's inputs: each row's uncached suffix, left-padded to ``S``, after a
        past of ``C`` slots holding each row's reused keys/values right-aligned (so a row reads
        ``pad* kept pad* suffix``; the mask hides both pads and positions count real tokens)."""
        import torch

        dev = self.device
        B, C = len(prompts), max(reuse_B)
        suffix = [p[c:] for p, c in zip(prompts, reuse_B)]
        S = max(len(x) for x in suffix)
        ids_BS = torch.full((B, S), self.pad_token_id, dtype=torch.long)
        mask_BT = torch.zeros((B, C + S), dtype=torch.long)
        for b, (x, c) in enumerate(zip(suffix, reuse_B)):
            ids_BS[b, S - len(x):] = torch.tensor(x, dtype=torch.long)
            mask_BT[b, C + S - len(x):] = 1
            mask_BT[b, C - c:C] = 1
        ids_BS, mask_BT = ids_BS.to(dev), mask_BT.to(dev)
        reuse = torch.tensor(reuse_B, dtype=torch.long, device=dev)
        pos_BS = reuse[:, None] + (mask_BT[:, C:].cumsum(-1) - 1).clamp(min=0)
        cache = self._empty_cache()
        if C == 0:
            return cache, ids_BS, mask_BT, pos_BS
        ref = next(e for e, c in zip(entries, reuse_B) if c)
        for layer, (k_ref, v_ref) in enumerate(ref.kv):
            k_BHCD = k_ref.new_zeros((B, k_ref.shape[0], C, k_ref.shape[-1]))
            v_BHCD = v_ref.new_zeros((B, v_ref.shape[0], C, v_ref.shape[-1]))
            for b, (e, c) in enumerate(zip(entries, reuse_B)):
                if c:
                    k_BHCD[b, :, C - c:] = e.kv[layer][0][:, :c]
                    v_BHCD[b, :, C - c:] = e.kv[layer][1][:, :c]
            cache.update(k_BHCD, v_BHCD, layer)
        return cache, ids_BS, mask_BT, pos_BS

    def _empty_cache(self) -> Any:
        if self.kv_reuse_unsupported is not None:
            return None  # the model builds the cache it needs
        if self.cache_implementation == "growing":
            return _growing_cache_class()()
        from transformers import DynamicCache

        return DynamicCache()

    def _storable(self, cache: Any) -> bool:
        """Whether a row's keys/values can be cut out of ``cache`` (plain full-attention layers)."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        ok = (DynamicLayer, _growing_cache_class().layer_class)
        if layers and all(type(la) in ok for la in layers):
            return True
        kinds = sorted({type(la).__name__ for la in layers or []}) or [type(cache).__name__]
        self.kv_reuse_unsupported = (f"KV reuse needs plain full-attention cache layers; this "
                                     f"model's cache has {', '.join(kinds)}")
        warnings.warn(f"{self.kv_reuse_unsupported}: every call prefills in full", stacklevel=4)
        return False

    def _store(self, key: Hashable, cache: Any, r: int, mask_T: Any, ids: list[int]) -> None:
        idx = mask_T.nonzero()[:, 0]  # one device sync per row, not one per layer
        kv = [(la.keys[r].index_select(1, idx), la.values[r].index_select(1, idx))
              for la in cache.layers]
        if kv[0][0].shape[1] != len(ids):  # a bookkeeping bug would silently corrupt samples
            raise RuntimeError(f"kept {kv[0][0].shape[1]} cache slots for {len(ids)} tokens")
        self._keep(key, _KVEntry(ids, kv))

    def _decode_static(self, prompts: list[list[int]], params: SamplingParams,
                       gen: Any) -> tuple[Any, ...]:
        """Fixed shapes for ``torch.compile``: one preallocated cache, the batch never shrinks
        (finished rows keep feeding their last token, and their outputs are ignored)."""
        import torch
        from transformers import StaticCache

        dev = self.device
        B, T = len(prompts), max(len(p) for p in prompts)
        # round the cache length up so that calls of similar size share one compiled graph
        L = -(-(T + params.max_tokens) // _STATIC_BUCKET) * _STATIC_BUCKET
        ids_BT = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        mask_BL = torch.zeros((B, L), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids_BT[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
            mask_BL[b, T - len(p):T] = 1
        ids_BT, mask_BL = ids_BT.to(dev), mask_BL.to(dev)
        pos_BT = (mask_BL[:, :T].cumsum(-1) - 1).clamp(min=0)
        self.kv_stats.prefilled_tokens += sum(len(p) for p in prompts)
        if self._static is not None and self._static[:2] == (B, L):
            cache = self._static[2]  # same addresses: the compiled graph is replayed, not rebuilt
            cache.reset()
        else:
            cache = StaticCache(config=self.model.config, max_cache_len=L)
            self._static = (B, L, cache)
        kw = {self._cache_kwarg: cache}
        out = self.model(input_ids=ids_BT, attention_mask=mask_BL, position_ids=pos_BT,
                         use_cache=True, logits_to_keep=1, **kw)
        logits_BV = out.logits[:, -1, :].float()
        pos_B1 = pos_BT[:, -1:] + 1
        decode = self._decoder()
        eos = torch.tensor(self.eos_token_ids, device=dev)
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        alive = list(range(B))
        tok_B = torch.full((B,), self.pad_token_id, dtype=torch.long, device=dev)
        for step in range(params.max_tokens):
            # draw for live rows only, as the dynamic loop does: same seed, same samples
            idx = torch.tensor(alive, device=dev)
            tok_A, lp_A = _sample(logits_BV[idx], params, gen)
            tok_B[idx] = tok_A
            done = {alive[r] for r in
                    self._append_step(alive, tok_A, lp_A, eos, params, out_ids, out_lp, finish)}
            alive = [b for b in alive if b not in done]
            if step + 1 >= params.max_tokens or not alive:
                break
            mask_BL[:, T + step] = 1
            out = decode(input_ids=tok_B[:, None], attention_mask=mask_BL, position_ids=pos_B1,
                         use_cache=True, **kw)
            logits_BV = out.logits[:, -1, :].float()
            pos_B1 = pos_B1 + 1
        return out_ids, out_lp, finish

    def _decoder(self) -> Any:
        if not self.compile:
            return self.model
        if self._decode_fn is None:
            import torch

            self._decode_fn = torch.compile(self.model.forward, mode="reduce-overhead",
                                            fullgraph=False)
        return self._decode_fn

    def _append_step(self, alive: list[int], tok_A: Any, lp_A: Any, eos: Any,
                     params: SamplingParams, out_ids: list[list[int]], out_lp: list[list[float]],
                     finish: list[str]) -> list[int]:
        """Append one sampled token (and its log-prob) to each live row's output; return the
        indices into ``alive`` of the rows that stopped (EOS or a stop string)."""
        import torch

        tok_list, lp_list = tok_A.tolist(), lp_A.tolist()
        is_eos = torch.isin(tok_A, eos).tolist()
        done = []
        for r, b in enumerate(alive):
            out_ids[b].append(tok_list[r])
            out_lp[b].append(lp_list[r])
            if is_eos[r] or (params.stop and self._hit_stop(out_ids[b], params.stop)):
                finish[b] = "stop"
                done.append(r)
        return done

    def _hit_stop(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        # a stop string can span a few tokens; decoding a short tail keeps this O(1) per step
        longest = max(len(s) for s in stop)
        tail = self.tokenizer.decode(ids[-(longest + 2):], skip_special_tokens=False)
        return any(s in tail for s in stop)


#: the static cache's length is a multiple of this (fewer distinct shapes to compile)
_STATIC_BUCKET = 256


def _non_attention_layers(model: Any) -> list[str]:
    """Layer kinds other than (full or sliding-window) attention named in the model's config."""
    cfg = model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    kinds = set(getattr(cfg, "layer_types", None) or [])
    return sorted(kinds - {"full_attention", "sliding_attention"})


@functools.cache
def _growing_cache_class() -> Any:
    """A ``DynamicCache`` whose layers keep spare capacity: ``torch.cat`` in ``DynamicLayer``
    copies the whole cache on every decode step (about a fifth of a CPU decode step at 500
    tokens); here a step writes one slot and the layer exposes a view of the filled part."""
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states: Any, value_states: Any, *args: Any,
                   **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._n, self._k, self._v = 0, None, None
            n = self._n + key_states.shape[-2]
            if self._k is None or n > self._k.shape[-2]:
                cap = n + max(n // 2, 64)  # amortized: few reallocations per call
                k = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
                v = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
                if self._n:
                    k[..., :self._n, :] = self._k[..., :self._n, :]
                    v[..., :self._n, :] = self._v[..., :self._n, :]
                self._k, self._v = k, v
            self._k[..., self._n:n, :] = key_states
            self._v[..., self._n:n, :] = value_states
            self._n = n
            self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            if self.is_initialized and self._n:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[..., :self._n, :], self._v[..., :self._n, :]

    class GrowingCache(DynamicCache):
        layer_class = GrowingLayer

        def __init__(self) -> None:
            Cache.__init__(self, layer_class_to_replicate=GrowingLayer)

    return GrowingCache


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
