"""Shared-prefix forwards: identical token prefixes within a micro-batch computed once.

The rows of one forward often start alike: every episode of a step opens with the same system
prompt, tools and (for a task's ``G`` samples) task; a teacher's step-wise rows of one episode
re-read the same history. :func:`prefix_tree` folds the rows into a radix tree (a node is a
token span ``[start, end)`` common to every row below it) and :func:`shared_hidden` runs the
decoder once per node: a node's children go through one batched forward whose past keys and
values are the node's path (a read-only cache, :class:`_PrefixCache`, with explicit position
ids and a 2D mask over past + new tokens). Each row's hidden states are then read off the nodes
on its path, so the output head and every loss work unchanged.

It is exact: a position's hidden state depends only on the tokens up to it, and those are the
same in the shared and the unshared forward (only the summation order of a few kernels
differs, ~1e-7 in float32). With gradients, a node's keys and values feed all of its children,
so the gradients of every suffix flow back through the one prefix computation into the weights
(LoRA or full). Under gradient checkpointing the recompute reads the same past (the cache is
read-only), so the layers may keep it (``_can_checkpoint_with_cache``).

Where sharing cannot apply (left padding, a decoder that takes no cache, too little to share,
FSDP's student forward: see :func:`agentsd.distill.update.update`) the caller runs the unshared
forward; :class:`Sharing` counts the tokens shared and warns once per reason.

>>> tree = prefix_tree([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]], min_saved=0)
>>> [(c.start, c.end, c.rows) for c in tree.children]
[(0, 2, [0, 1, 2])]
>>> [(c.start, c.end, c.rows) for c in tree.children[0].children]
[(2, 3, [0, 1]), (2, 3, [2])]
>>> computed_tokens(tree), sum(map(len, [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]]))
(7, 12)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["Node", "prefix_tree", "computed_tokens", "Sharing", "plan", "hidden_at", "shared_hidden",
           "unsharable"]

log = logging.getLogger(__name__)


@dataclass
class Node:
    """A span ``[start, end)`` of tokens common to ``rows`` (indices into the forward's rows);
    ``children`` continue it. The root may be empty (``start == end == 0``)."""

    start: int
    end: int
    rows: list[int]
    children: list[Node] = field(default_factory=list)

    @property
    def row(self) -> int:
        """A row that holds the span's tokens."""
        return self.rows[0]


def _lcp(a: Sequence[int], b: Sequence[int], start: int) -> int:
    n = start
    for x, y in zip(a[start:], b[start:], strict=False):
        if x != y:
            break
        n += 1
    return n


def _build(rows: Sequence[Sequence[int]], group: list[int], start: int) -> Node:
    """The subtree of ``group`` (sorted by tokens, all equal before ``start``)."""
    end = _lcp(rows[group[0]], rows[group[-1]], start)  # sorted: the group's common prefix
    node = Node(start, end, list(group))
    longer = [i for i in group if len(rows[i]) > end]
    for _, sub in itertools.groupby(longer, key=lambda i: rows[i][end]):
        node.children.append(_build(rows, list(sub), end))
    return node


def _collapse(node: Node, rows: Sequence[Sequence[int]], min_saved: int) -> None:
    """Fold away inner nodes that save fewer than ``min_saved`` tokens: their children
    recompute the span (one forward fewer costs more than a few tokens)."""
    kids: list[Node] = []
    for c in node.children:
        _collapse(c, rows, min_saved)
        if c.children and (c.end - c.start) * (len(c.rows) - 1) < min_saved:
            for g in c.children:
                g.start = c.start
            kids += c.children
            kids += [Node(c.start, c.end, [r]) for r in c.rows if len(rows[r]) == c.end]
        else:
            kids.append(c)
    node.children = kids


def prefix_tree(rows: Sequence[Sequence[int]], min_saved: int = 64) -> Node:
    """The radix tree of ``rows`` under an empty root (see the module docstring); inner nodes
    saving fewer than ``min_saved`` tokens are folded into their children."""
    order = sorted(range(len(rows)), key=lambda i: list(rows[i]))
    top = _build(rows, order, 0)
    root = top if top.end == 0 else Node(0, 0, list(order), [top])
    _collapse(root, rows, min_saved)
    return root


def _nodes(node: Node) -> Iterator[Node]:
    yield node
    for c in node.children:
        yield from _nodes(c)


def computed_tokens(root: Node) -> int:
    """Tokens the shared forward runs through the decoder (padding aside)."""
    return sum(n.end - n.start for n in _nodes(root))


# ---------------------------------------------------------------------------------------------
# the bookkeeping: counts, reasons, one warning each

@dataclass
class Sharing:
    """Whether and how one update shares prefixes, and what it shared: ``enabled`` (the
    ``optim.share_prefix`` switch), ``min_tokens`` (a forward shares only when it saves at
    least that many tokens: below it the unshared forward runs, bit-identical to before),
    ``max_tokens`` (padded new tokens per node forward), and the counters behind the
    ``prefix/shared_tokens`` and ``prefix/total_tokens`` metrics."""

    enabled: bool = True
    min_tokens: int = 0
    max_tokens: int = 8192
    #: an inner node saving fewer tokens is folded into its children (:func:`prefix_tree`)
    min_saved: int = 64
    shared_tokens: int = 0
    total_tokens: int = 0
    #: whether a forward fell back for a reason other than too little to share
    fell_back: bool = False

    def fallback(self, reason: str) -> None:
        """The unshared path runs for ``reason``; warn once per reason and process."""
        self.fell_back = True
        if reason not in _WARNED:
            _WARNED.add(reason)
            log.warning("prefix sharing off: %s; running the unshared forward", reason)

    def count(self, total: int, computed: int) -> None:
        self.total_tokens += total
        self.shared_tokens += max(total - computed, 0)

    def metrics(self) -> dict[str, float]:
        return {"prefix/shared_tokens": float(self.shared_tokens),
                "prefix/total_tokens": float(self.total_tokens)}


#: reasons already warned about in this process (one warning each, not one per micro-batch)
_WARNED: set[str] = set()


def unsharable(decoder: Any, attn_BT: torch.Tensor | None = None) -> str | None:
    """Why ``decoder`` cannot share prefixes (over the padded rows ``attn_BT``, when given);
    ``None``: it can."""
    import inspect

    if not (hasattr(decoder, "layers") and hasattr(decoder, "embed_tokens")):
        return f"{type(decoder).__name__} is not a transformers decoder (no layers / embed_tokens)"
    if "cache" not in inspect.signature(decoder.forward).parameters:
        return f"{type(decoder).__name__} takes no key/value cache"
    if attn_BT is not None:
        T = attn_BT.shape[1]
        ar = _positions(attn_BT, T)
        if not bool(((ar < attn_BT.sum(-1)[:, None]).to(attn_BT.dtype) == attn_BT).all()):
            return "rows are not right-padded (the shared prefix must sit at position 0)"
    return None


def _positions(x: torch.Tensor, n: int) -> torch.Tensor:
    import torch

    return torch.arange(n, device=x.device)[None, :]


def plan(decoder: Any, rows: Sequence[Sequence[int]], share: Sharing, count: bool = True,
         attn_BT: torch.Tensor | None = None) -> Node | None:
    """The prefix tree of ``rows`` when sharing applies (the decoder takes a cache, the rows are
    right-padded, it saves at least ``share.min_tokens`` tokens), else ``None`` (the unshared
    forward). ``count`` adds the rows to ``share``'s counters (and warns on a fallback)."""
    total = sum(len(r) for r in rows)
    reason = unsharable(decoder, attn_BT)
    tree = None
    if reason is None:
        tree = prefix_tree(rows, share.min_saved)
        if total - computed_tokens(tree) < max(share.min_tokens, 1):
            tree = None
    else:
        share.fallback(reason)
    if count:
        share.count(total, computed_tokens(tree) if tree is not None else total)
    return tree


def hidden_at(decoder: Any, ids_BT: torch.Tensor, attn_BT: torch.Tensor, flat_rows: torch.Tensor,
              share: Sharing) -> torch.Tensor | None:
    """The hidden states :func:`agentsd.distill.teacher.forward_logprobs` reads: at the flat
    positions ``flat_rows`` of the shifted ``[B, T - 1]`` grid (position ``t`` predicts token
    ``t + 1``), computed with shared prefixes; ``None`` where sharing does not apply."""
    B, T = ids_BT.shape
    lengths = attn_BT.sum(-1).tolist()
    rows = [ids_BT[b, : lengths[b]].tolist() for b in range(B)]
    tree = plan(decoder, rows, share, attn_BT=attn_BT)
    if tree is None:
        return None
    requests = [(r // (T - 1), r % (T - 1)) for r in flat_rows.tolist()]
    return shared_hidden(decoder, rows, tree, requests, share.max_tokens)


# ---------------------------------------------------------------------------------------------
# the forward

def _prefix_cache(past: list[tuple[Any, Any]] | None, n_layers: int) -> Any:
    """A read-only cache: attention reads ``past`` (per layer ``(keys, values)``, batch-first)
    followed by the new tokens; ``past`` is never written, the new states are recorded in
    ``layer.new`` (idempotent, so a checkpointed layer's recompute sees the same past)."""
    import torch
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    class _Layer(DynamicLayer):
        def __init__(self, kv: tuple[Any, Any] | None) -> None:
            super().__init__()
            self.new: tuple[Any, Any] | None = None
            if kv is not None:
                self.keys, self.values = kv
                self.device, self.is_initialized = kv[0].device, True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            self.new = (key_states, value_states)
            if not self.is_initialized:
                return key_states, value_states
            return (torch.cat([self.keys, key_states], dim=-2),
                    torch.cat([self.values, value_states], dim=-2))

    class _PrefixCache(DynamicCache):
        def __init__(self, layers: list[Any]) -> None:
            Cache.__init__(self, layers=layers)

    return _PrefixCache([_Layer(past[i] if past else None) for i in range(n_layers)])


@contextlib.contextmanager
def _cache_through_checkpointing(decoder: Any) -> Iterator[None]:
    """Let checkpointed layers keep the (read-only) cache for the block."""
    layers = list(getattr(decoder, "layers", []))
    saved = [layer.__dict__.get("_can_checkpoint_with_cache") for layer in layers]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer, s in zip(layers, saved, strict=True):
            if s is None:
                layer.__dict__.pop("_can_checkpoint_with_cache", None)
            else:
                layer._can_checkpoint_with_cache = s


def _groups(kids: list[Node], max_tokens: int) -> Iterator[list[Node]]:
    """Siblings packed (longest first) into forwards of at most ``max_tokens`` padded tokens."""
    order = sorted(kids, key=lambda c: -(c.end - c.start))
    group: list[Node] = []
    for c in order:
        if group and (group[0].end - group[0].start) * (len(group) + 1) > max_tokens:
            yield group
            group = []
        group.append(c)
    if group:
        yield group


def _node_forward(decoder: Any, rows: Sequence[Sequence[int]], group: list[Node],
                  past: list[tuple[Any, Any]] | None, past_len: int, device: Any,
                  n_layers: int) -> tuple[Any, Any]:
    """One batched forward of sibling spans after their common ``past``; returns the hidden
    states ``[m, S, D]`` and the cache holding the new keys and values."""
    import torch

    m, S = len(group), max(c.end - c.start for c in group)
    ids = torch.zeros(m, S, dtype=torch.long)
    attn = torch.zeros(m, past_len + S, dtype=torch.long)
    attn[:, :past_len] = 1
    for i, c in enumerate(group):
        ids[i, : c.end - c.start] = torch.tensor(list(rows[c.row][c.start:c.end]), dtype=torch.long)
        attn[i, past_len: past_len + c.end - c.start] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (torch.arange(S, device=device) + past_len)[None, :].expand(m, S)
    wide = [(k.expand(m, *k.shape[1:]), v.expand(m, *v.shape[1:])) for k, v in past] if past else None
    cache = _prefix_cache(wide, n_layers)
    out = decoder(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=False)
    return out.last_hidden_state, cache


def shared_hidden(decoder: Any, rows: Sequence[Sequence[int]], root: Node,
                  requests: Sequence[tuple[int, int]], max_tokens: int = 8192) -> torch.Tensor:
    """The decoder's last hidden states at ``requests`` (``(row, position)`` pairs), shape
    ``[len(requests), D]``, computing each node of ``root`` (:func:`prefix_tree` of ``rows``)
    once. Runs with or without gradients (the caller's mode)."""
    import torch

    n_layers = len(decoder.layers)
    device = decoder.embed_tokens.weight.device
    # each node forward's output flattened to [m * S, D], and where each node's span starts in
    # it: requests are read with one index_select per forward (one slice per node would give
    # every node a full-size gradient buffer in the backward)
    outs: list[Any] = []
    where: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Node, list[tuple[Any, Any]] | None]] = [(root, None)]
    with _cache_through_checkpointing(decoder):
        while stack:
            node, past = stack.pop()
            for group in _groups(node.children, max_tokens):
                h, cache = _node_forward(decoder, rows, group, past, node.end, device, n_layers)
                outs.append(h.reshape(-1, h.shape[-1]))
                for i, c in enumerate(group):
                    L = c.end - c.start
                    where[id(c)] = (len(outs) - 1, i * h.shape[1])
                    if c.children:  # its path's keys and values, batch 1
                        new = [layer.new for layer in cache.layers]
                        stack.append((c, [
                            (torch.cat([past[j][0], k[i:i + 1, :, :L]], dim=-2) if past else k[i:i + 1, :, :L],
                             torch.cat([past[j][1], v[i:i + 1, :, :L]], dim=-2) if past else v[i:i + 1, :, :L])
                            for j, (k, v) in enumerate(new)]))
    return _gather(root, outs, where, requests, device)


def _gather(root: Node, outs: list[Any], where: dict[int, tuple[int, int]],
            requests: Sequence[tuple[int, int]], device: Any) -> torch.Tensor:
    """Each request's hidden state, read off the node on its row's path holding the position."""
    import bisect

    import torch

    paths: dict[int, list[Node]] = {}

    def walk(node: Node, path: list[Node]) -> None:
        path = path + [node] if node.end > node.start else path
        for r in node.rows:
            if not any(r in c.rows for c in node.children):
                paths[r] = path
        for c in node.children:
            walk(c, path)

    walk(root, [])
    starts = {r: [p.start for p in path] for r, path in paths.items()}
    by_out: dict[int, list[tuple[int, int]]] = {}
    for q, (b, t) in enumerate(requests):
        n = paths[b][bisect.bisect_right(starts[b], t) - 1]
        g, off = where[id(n)]
        by_out.setdefault(g, []).append((q, off + t - n.start))
    parts, order = [], []
    for g, items in by_out.items():
        idx = torch.tensor([i for _, i in items], dtype=torch.long, device=device)
        parts.append(outs[g].index_select(0, idx))
        order += [q for q, _ in items]
    if not parts:
        return torch.zeros(0, outs[0].shape[-1] if outs else 0, device=device)
    out = torch.cat(parts)
    inv = torch.empty(len(order), dtype=torch.long, device=device)
    inv[torch.tensor(order, dtype=torch.long, device=device)] = torch.arange(len(order), device=device)
    return out.index_select(0, inv)
