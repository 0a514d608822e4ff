"""TSD-KD's indirect feedback (the teacher re-ranks the student's own candidates) and OPAD's
step-level sampling against closed forms: the ranking loss at its extremes, its gradient's sign
and a hand-written reference; the update's gradient equal to the ranking loss's whatever the
micro-batching; the step weights' sums and the one-step draw; their config-time errors; one step
of the loop per option; the compare arms in ``scripts/family_arms.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from agentsd.distill import family_losses as F
from agentsd.distill import family_more as FM
from agentsd.distill.config import (
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutSettings,
    TeacherConfig,
    TrainConfig,
)
from agentsd.trajectory import Trajectory, Turn

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- TSD-KD: the ranking loss ----------------------------------------------------------------

def _bt_reference(s: list[float], t: list[float], valid: list[bool], margin: float) -> float:
    """The pairwise Bradley-Terry loss written out: the mean over pairs the teacher orders (i
    above j by more than the margin) of -log sigmoid(s_i - s_j)."""
    terms = [-math.log(1.0 / (1.0 + math.exp(-(s[i] - s[j]))))
             for i in range(len(s)) for j in range(len(s))
             if valid[i] and valid[j] and t[i] - t[j] > margin]
    return sum(terms) / len(terms) if terms else 0.0


def _grad(s: list[float], t: list[float], valid: list[bool] | None = None, margin: float = 0.0):
    sv = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    v = None if valid is None else torch.tensor([float(x) for x in valid], dtype=torch.float64)
    loss = F.tsd_rerank_loss(sv, torch.tensor(t, dtype=torch.float64), v, margin)
    loss.backward()
    return float(loss.detach()), sv.grad.tolist()


def test_all_candidates_tied_give_zero_loss_and_zero_gradient():
    assert _grad([-0.3, -2.0, -1.0], [-1.0, -1.0, -1.0]) == (0.0, [0.0, 0.0, 0.0])
    # within the margin is a tie too
    assert _grad([-0.3, -2.0], [-1.0, -1.05], margin=0.1) == (0.0, [0.0, 0.0])
    assert F.rerank_pairs(torch.tensor([-1.0, -1.0, -1.0])).sum() == 0


def test_an_indifferent_student_under_a_strict_order_costs_log_2():
    # s all equal: every pair costs log 2; pairs (0,1) (0,2) (1,2), each sigmoid(0) = 1/2
    loss, g = _grad([-1.0, -1.0, -1.0], [-1.0, -2.0, -3.0])
    assert loss == pytest.approx(math.log(2.0), abs=1e-12)
    assert g == pytest.approx([-1 / 3, 0.0, 1 / 3], abs=1e-12)


def test_gradient_pushes_up_what_the_teacher_ranks_higher():
    s = [-0.2, -1.5, -0.9, -3.0]  # the student's own order differs from the teacher's
    t = [-2.5, -0.4, -1.0, -4.0]  # teacher: 1 > 2 > 0 > 3
    _, g = _grad(s, t)
    assert g[1] < 0 and g[3] > 0  # top pushed up, bottom down (gradient descent: -g)
    # flip the teacher's order: every sign flips (fails if the direction were reversed)
    _, g_flip = _grad(s, [-x for x in t])
    assert g_flip[1] > 0 and g_flip[3] < 0
    # a descent step raises the top candidate's score over the bottom one
    step = [a - 0.1 * b for a, b in zip(s, g, strict=True)]
    assert step[1] - step[3] > s[1] - s[3]
    assert _grad(step, t)[0] < _grad(s, t)[0]


def test_rerank_loss_and_gradient_match_a_hand_written_reference():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = (torch.randn(5, generator=gen, dtype=torch.float64) * 2).tolist()
        t = torch.randn(5, generator=gen, dtype=torch.float64).tolist()
        valid = (torch.rand(5, generator=gen) > 0.2).tolist()
        loss, g = _grad(s, t, valid, margin=0.3)
        assert loss == pytest.approx(_bt_reference(s, t, valid, 0.3), abs=1e-12)
        # closed form: dL/ds_i = (sum_j P_ji sigmoid(s_i - s_j) - sum_j P_ij sigmoid(s_j - s_i)) / |P|
        P = [[float(valid[i] and valid[j] and t[i] - t[j] > 0.3) for j in range(5)] for i in range(5)]
        n = max(sum(map(sum, P)), 1.0)
        sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
        ref = [(sum(P[j][i] * sig(s[i] - s[j]) for j in range(5))
                - sum(P[i][j] * sig(s[j] - s[i]) for j in range(5))) / n for i in range(5)]
        assert g == pytest.approx(ref, abs=1e-12)
        assert all(gi == 0.0 for gi, ok in zip(g, valid, strict=True) if not ok)


def test_rerank_terms_take_the_groups_mean_apart_per_candidate():
    # group 0 ordered (0 above 1), group 1 tied, group 2: candidate 5 invalid, 4 above... nothing
    s = [-1.0, -2.0, -1.0, -1.5, -0.5, -0.7]
    t = [-0.5, -3.0, -1.0, -1.0, -0.2, -9.0]
    valid = [True, True, True, True, True, False]
    r = FM.rerank_terms(s, t, valid, G=2, weight=0.5)
    loss0, g0 = _grad(s[:2], t[:2])
    assert r.coef[:2] == pytest.approx([0.5 * x for x in g0], abs=1e-12)  # one ranked group
    assert r.coef[2:] == [0.0] * 4 and r.share[2:] == [0.0] * 4
    assert sum(r.share) == pytest.approx(0.5 * loss0, abs=1e-12)
    assert r.ranked == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert r.agree == [[1.0], [], [], [], [], []]  # the student already scores 0 above 1
    # the mean runs over every rank's ranked groups when told their number
    r4 = FM.rerank_terms(s, t, valid, G=2, weight=0.5, n_groups=4.0)
    assert r4.coef[:2] == pytest.approx([x / 4 for x in r.coef[:2]], abs=1e-12)


# ---- TSD-KD through the update: the gradient is the ranking loss's ----------------------------

def _rerank_setup(weight: float, max_tokens: int):
    import agentsd
    from agentsd.demos import oracle_demos
    from agentsd.distill.teacher import Teacher, build_teacher_rows
    from agentsd.distill.trainer import build_student
    from agentsd.distill.update import build_batch

    cfg = TrainConfig(algo="opd", progress=False, tensorboard=False,
                      model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                      rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=2),
                      loss=LossConfig(chunk_size=64, tsd_rerank_weight=weight),
                      optim=OptimConfig(lr=1.0, grad_clip=0.0, memory_budget_gb=-1.0,
                                        max_tokens_per_micro_batch=max_tokens))
    model, tok = build_student(cfg)
    with torch.no_grad():  # a student unlike its frozen teacher
        gen = torch.Generator().manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=gen)
    # four different episodes read as two groups of two candidates (task-major)
    trajs = oracle_demos("Sokoban-Easy-v0", agentsd.split_seeds("Sokoban-Easy-v0", "train", 4),
                         tok, max_turns=2)
    for t in trajs:
        for turn in t.turns:
            turn.action_logprobs = [-10.8] * len(turn.action_ids)
    prefix = tok.encode("You are the teacher. Solve it.")
    data = build_batch(trajs, cfg, 2, lambda t, i: build_teacher_rows(t, prefix, i))
    return cfg, model, tok, data, Teacher(model, "frozen")


def _update(weight: float, max_tokens: int) -> tuple[dict, dict[str, torch.Tensor], tuple]:
    from agentsd.distill.update import update

    cfg, model, tok, data, teacher = _rerank_setup(weight, max_tokens)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    m, _ = update(model, opt, teacher, data, cfg, tok.eos_token_id,
                  lambda _m: contextlib.nullcontext())
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return m, {n: before[n] - after[n] for n in before}, (cfg, model, tok, data, teacher, before)


def _direct_rerank_grad(cfg, model, tok, data, teacher, before) -> tuple[float, dict]:
    """The ranking loss computed in one forward over all four trajectories, differentiated."""
    from agentsd.distill.batch import micro_batch
    from agentsd.distill.teacher import forward_logprobs, score_rows

    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(before[n])
    idx = list(range(len(data.trajs)))
    mb = micro_batch(data, idx, [t.token_ids() for t in data.trajs], 1.0, cfg, tok.eos_token_id, "cpu")
    lp = forward_logprobs(model, mb.ids_BT, mb.attn_BT, chunk_size=64, positions_BT=mb.mask_BT)
    s = (lp["logp_BT"] * mb.mask_BT).sum(-1) / mb.mask_BT.sum(-1)
    rows = [r for i in idx for r in data.rows[i]]
    with teacher.scoring() as tm:
        t_lp = score_rows(tm, rows, [len(t.token_ids()) for t in data.trajs], tok.eos_token_id,
                          chunk_size=64)["teacher_logp_BT"]
    t = (t_lp * mb.mask_BT).sum(-1) / mb.mask_BT.sum(-1)
    losses = [F.tsd_rerank_loss(s[a:a + 2], t[a:a + 2]) for a in (0, 2)]
    ranked = [x for x, a in zip(losses, (0, 2), strict=True) if F.rerank_pairs(t[a:a + 2]).sum() > 0]
    loss = cfg.loss.tsd_rerank_weight * sum(ranked) / len(ranked)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return float(loss.detach()), {n: (g if g is not None else torch.zeros_like(p))
                         for (n, p), g in zip(params.items(), grads, strict=True)}


def test_update_gradient_is_the_ranking_loss_gradient_whatever_the_micro_batching():
    m_off, d_off, _ = _update(0.0, 100_000)
    m_one, d_one, setup = _update(2.0, 100_000)  # one micro-batch
    m_split, d_split, _ = _update(2.0, 300)  # every trajectory alone
    assert "loss/tsd_rerank" not in m_off and m_one["tsd/rerank_ranked_frac"] == 1.0
    loss, grad = _direct_rerank_grad(*setup)
    assert m_one["loss/tsd_rerank"] == pytest.approx(loss, rel=1e-5)
    assert m_split["loss/tsd_rerank"] == pytest.approx(loss, rel=1e-5)
    scale = max(float(g.abs().max()) for g in grad.values())
    assert scale > 0
    for n, g in grad.items():  # SGD, lr 1: the rerank term's share of the step is its gradient
        assert torch.allclose(d_one[n] - d_off[n], g, atol=1e-5 * scale), n
        assert torch.allclose(d_split[n], d_one[n], atol=1e-5 * scale), n


# ---- OPAD: step-level sampling -------------------------------------------------------------

def _episode(*action_lens: int, seed: int = 7) -> Trajectory:
    return Trajectory(env_id="e", seed=seed, turns=[
        Turn(prompt_ids=[1] * (k + 2), action_ids=[2] * n, action_logprobs=[-1.0] * n)
        for k, n in enumerate(action_lens)])


def _spans(t: Trajectory, w: list[float]) -> list[float]:
    """Per turn, the sum of its action tokens' weights (and 0 on every prompt token)."""
    out, i = [], 0
    for turn in t.turns:
        assert w[i:i + len(turn.prompt_ids)] == [0.0] * len(turn.prompt_ids)
        i += len(turn.prompt_ids)
        out.append(sum(w[i:i + len(turn.action_ids)]))
        i += len(turn.action_ids)
    assert i == len(w) == len(t.token_ids())
    return out


def test_per_step_mean_gives_every_step_weight_one_whatever_its_length():
    t = _episode(1, 4, 7)
    w = FM.step_weights(t, "per-step-mean")
    assert _spans(t, w) == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert set(w) == {0.0, 1.0, 0.25, 1 / 7}
    # a turn without action tokens is no step
    t0 = _episode(3, 0, 2)
    assert _spans(t0, FM.step_weights(t0, "per-step-mean")) == pytest.approx([1.0, 0.0, 1.0])


def test_one_step_keeps_exactly_one_action_span_deterministically():
    t = _episode(2, 5, 3, 0)
    picks = [FM.sampled_step(t, (0, step, 7, 1)) for step in range(300)]
    assert picks == [FM.sampled_step(t, (0, step, 7, 1)) for step in range(300)]  # seeded
    assert set(picks) == {0, 1, 2}  # never the turn without action tokens
    assert all(60 <= picks.count(k) <= 140 for k in (0, 1, 2))  # uniform: 100 each expected
    for k in (0, 1, 2):
        assert _spans(t, FM.step_weights(t, "one-step", pick=k)) == pytest.approx(
            [float(j == k) for j in range(4)], abs=1e-12)
    assert FM.sampled_step(_episode(0, 0), (0, 1, 2, 3)) is None
    assert FM.step_weights(_episode(2, 3), "one-step", pick=None) == [0.0] * 10


def _step_cfg(mode: str, **kw) -> TrainConfig:
    return TrainConfig(algo="opd", seed=3, progress=False, tensorboard=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                       rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=3),
                       loss=LossConfig(step_sampling=mode, **kw))


def _normalized(mode: str, trajs: list[Trajectory], step: int = 5) -> tuple[list[list[float]], float]:
    """Each trajectory's token weights as the micro-batches carry them (tok_w_BT), under the
    update's own normalization (:func:`agentsd.distill.update._plan`)."""
    from agentsd.distill.batch import build_batch, micro_batch, micro_batches
    from agentsd.distill.trainer import build_student
    from agentsd.distill.update import _plan

    cfg = _step_cfg(mode)
    data = build_batch(trajs, cfg, 2, None, step=step)
    model, _ = build_student(cfg)
    plan = _plan(model, data, cfg, 40)
    out: list[list[float]] = [[] for _ in trajs]
    for idx in micro_batches(plan.lengths, 40):  # several micro-batches: one global denominator
        mb = micro_batch(data, idx, plan.tok_ids, plan.denom, cfg, 0, "cpu")
        for b, i in enumerate(idx):
            out[i] = mb.tok_w_BT[b, : plan.lengths[i]].tolist()
    return out, plan.denom


TRAJS = [_episode(1, 4, 7, seed=11), _episode(2, 2, seed=11), _episode(6, seed=12),
         _episode(3, 1, 5, seed=12)]


def test_per_step_mean_batch_weights_sum_to_one_with_each_step_one_over_the_steps():
    w, denom = _normalized("per-step-mean", TRAJS)
    assert denom == pytest.approx(9.0)  # 3 + 2 + 1 + 3 steps
    spans = [_spans(t, x) for t, x in zip(TRAJS, w, strict=True)]
    assert [s for sp in spans for s in sp] == pytest.approx([1 / 9] * 9, abs=1e-7)
    assert sum(map(sum, w)) == pytest.approx(1.0, abs=1e-6)


def test_one_step_batch_weights_pick_one_step_per_episode_each_one_over_the_episodes():
    w, denom = _normalized("one-step", TRAJS)
    assert denom == pytest.approx(4.0)
    spans = [_spans(t, x) for t, x in zip(TRAJS, w, strict=True)]
    for sp in spans:
        assert sorted(sp)[-1] == pytest.approx(0.25, abs=1e-7) and sum(v > 0 for v in sp) == 1
    assert w == _normalized("one-step", TRAJS)[0]  # the same draw for the same (seed, step)
    picks = {tuple(tuple(_spans(t, x)) for t, x in zip(TRAJS, _normalized("one-step", TRAJS, s)[0],
                                                       strict=True)) for s in range(6)}
    assert len(picks) > 1  # another step draws other steps


def test_step_sampling_off_leaves_the_batch_untouched():
    from agentsd.distill.batch import build_batch

    assert build_batch(TRAJS, _step_cfg("off"), 2, None).family == {}


# ---- config-time errors ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (lambda: dict(loss=LossConfig(tsd_rerank_weight=1.0), rollout=RolloutSettings(samples_per_task=1)),
     r"^TSD-KD re-ranking \(loss\.tsd_rerank_weight > 0\) ranks .*samples_per_task >= 2, got 1$"),
    (lambda: dict(algo="grpo", loss=LossConfig(tsd_rerank_weight=1.0)), r"^TSD-KD re-ranking .*needs a teacher"),
    (lambda: dict(loss=LossConfig(tsd_rerank_weight=1.0, distill_coef=0.0)),
     r"^TSD-KD re-ranking .*distill_coef must be > 0"),
    (lambda: dict(loss=LossConfig(tsd_rerank_weight=-1.0)), r"LossConfig\.tsd_rerank_weight"),
    (lambda: dict(loss=LossConfig(step_sampling="one-step"), rollout=RolloutSettings(max_turns=1)),
     r"^OPAD step-level sampling .*needs episodes of >= 2 turns"),
    (lambda: dict(loss=LossConfig(step_sampling="per-step-mean", reduce="sequence")),
     r"^OPAD step-level sampling .*sets the normalization itself: leave loss\.reduce at 'token'"),
    (lambda: dict(loss=LossConfig(step_sampling="per-turn")), r"LossConfig\.step_sampling must be"),
    (lambda: dict(algo="rft", loss=LossConfig(step_sampling="one-step")), r"^OPAD .*needs a teacher"),
])
def test_missing_pieces_fail_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        TrainConfig(**kw())
    assert "\n" not in str(e.value)


def test_help_names_the_papers():
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(LossConfig)}
    assert "TSD-KD" in helps["tsd_rerank_weight"] and "OPAD" in helps["step_sampling"]


# ---- one step of the loop per option, and the compare arms ----------------------------------

@pytest.mark.parametrize("name, loss, keys", [
    ("rerank", LossConfig(tsd_select=True, tsd_rerank_weight=1.0),
     ("loss/tsd_rerank", "tsd/rerank_ranked_frac", "tsd/kept_frac")),
    ("per_step", LossConfig(step_sampling="per-step-mean"), ("kl/mean",)),
    ("one_step", LossConfig(step_sampling="one-step", grpo_coef=0.5), ("kl/mean", "loss/grpo")),
])
def test_each_option_runs_one_step(tmp_path, name, loss, keys):
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import train
    from agentsd.hints import TeacherContextConfig

    train(TrainConfig(
        algo="opsd", steps=1, out_dir=str(tmp_path / name), eval_every=0, eval_at_start=False,
        eval_at_end=False, checkpoint_every=1, progress=False, tensorboard=False, samples_to_keep=0,
        model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
        rollout=RolloutSettings(tasks_per_step=1, samples_per_task=3, max_turns=2, max_tokens=6,
                                eval_tasks=1),
        loss=loss, teacher=TeacherConfig(context=TeacherContextConfig(views=("reference",),
                                                                      exposure_mode="step"))))
    [row] = read_metrics(tmp_path / name)
    for k in (*keys, "loss/total"):
        assert k in row and math.isfinite(row[k]), k


def _arms():
    path = Path(__file__).resolve().parents[1] / "scripts" / "family_arms.py"
    spec = importlib.util.spec_from_file_location("family_arms", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_family_arms_flags_build_the_configs_their_variants_name():
    from agentsd.distill.flags import parse_config

    arms = _arms()
    assert set(arms.ARMS) == set(arms.VARIANTS) == {"tsd-kd-rerank", "opad-step", "opad-one-step"}
    for name, flags in arms.ARMS.items():
        cfg, _ = parse_config(flags)
        v = arms.VARIANTS[name]
        assert cfg.algo == v["algo"], name
        for k, want in v["loss"].items():
            assert getattr(cfg.loss, k) == want, (name, k)
