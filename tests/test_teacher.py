"""Teacher scoring, alignment on a real chat template, teacher modes, and a distillation check."""

from __future__ import annotations

import pytest
import torch

from agentsd.distill import losses as L
from agentsd.distill.models import tiny_random_model, with_lora
from agentsd.distill.teacher import (
    AlignmentError,
    Teacher,
    build_teacher_rows,
    forward_logprobs,
    pad_rows,
    render_prompt,
    score_rows,
)
from agentsd.trajectory import Trajectory, Turn


@pytest.fixture(scope="module")
def tok():
    from agentsd.policy.models import load_tokenizer

    return load_tokenizer("smollm2")


def _chat_trajectory(tok, task, actions, replies):
    """A trajectory built the way the rollout engine builds one: per turn, the tokens of the
    newly rendered messages plus the generation prompt, then the sampled action ids."""
    convo = list(task)
    turns, prev = [], []
    for k, action in enumerate(actions):
        full = render_prompt(tok, convo)
        assert full[: len(prev)] == prev, "the template rewrote history"
        obs = task if k == 0 else [convo[-1]]
        act_ids = tok.encode(action, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
        turns.append(Turn(observation=obs, prompt_ids=full[len(prev):], action_ids=act_ids,
                          action_logprobs=[-0.5] * len(act_ids), action_text=action))
        convo += [{"role": "assistant", "content": action}, {"role": "user", "content": replies[k]}]
        prev = full + act_ids
    return Trajectory(env_id="Sokoban-Easy-v0", turns=turns, seed=0)


TASK = [{"role": "user", "content": "Push the box onto the target.\n#####\n#@$.#\n#####"}]
ACTIONS = ["<answer>Right</answer>", "I will go <answer>Right Right</answer>", "<answer>Up</answer>"]
REPLIES = ["You moved. Box not on target.", "Blocked by a wall.", "done"]


def test_alignment_exact_on_real_chat_template(tok):
    from agentsd.hints import TeacherContextConfig, build_teacher_messages
    from agentsd.types import Privileged

    traj = _chat_trajectory(tok, TASK, ACTIONS, REPLIES)
    cfg = TeacherContextConfig(views=("skills", "plan"))
    t_msgs = build_teacher_messages(TASK, Privileged(plan=["Right", "Right"]),
                                    ["Push boxes only toward targets."], cfg)
    tp = render_prompt(tok, t_msgs)
    [row] = build_teacher_rows(traj, tp)
    ids = traj.token_ids()
    assert [row.input_ids[i] for i in row.row_pos] == [ids[j] for j in row.student_pos]
    assert len(row.student_pos) == traj.num_action_tokens()
    # the teacher row is exactly what the teacher conversation renders to: splicing the student's
    # tokens after the teacher prompt loses or shifts nothing
    convo = list(t_msgs)
    for a, r in zip(ACTIONS[:-1], REPLIES[:-1], strict=True):
        convo += [{"role": "assistant", "content": a}, {"role": "user", "content": r}]
    rendered = render_prompt(tok, convo) + tok.encode(ACTIONS[-1], add_special_tokens=False)
    assert row.input_ids[: len(rendered)] == rendered
    assert tok.decode(row.input_ids[row.row_pos[0]:row.row_pos[0] + 3]).startswith("<answer>")


def test_stepwise_rows_score_each_turn_once(tok):
    traj = _chat_trajectory(tok, TASK, ACTIONS, REPLIES)
    prompts = [render_prompt(tok, [{"role": "system", "content": f"hint for turn {k}"}, *TASK])
               for k in range(3)]
    rows = build_teacher_rows(traj, prompts)
    assert len(rows) == 3
    covered = sorted(j for r in rows for j in r.student_pos)
    mask = traj.action_mask()
    assert covered == [i for i, m in enumerate(mask) if m]
    ids = traj.token_ids()
    for r, tp in zip(rows, prompts, strict=True):
        assert r.input_ids[: len(tp)] == tp
        assert [r.input_ids[i] for i in r.row_pos] == [ids[j] for j in r.student_pos]
        assert r.row_pos[-1] == len(r.input_ids) - 1  # a turn's row ends with its action
    with pytest.raises(ValueError, match="one per turn"):
        build_teacher_rows(traj, prompts[:2])
    with pytest.raises(AlignmentError):
        build_teacher_rows(traj, [])


def test_score_rows_matches_plain_forward_and_is_batch_invariant(tok):
    model = tiny_random_model(vocab_size=len(tok), hidden_size=16, seed=1, init_std=0.2)
    trajs = [_chat_trajectory(tok, TASK, ACTIONS[:n], REPLIES[:n]) for n in (1, 3)]
    tp = render_prompt(tok, [{"role": "system", "content": "skills here"}, *TASK])
    rows = [r for i, t in enumerate(trajs) for r in build_teacher_rows(t, tp, traj_index=i)]
    lengths = [len(t.token_ids()) for t in trajs]
    batched = score_rows(model, rows, lengths)["teacher_logp_BT"]
    one_by_one = score_rows(model, rows, lengths, max_tokens=1)["teacher_logp_BT"]
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    for r in rows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([r.input_ids])).logits[0]
        ref = torch.log_softmax(logits.float(), -1)
        for i, j in zip(r.row_pos, r.student_pos, strict=True):
            assert float(batched[r.traj_index, j]) == pytest.approx(float(ref[i - 1, r.input_ids[i]]),
                                                                   abs=1e-5)
    mask = torch.zeros_like(batched)
    for i, t in enumerate(trajs):
        mask[i, : lengths[i]] = torch.tensor(t.action_mask(), dtype=torch.float32)
    assert bool((batched[mask == 0] == 0).all()) and bool((batched[mask == 1] < 0).all())


def test_forward_logprobs_chunked_matches_logits_and_grads():
    model = tiny_random_model(vocab_size=97, seed=2, init_std=0.3).train()
    ids, attn = pad_rows([[1, 5, 9, 3, 7], [4, 4, 2]])
    out = forward_logprobs(model, ids, attn, chunk_size=3, want_entropy=True)
    ref = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
    ref_lp = ref[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(out["logp_BT"][:, 1:], ref_lp, atol=1e-5)
    assert torch.allclose(out["entropy_BT"][:, 1:], -(ref.exp() * ref).sum(-1)[:, :-1], atol=1e-4)
    (g1,) = torch.autograd.grad((out["logp_BT"] * attn).sum(), model.model.embed_tokens.weight)
    (g2,) = torch.autograd.grad((ref_lp * attn[:, 1:]).sum(), model.model.embed_tokens.weight)
    assert torch.allclose(g1, g2, atol=1e-5)


def test_logits_at_positions_only_equal_the_dense_logits_there():
    model = tiny_random_model(vocab_size=97, seed=2, init_std=0.3).train()
    ids, attn = pad_rows([[1, 5, 9, 3, 7], [4, 4, 2]])
    pos = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]])
    dense = forward_logprobs(model, ids, attn, want_logits=True)["logits_BTV"]
    rows = forward_logprobs(model, ids, attn, want_logits=True, positions_BT=pos)["logits_rows"]
    assert rows.values_NV.shape == (4, 97)  # N x V, not B x T x V
    assert rows.index_BT.tolist() == [[-1, -1, 0, 1, -1], [-1, 2, 3, -1, -1]]
    at = pos.reshape(-1).nonzero().squeeze(-1)
    assert torch.allclose(rows.at(at), dense.reshape(-1, 97)[at], atol=1e-5)
    (g1,) = torch.autograd.grad(rows.values_NV.square().sum(), model.model.embed_tokens.weight)
    (g2,) = torch.autograd.grad(dense.reshape(-1, 97)[at].square().sum(),
                                model.model.embed_tokens.weight)
    assert torch.allclose(g1, g2, atol=1e-4)


# ---- teacher modes --------------------------------------------------------------------------

def _lora_model(seed=3, dropout=0.0):
    return with_lora(tiny_random_model(vocab_size=64, seed=seed, init_std=0.3), rank=4,
                     dropout=dropout)


def _perturb_adapter(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _lp(model):
    ids, attn = pad_rows([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        return forward_logprobs(model, ids, attn)["logp_BT"]


def test_frozen_teacher_is_base_model_and_restores_student():
    model = _lora_model()
    base_lp = _lp(model)
    _perturb_adapter(model, 0)
    model.train()
    student_lp = _lp(model)
    assert not torch.allclose(student_lp, base_lp)
    teacher = Teacher(model, "frozen")
    assert teacher.snapshot is None  # LoRA: no copy of any weights
    with teacher.scoring() as m:
        assert not m.training
        assert torch.allclose(_lp(m), base_lp, atol=1e-6)
    assert model.training and torch.allclose(_lp(model), student_lp)
    live = Teacher(model, "live")
    with live.scoring() as m:
        assert torch.allclose(_lp(m), student_lp, atol=1e-6)


def test_teacher_turns_dropout_off():
    model = _lora_model(dropout=0.5)
    _perturb_adapter(model, 1)
    model.train()
    teacher = Teacher(model, "live")
    with teacher.scoring() as m:
        a, b = _lp(m), _lp(m)
    assert torch.equal(a, b)


def test_ema_and_sync_modes():
    model = _lora_model()
    ema = Teacher(model, "ema", ema_decay=0.5)
    sync = Teacher(model, "sync", sync_every=2)
    gated = Teacher(model, "sync", sync_every=1, sync_on_improve=True)
    name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    start = p.detach().clone()
    _perturb_adapter(model, 2)
    now = p.detach().clone()
    ema.after_step(1)
    assert torch.allclose(ema.snapshot[name], 0.5 * start + 0.5 * now)
    assert sync.after_step(1) == {"teacher_age": 1.0, "teacher_sync": 0.0}
    assert torch.equal(sync.snapshot[name], start)
    assert sync.after_step(2) == {"teacher_age": 0.0, "teacher_sync": 1.0}
    assert torch.equal(sync.snapshot[name], now)
    assert gated.after_step(1)["teacher_sync"] == 0.0  # no held-out improvement yet
    gated.report_eval(0.3)
    assert gated.after_step(2)["teacher_sync"] == 1.0
    gated.report_eval(0.2)
    assert gated.after_step(3)["teacher_sync"] == 0.0
    # the swapped-in teacher computes with the snapshot, then the student comes back
    model.train()
    student_lp = _lp(model)
    with ema.scoring() as m:
        ema_lp = _lp(m)
    assert not torch.allclose(ema_lp, student_lp) and torch.equal(_lp(model), student_lp)
    state = ema.state_dict()
    other = Teacher(model, "ema", ema_decay=0.5)
    other.load_state_dict(state)
    with other.scoring() as m:
        assert torch.equal(_lp(m), ema_lp)
    with pytest.raises(ValueError, match="mode"):
        Teacher(model, "stale")


def test_distillation_toward_fixed_teacher_reduces_reverse_kl():
    """The student (adapter on, short prompt) learns on its own samples to match a fixed teacher
    (adapter off, a different prompt): the exact full-vocabulary reverse KL on fresh student
    samples must fall by more than a quarter."""
    V, n_new = 32, 6
    model = with_lora(tiny_random_model(vocab_size=V, hidden_size=32, seed=5, init_std=0.1), rank=8)
    teacher = Teacher(model, "frozen")
    s_prompt, t_prompt = [1, 2, 3], [7, 8, 9, 10, 11, 3]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)

    def sample(n, seed):
        g = torch.Generator().manual_seed(seed)
        seqs = torch.tensor([s_prompt] * n)
        with torch.no_grad():
            for _ in range(n_new):
                probs = torch.softmax(model(input_ids=seqs).logits[:, -1].float(), -1)
                seqs = torch.cat([seqs, torch.multinomial(probs, 1, generator=g)], 1)
        return seqs

    def batch_tensors(seqs):
        resp = seqs[:, len(s_prompt):]
        t_seqs = torch.cat([torch.tensor([t_prompt] * len(seqs)), resp], 1)
        mask = torch.zeros(seqs.shape)
        mask[:, len(s_prompt):] = 1
        return t_seqs, mask

    def exact_reverse_kl(seed):
        seqs = sample(64, seed)
        t_seqs, mask = batch_tensors(seqs)
        with torch.no_grad():
            s_logits = model(input_ids=seqs).logits[:, len(s_prompt) - 1:-1]
            with teacher.scoring() as m:
                t_logits = m(input_ids=t_seqs).logits[:, len(t_prompt) - 1:-1]
        return float(L.generalized_jsd(s_logits, t_logits, alpha=1.0).sum(-1).mean())

    before = exact_reverse_kl(1000)
    model.train()
    for step in range(20):
        seqs = sample(16, step)
        t_seqs, mask = batch_tensors(seqs)
        with teacher.scoring() as m:
            t_lp = forward_logprobs(m, t_seqs, torch.ones_like(t_seqs))["logp_BT"]
        t_lp_aligned = torch.zeros(seqs.shape)
        t_lp_aligned[:, len(s_prompt):] = t_lp[:, len(t_prompt):]
        lp = forward_logprobs(model, seqs, torch.ones_like(seqs))["logp_BT"]
        out = L.sampled_token_reverse_kl(lp, t_lp_aligned, lp.detach(), mask)
        opt.zero_grad()
        L.masked_mean(out.loss_BT, mask).backward()
        opt.step()
    after = exact_reverse_kl(1000)
    assert before > 0.3, f"the setup needs a real gap to close (before={before:.3f})"
    assert after < 0.75 * before, f"reverse KL {before:.3f} -> {after:.3f}"
