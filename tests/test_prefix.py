"""Shared-prefix forwards (:mod:`agentsd.distill.prefix`, ``--optim.share-prefix``): the prefix
tree, and the same per-token log-probs, loss and parameter gradients as the unshared path
(within 1e-5) on a tiny random model, on SmolLM2's real chat template (its tokenizer and
vocabulary, random weights), under gradient checkpointing, for full fine-tuning, for the
teacher's step-wise rows; the fallbacks (a decoder without a cache, left padding) and the
``prefix/*`` metrics; the real 135M weights behind ``slow``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging

import pytest
import torch

from agentsd.distill.config import LossConfig, ModelConfig, OptimConfig, RolloutSettings, TrainConfig
from agentsd.distill.models import tiny_random_model, with_lora
from agentsd.distill.prefix import Sharing, computed_tokens, prefix_tree, shared_hidden
from agentsd.distill.teacher import forward_logprobs, pad_rows, score_rows

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


# ---------------------------------------------------------------------------------------------
# the tree

def test_tree_shares_common_prefixes_once():
    rows = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7], [9, 9]]
    root = prefix_tree(rows, min_saved=0)
    assert root.start == root.end == 0
    spans = sorted((c.start, c.end, sorted(c.rows)) for c in root.children)
    assert spans == [(0, 2, [0, 1, 2]), (0, 2, [3])]
    assert computed_tokens(root) == 2 + 1 + 1 + 2 + 1 + 2  # [1,2] [3] [4] [5,6] [7] [9,9]


def test_tree_folds_small_savings_and_keeps_duplicates_and_prefix_rows():
    rows = [[1, 2, 3], [1, 2, 4]]
    assert computed_tokens(prefix_tree(rows, min_saved=3)) == 6  # saving 2 < 3: recomputed
    assert computed_tokens(prefix_tree(rows, min_saved=2)) == 4
    dup = prefix_tree([[5, 6, 7], [5, 6, 7], [5, 6]], min_saved=0)
    assert computed_tokens(dup) == 3


def test_shared_hidden_equals_the_full_forward_at_every_position():
    torch.manual_seed(0)
    model = tiny_random_model(vocab_size=64, hidden_size=32, layers=2, init_std=0.1)
    g = torch.Generator().manual_seed(1)
    p = torch.randint(0, 64, (20,), generator=g).tolist()
    rows = [p + [1, 2, 3], p + [4, 5], p[:12] + [7], p + [1, 2, 3, 9, 9]]
    ids, attn = pad_rows(rows)
    with torch.no_grad():
        full = model.get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
        req = [(b, t) for b, r in enumerate(rows) for t in range(len(r))]
        got = shared_hidden(model.get_decoder(), rows, prefix_tree(rows, 0), req)
    want = torch.stack([full[b, t] for b, t in req])
    assert _close(got, want) < TOL


# ---------------------------------------------------------------------------------------------
# forward_logprobs: log-probs and gradients

def _rows_batch(seed: int = 1, V: int = 64):
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(0, V, (40,), generator=g).tolist()
    rows = [p + torch.randint(0, V, (n,), generator=g).tolist() for n in (12, 19, 6)]
    rows += [p[:25] + [1, 2, 3], rows[1][:50] + [9, 9], list(rows[0])]
    ids, attn = pad_rows(rows)
    pos = attn.float()
    pos[:, :3] = 0
    return ids, attn, pos


def _lora_student(init_std: float = 0.1, seed: int = 0, **kw):
    model = with_lora(tiny_random_model(vocab_size=64, hidden_size=32, layers=2, init_std=init_std,
                                        seed=seed, **kw), rank=4)
    with torch.no_grad():  # B = 0 would leave the adapter's A without gradient
        gen = torch.Generator().manual_seed(2)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=gen)
    return model.train()


def _logp_and_grads(model, ids, attn, pos, share, want_logits=False):
    model.zero_grad(set_to_none=True)
    out = forward_logprobs(model, ids, attn, want_entropy=True, positions_BT=pos, share=share,
                           want_logits=want_logits)
    w = torch.linspace(0.1, 1.0, ids.shape[1])  # a token-normalized loss, as the trainer's
    loss = (out["logp_BT"] * w).sum() / pos.sum()
    if want_logits:
        loss = loss + out["logits_rows"].values_NV.logsumexp(-1).mean() * 0.1
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, float(loss.detach()), grads


def _assert_same(a, b, positions):
    (oa, la, ga), (ob, lb, gb) = a, b
    m = positions.bool()
    assert _close(oa["logp_BT"][m], ob["logp_BT"][m]) < TOL
    assert _close(oa["entropy_BT"][m], ob["entropy_BT"][m]) < TOL
    assert abs(la - lb) < TOL * max(1.0, abs(la))
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert _close(ga[k], gb[k]) < TOL, k


def test_student_lora_logprobs_loss_and_gradients_match_the_unshared_path():
    model = _lora_student()
    ids, attn, pos = _rows_batch()
    share = Sharing(min_tokens=0, min_saved=0)
    a = _logp_and_grads(model, ids, attn, pos, None, want_logits=True)
    b = _logp_and_grads(model, ids, attn, pos, share, want_logits=True)
    assert share.shared_tokens > 100 and share.total_tokens == int(attn.sum())
    _assert_same(a, b, pos)
    assert _close(a[0]["logits_rows"].values_NV, b[0]["logits_rows"].values_NV) < TOL


def test_full_fine_tuning_gradients_match():
    model = tiny_random_model(vocab_size=64, hidden_size=32, layers=2, init_std=0.1).train()
    model.requires_grad_(True)
    ids, attn, pos = _rows_batch(3)
    a = _logp_and_grads(model, ids, attn, pos, None)
    b = _logp_and_grads(model, ids, attn, pos, Sharing(min_tokens=0, min_saved=0))
    assert "model.embed_tokens.weight" in a[2]
    _assert_same(a, b, pos)


def test_gradient_checkpointing_shares_and_keeps_the_gradients():
    model = _lora_student()
    ids, attn, pos = _rows_batch(4)
    a = _logp_and_grads(model, ids, attn, pos, None)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    share = Sharing(min_tokens=0, min_saved=0)
    b = _logp_and_grads(model, ids, attn, pos, share)
    assert share.shared_tokens > 0
    _assert_same(a, b, pos)


def test_small_node_forwards_split_siblings_and_stay_exact():
    model = _lora_student()
    ids, attn, pos = _rows_batch(5)
    a = _logp_and_grads(model, ids, attn, pos, None)
    b = _logp_and_grads(model, ids, attn, pos, Sharing(min_tokens=0, min_saved=0, max_tokens=8))
    _assert_same(a, b, pos)


# ---------------------------------------------------------------------------------------------
# fallbacks

def test_below_min_tokens_runs_the_unshared_forward_bit_identically():
    model = _lora_student()
    ids, attn, pos = _rows_batch(6)
    a = _logp_and_grads(model, ids, attn, pos, None)
    share = Sharing(min_tokens=10_000)
    b = _logp_and_grads(model, ids, attn, pos, share)
    assert share.shared_tokens == 0 and share.total_tokens == int(attn.sum()) and not share.fell_back
    assert torch.equal(a[0]["logp_BT"], b[0]["logp_BT"])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_left_padding_falls_back_with_one_warning(caplog):
    from agentsd.distill import prefix

    prefix._WARNED.clear()
    model = _lora_student()
    rows = [[5] * 30 + [1, 2], [5] * 30 + [3]]
    ids = torch.tensor([rows[0], [0] + rows[1]])
    attn = torch.tensor([[1] * 32, [0] + [1] * 31])
    pos = attn.float()
    share = Sharing(min_tokens=0, min_saved=0)
    with caplog.at_level(logging.WARNING, logger="agentsd.distill.prefix"):
        for _ in range(2):
            forward_logprobs(model, ids, attn, positions_BT=pos, share=share)
    msgs = [r.getMessage() for r in caplog.records if "prefix sharing off" in r.getMessage()]
    assert len(msgs) == 1 and "right-padded" in msgs[0]
    assert share.fell_back and share.shared_tokens == 0 and share.total_tokens == 2 * 63


def test_a_decoder_without_a_cache_falls_back():
    from agentsd.distill.prefix import unsharable

    class NoCache(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.layers, self.embed_tokens, self.inner = inner.layers, inner.embed_tokens, inner

        def forward(self, input_ids=None, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    model = tiny_random_model(vocab_size=64, hidden_size=32)
    assert unsharable(model.get_decoder()) is None
    assert "takes no key/value cache" in unsharable(NoCache(model.get_decoder()))
    assert "not a transformers decoder" in unsharable(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------
# the teacher's rows

def test_teacher_stepwise_rows_share_the_history_and_score_the_same(tok):
    import agentsd
    from agentsd.demos import oracle_demos
    from agentsd.distill.teacher import build_teacher_rows

    trajs = oracle_demos("Sokoban-Step-v0", agentsd.split_seeds("Sokoban-Step-v0", "train", 2), tok,
                         max_turns=6)
    model = tiny_random_model(vocab_size=len(tok), hidden_size=16, layers=2, init_std=0.1)
    head = tok.encode("You are the teacher.")
    rows = []
    for i, t in enumerate(trajs):  # one prompt per turn: the episode's rows share the task
        prompts = [head + t.turns[0].prompt_ids + tok.encode(f" Step {k}.") for k in range(len(t.turns))]
        rows += build_teacher_rows(t, prompts, i)
    assert len(rows) > len(trajs)
    lengths = [len(t.token_ids()) for t in trajs]
    share = Sharing(min_tokens=0)
    with torch.no_grad():
        a = score_rows(model, rows, lengths, tok.eos_token_id, max_tokens=512, want_logits=True)
        b = score_rows(model, rows, lengths, tok.eos_token_id, max_tokens=512, want_logits=True,
                       share=share)
    assert share.shared_tokens > 0.25 * share.total_tokens
    assert _close(a["teacher_logp_BT"], b["teacher_logp_BT"]) < TOL
    ia, ib = a["teacher_logits_rows"], b["teacher_logits_rows"]
    m = ia.index_BT >= 0
    assert torch.equal(m, ib.index_BT >= 0)
    assert _close(ia.values_NV[ia.index_BT[m]], ib.values_NV[ib.index_BT[m]]) < TOL


# ---------------------------------------------------------------------------------------------
# the update: SmolLM2's chat template on ToolWorld-Easy episodes

def _toolworld(tok, n: int = 4):
    import agentsd
    from agentsd.demos import oracle_demos

    trajs = oracle_demos("ToolWorld-Easy-v0", agentsd.split_seeds("ToolWorld-Easy-v0", "train", n), tok)
    for t in trajs:
        for turn in t.turns:
            turn.action_logprobs = [-10.8] * len(turn.action_ids)
    return trajs


def _update_cfg(share: bool, **optim) -> TrainConfig:
    return TrainConfig(algo="opd", progress=False, tensorboard=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                       rollout=RolloutSettings(tasks_per_step=4, samples_per_task=1),
                       loss=LossConfig(chunk_size=64),
                       optim=OptimConfig(lr=1.0, grad_clip=0.0, share_prefix=share,
                                         share_prefix_min_tokens=0, **optim))


def _run_update(model, trajs, cfg, tok):
    from agentsd.distill.teacher import Teacher, build_teacher_rows
    from agentsd.distill.update import build_batch, update

    head = tok.encode("You are the teacher. Use the tools.")
    data = build_batch(trajs, cfg, 1, lambda t, i: build_teacher_rows(t, head + t.turns[0].prompt_ids, i))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    seen = {}

    def step(*a, **k):
        seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        return real(*a, **k)

    real = opt.step
    opt.step = step
    m, scores = update(model, opt, Teacher(model, "frozen"), data, cfg, tok.eos_token_id,
                       lambda _m: contextlib.nullcontext())
    return m, scores, seen


def test_update_on_smollm2_template_matches_the_unshared_update(tok):
    from agentsd.distill.trainer import build_student

    trajs = _toolworld(tok)
    base, _ = build_student(_update_cfg(True))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for n, p in base.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=gen)
    got = {}
    for share in (False, True):
        got[share] = _run_update(copy.deepcopy(base), trajs, _update_cfg(share), tok)
    (ma, sa, ga), (mb, sb, gb) = got[False], got[True]
    assert "prefix/shared_tokens" not in ma
    assert mb["prefix/shared_tokens"] > 0.5 * mb["prefix/total_tokens"]
    assert mb["prefix/total_tokens"] == 2 * sum(len(t.token_ids()) for t in trajs) + 4 * len(
        tok.encode("You are the teacher. Use the tools."))
    for k in ("loss/distill", "loss/total", "kl/mean", "optim/grad_norm"):
        assert mb[k] == pytest.approx(ma[k], rel=1e-5, abs=TOL), k
    for i in range(len(trajs)):
        for key in ("student_logp", "teacher_logp"):
            assert max(abs(x - y) for x, y in zip(sa[i][key], sb[i][key], strict=True)) < TOL
    assert ga.keys() == gb.keys() and ga
    assert max(_close(ga[k], gb[k]) for k in ga) < TOL


def test_micro_batches_count_the_computed_tokens_when_sharing(tok):
    from agentsd.distill.batch import micro_batches

    trajs = _toolworld(tok, 8)
    ids = [t.token_ids() for t in trajs]
    lengths = [len(x) for x in ids]
    plain = micro_batches(lengths, 4096)
    shared = micro_batches(lengths, 4096, ids, 1024)
    assert len(plain) == 4 and len(shared) == 1  # 8 x ~1,900 tokens, ~1,650 of them in common
    assert shared[0] == sorted(range(8), key=lambda i: (-lengths[i], i))
    assert micro_batches(lengths, 4096, ids, 10 ** 6) == plain  # nothing shares: as before


# ---------------------------------------------------------------------------------------------
# the real weights

@pytest.mark.slow
def test_real_smollm2_weights_match_the_unshared_path(tok):
    from agentsd.policy.models import load_model

    model, _ = load_model("smollm2")
    model = with_lora(model, rank=8).train()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(2)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=gen)
    trajs = _toolworld(tok, 2)
    ids, attn = pad_rows([t.token_ids() for t in trajs], tok.eos_token_id)
    pos = torch.zeros(ids.shape)
    for b, t in enumerate(trajs):
        pos[b, : len(t.action_mask())] = torch.tensor(t.action_mask(), dtype=torch.float32)
    share = Sharing(min_tokens=0)
    a = _logp_and_grads(model, ids, attn, pos, None)
    b = _logp_and_grads(model, ids, attn, pos, share)
    assert share.shared_tokens > 1000
    # 30 float32 layers and SmolLM2's large activations: the attention over a cached prefix
    # sums in another order than the full forward, ~2e-5 absolute on log-probs of ~8 (~3e-6
    # relative; the tiny models stay under 1e-5), varying from run to run at 2 threads
    m = pos.bool()
    diff = _close(a[0]["logp_BT"][m], b[0]["logp_BT"][m])
    print(f"real weights: logp max |shared - unshared| {diff:.2e}")
    assert diff < 5e-5
    assert abs(a[1] - b[1]) < TOL * max(1.0, abs(a[1]))
    for k in a[2]:  # gradients: relative to their scale
        assert _close(a[2][k], b[2][k]) <= max(TOL, 1e-4 * float(a[2][k].abs().max())), k


def test_config_switch_and_validation():
    assert OptimConfig().share_prefix is True
    with pytest.raises(ValueError, match="share_prefix_min_tokens"):
        OptimConfig(share_prefix_min_tokens=-1)
    assert dataclasses.replace(OptimConfig(), share_prefix=False).share_prefix is False
