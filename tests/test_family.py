"""The self-distillation family as options of the one loop (issue 15): SOD turn weights,
π-Distill, TRACE routing, SD-Zero / SDPO feedback teachers, UniSD agreement and divergence
clipping, AVSD consensus. Losses against closed forms (zero for identical student and teacher,
a two-token case, gradients against finite differences); the batch stage on hand-built
trajectories; config errors; one short training step per option on the tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from agentsd.distill import losses as L
from agentsd.distill.config import (
    LossConfig,
    ModelConfig,
    RolloutSettings,
    TeacherConfig,
    TrainConfig,
)
from agentsd.distill.update import (
    build_batch,
    fill_feedback,
    trace_marks,
    turn_agrees,
    turn_index,
)
from agentsd.hints import TeacherContextConfig, hint_text
from agentsd.trajectory import Trajectory, Turn

pytestmark = pytest.mark.usefixtures("one_thread")


# two-token closed form used throughout: student (1/2, 1/2), teacher (1/4, 3/4)
PS, PT = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])


# ---- SOD ------------------------------------------------------------------------------------

def test_sod_equal_divergence_gives_unit_weights():
    div = torch.tensor([[0.3, 0.3, 0.3, 0.0]])
    turn = torch.tensor([[0, 0, 1, -1]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(L.turn_weights(div, turn, mask, 2.0), mask)


def test_sod_two_turn_closed_form():
    # d = (0, ln 2), one token each, scale 1: raw (1, 1/2), token mean 1 -> (4/3, 2/3)
    div = torch.tensor([[0.0, math.log(2.0)]])
    w = L.turn_weights(div, torch.tensor([[0, 1]]), torch.ones(1, 2), 1.0)
    assert torch.allclose(w, torch.tensor([[4 / 3, 2 / 3]]))
    assert torch.allclose(L.turn_weights(div, torch.tensor([[0, 1]]), torch.ones(1, 2), 0.0),
                          torch.ones(1, 2))


def test_sod_turn_mean_uses_every_token_and_is_detached():
    # turn 0: tokens with divergence 0 and 2 (mean 1), turn 1: 0; scale ln 2 -> raw (1/2, 1)
    div = torch.tensor([[0.0, 2.0, 0.0]], requires_grad=True)
    w = L.turn_weights(div, torch.tensor([[0, 0, 1]]), torch.ones(1, 3), math.log(2.0))
    z = (0.5 * 2 + 1.0) / 3
    assert torch.allclose(w, torch.tensor([[0.5, 0.5, 1.0]]) / z) and not w.requires_grad


# ---- π-Distill ------------------------------------------------------------------------------

def test_pi_distill_identical_is_zero_at_alpha_one_and_entropy_below():
    z = torch.randn(3, 5)
    assert torch.allclose(L.pi_distill_divergence(z, z, 1.0), torch.zeros(3), atol=1e-6)
    lp = torch.log_softmax(z, -1)
    ent = -(lp.exp() * lp).sum(-1)
    assert torch.allclose(L.pi_distill_divergence(z, z, 0.5), 0.5 * ent, atol=1e-6)


def test_pi_distill_two_token_value_and_reverse_kl_at_alpha_one():
    s, t = PS.log(), PT.log()
    cross = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    want = cross - 0.5 * math.log(2.0)  # H(pS, pT) - 0.5 * H(pS) = 0.4904
    assert float(L.pi_distill_divergence(s, t, 0.5)) == pytest.approx(want, abs=1e-5)
    assert float(L.pi_distill_divergence(s, t, 1.0)) == pytest.approx(
        float(L.generalized_jsd(s, t, 1.0)), abs=1e-6)


def test_pi_distill_gradient_matches_finite_difference():
    torch.manual_seed(0)
    z, t = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    z.requires_grad_(True)
    L.pi_distill_divergence(z, t, 0.3).backward()
    eps, fd = 1e-3, torch.zeros(4, dtype=torch.float64)
    for i in range(4):
        d = torch.zeros(4, dtype=torch.float64)
        d[i] = eps
        fd[i] = (L.pi_distill_divergence(z.detach() + d, t, 0.3)
                 - L.pi_distill_divergence(z.detach() - d, t, 0.3)) / (2 * eps)
    assert torch.allclose(z.grad.float(), fd.float(), atol=1e-3)


def test_chunked_divergence_pi_mode_matches_the_pure_function():
    s, t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    got = L.chunked_divergence(s, t, mask, chunk_size=2, pi_alpha=0.5).loss_BT
    assert torch.allclose(got, L.pi_distill_divergence(s, t, 0.5) * mask, atol=1e-6)


# ---- TRACE ----------------------------------------------------------------------------------

def test_sampled_forward_kl_zero_when_identical():
    lp = torch.tensor([[-0.3, -1.2]], requires_grad=True)
    out = L.sampled_token_forward_kl(lp, lp.detach(), torch.ones(1, 2), None)
    assert float(out.loss_BT.detach().abs().sum()) == 0.0
    assert float(out.divergence_BT.abs().sum()) == 0.0


def test_sampled_forward_kl_is_unbiased_on_two_tokens():
    """Averaged over the student's own samples, the divergence is KL(T || S) and the gradient is
    that of KL(T || S) (which itself matches a finite difference)."""
    z = PS.log().clone().requires_grad_(True)
    t = PT.log()

    def fkl(logits: torch.Tensor) -> torch.Tensor:
        return (PT * (t - torch.log_softmax(logits, -1))).sum()

    want_val = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # 0.1308
    (g_exact,) = torch.autograd.grad(fkl(z), z)
    eps = 1e-3
    fd = torch.tensor([(fkl(z.detach() + eps * e) - fkl(z.detach() - eps * e)) / (2 * eps)
                       for e in torch.eye(2)])
    assert torch.allclose(g_exact, fd, atol=1e-3)
    val, grad = 0.0, torch.zeros(2)
    for y in range(2):
        lp = torch.log_softmax(z, -1)[y].view(1, 1)
        out = L.sampled_token_forward_kl(lp, t[y].view(1, 1), torch.ones(1, 1), None)
        (g,) = torch.autograd.grad(out.loss_BT.sum(), z)
        val += float(PS[y] * out.divergence_BT)
        grad += PS[y] * g
    assert val == pytest.approx(want_val, abs=1e-5)
    assert torch.allclose(grad, g_exact, atol=1e-5)


def test_trace_kl_schedule():
    assert [L.trace_kl_scale(s, 2, 4) for s in (0, 2, 3, 4, 6, 9)] == [1.0, 1.0, 0.75, 0.5, 0.0, 0.0]
    assert L.trace_kl_scale(3, 2, 0) == 0.0


def _turn(action: str, ref: str | None, n_prompt: int = 2, n_action: int = 2) -> Turn:
    return Turn(prompt_ids=[1] * n_prompt, action_ids=[5] * n_action,
                action_logprobs=[-1.0] * n_action, action_text=action,
                privileged={"reference": ref} if ref else {})


def test_turn_agreement_compares_parsed_actions():
    assert turn_agrees("thinking... <answer> Up </answer>", "<answer>up</answer>")
    assert not turn_agrees("<answer>Left</answer>", "<answer>Up</answer>")
    call = '<tool_call>{"name": "f", "arguments": {"a": 1, "b": 2}}</tool_call>'
    assert turn_agrees("ok " + call, '<tool_call>{"name": "f", "arguments": {"b": 2, "a": 1}}</tool_call>')


def test_trace_marks_and_turn_index():
    t = Trajectory(turns=[_turn("<answer>Up</answer>", "<answer>Up</answer>"),
                          _turn("<answer>Left</answer>", "<answer>Up</answer>"),
                          _turn("<answer>Up</answer>", None)], success=True)
    assert turn_index(t) == [-1, -1, 0, 0, -1, -1, 1, 1, -1, -1, 2, 2]
    fwd, rev = trace_marks(t)
    assert fwd == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert rev == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    t.success = False  # agreeing turns of a failed rollout go to GRPO
    assert sum(trace_marks(t)[0]) == 0 and trace_marks(t)[1] == rev


def test_build_batch_routes_trace_and_anneals():
    cfg = TrainConfig(loss=LossConfig(trace=True, trace_warmup_steps=1, trace_anneal_steps=2),
                      rollout=RolloutSettings(samples_per_task=2))
    trajs = [Trajectory(turns=[_turn("<answer>Up</answer>", "<answer>Up</answer>")], success=True,
                        total_reward=1.0),
             Trajectory(turns=[_turn("<answer>Down</answer>", "<answer>Up</answer>")])]
    d = build_batch(trajs, cfg, 2, step=2)
    assert d.kl_scale == 0.5 and d.grpo_w == [1.0, 1.0]
    assert d.trace_fwd[0] == [0, 0, 1, 1] and d.trace_rev[1] == [0, 0, 1, 1]


# ---- feedback teachers ----------------------------------------------------------------------

def _episode(success: bool, action: str) -> Trajectory:
    return Trajectory(turns=[_turn(action, "<answer>Up</answer>")], success=success,
                      total_reward=float(success), stop_reason="terminated",
                      final_observation=[{"role": "user", "content": "solved" if success else "stuck"}])


def test_reviser_feedback_is_the_groups_previous_attempt():
    trajs = [_episode(False, "<answer>Left</answer>"), _episode(True, "<answer>Up</answer>")]
    assert fill_feedback(trajs, "reviser", 2) == [True, True]
    fb0 = trajs[0].turns[0].privileged["extra"]["feedback"]
    fb1 = trajs[1].turns[0].privileged["extra"]["feedback"]
    assert "succeeded" in fb0 and "Up" in fb0  # sample 0 reads sample 1 (cyclic previous)
    assert "failed" in fb1 and "Left" in fb1
    assert trajs[0].turns[0].privileged["reference"] == "<answer>Up</answer>"  # views kept
    shown = hint_text(trajs[0].turns[0].privileged, TeacherContextConfig(views=("feedback",)))
    assert shown.startswith("Feedback from an earlier attempt") and "succeeded" in shown
    assert "feedback" not in hint_text(trajs[0].turns[0].privileged,
                                       TeacherContextConfig(views=("reference",))).lower()


def test_sibling_feedback_skips_groups_without_another_success():
    trajs = [_episode(True, "<answer>Up</answer>"), _episode(False, "<answer>Left</answer>"),
             _episode(False, "<answer>Left</answer>"), _episode(False, "<answer>Down</answer>")]
    # group 1: the success has no *other* success; the failure reads the success
    assert fill_feedback(trajs, "sibling", 2) == [False, True, False, False]
    assert "succeeded" in trajs[1].turns[0].privileged["extra"]["feedback"]
    assert "extra" not in trajs[2].turns[0].privileged


def test_build_batch_fills_feedback_before_teacher_rows_and_drops_skipped():
    cfg = TrainConfig(algo="opsd", rollout=RolloutSettings(samples_per_task=2),
                      teacher=TeacherConfig(feedback="sibling",
                                            context=TeacherContextConfig(views=("feedback",))))
    trajs = [_episode(True, "<answer>Up</answer>"), _episode(False, "<answer>Left</answer>")]
    seen = []

    def rows(t: Trajectory, i: int) -> list:
        seen.append((t.turns[0].privileged.get("extra") or {}).get("feedback"))
        return []

    d = build_batch(trajs, cfg, 2, rows)
    assert seen[0] is None and "succeeded" in seen[1]
    assert d.distill_w == [0.0, 1.0]


# ---- several teachers (UniSD agreement, AVSD) and divergence clipping -------------------------

def test_agreement_identical_teachers_unit_weight_and_two_teacher_value():
    mask = torch.ones(1, 2)
    t = torch.tensor([[-1.0, -2.0]])
    target, w = L.agreement_weights(torch.stack([t, t]), mask, 3.0)
    assert torch.equal(target, t) and torch.allclose(w, mask)
    two = torch.stack([torch.tensor([[-1.0]]), torch.tensor([[-2.0]])])
    target, w = L.agreement_weights(two, torch.ones(1, 1), 1.0)
    assert float(target) == pytest.approx(-1.5) and float(w) == pytest.approx(math.exp(-0.5))


def test_avsd_consensus_and_aligned_residual():
    lp, mask = torch.tensor([[-1.0]]), torch.ones(1, 1)
    t = torch.tensor([[-1.7]])
    assert torch.allclose(L.avsd_teacher_logp(lp, torch.stack([t, t, t]), mask), t)
    # gaps 0.5, 2.5: consensus 1.5, residuals -1 (against it: dropped), +1 (bounded to 0.5)
    views = torch.stack([torch.tensor([[-1.5]]), torch.tensor([[-3.5]])])
    assert float(L.avsd_teacher_logp(lp, views, mask, 0.5)) == pytest.approx(-1.0 - 1.75)
    # student == every view: zero gap, so the sampled-token reverse KL is zero
    same = L.avsd_teacher_logp(lp, torch.stack([lp, lp]), mask)
    out = L.sampled_token_reverse_kl(lp, same, lp, mask)
    assert float(out.loss_BT.abs().sum()) == 0.0


def test_divergence_clip_drops_large_tokens():
    div = torch.tensor([[0.1, -3.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert L.divergence_clip_mask(div, mask, 1.0).tolist() == [[1.0, 0.0, 1.0, 0.0]]


# ---- config ---------------------------------------------------------------------------------

def test_help_names_each_paper(monkeypatch, capsys):
    import re

    from agentsd.distill.flags import parse_config

    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    text = re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out)  # tyro draws boxes
    text = re.sub(r"-\s+", "-", " ".join(text.split()))  # and wraps at hyphens
    for name in ("SOD", "π-Distill", "TRACE", "SD-Zero", "SDPO", "UniSD", "AVSD"):
        assert name in text, name


@pytest.mark.parametrize("kw, message", [
    (lambda: dict(loss=LossConfig(trace=True), rollout=RolloutSettings(samples_per_task=1)),
     r"^TRACE \(loss\.trace\) .*samples_per_task >= 2"),
    (lambda: dict(teacher=TeacherConfig(feedback="reviser")), r"^SD-Zero reviser .*'feedback' view"),
    (lambda: dict(teacher=TeacherConfig(feedback="sibling", context=TeacherContextConfig(
        views=("feedback",))), rollout=RolloutSettings(samples_per_task=1)),
     r"^SDPO sibling .*needs a group"),
    (lambda: dict(teacher=TeacherConfig(context=TeacherContextConfig(views=("skills", "feedback")))),
     r"nothing fills it"),
    (lambda: dict(algo="grpo", loss=LossConfig(turn_weight="sod")), r"^SOD .*needs a teacher"),
    (lambda: dict(teacher=TeacherConfig(score_views=("reference",))), r"TeacherConfig\.score_views"),
    (lambda: dict(teacher=TeacherConfig(score_views=("reference", "notes")),
                  loss=LossConfig(kind="jsd")), r"several teachers"),
])
def test_methods_missing_a_piece_fail_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        TrainConfig(**kw())
    assert "\n" not in str(e.value)


def test_trace_without_a_reference_fails_at_config_time(monkeypatch):
    import agentsd.distill.config as C

    monkeypatch.setattr(C, "_env_has_reference", lambda env: False)
    with pytest.raises(ValueError, match=r"^TRACE \(loss\.trace\) needs the env's reference"):
        TrainConfig(loss=LossConfig(trace=True))


# ---- one step of the loop per option --------------------------------------------------------

def _tiny(tmp_path, name, **kw):
    base = dict(algo="opsd", steps=1, out_dir=str(tmp_path / name), eval_every=0,
                eval_at_start=False, eval_at_end=False, checkpoint_every=1, progress=False,
                tensorboard=False, samples_to_keep=0,
                model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                rollout=RolloutSettings(tasks_per_step=1, samples_per_task=2, max_turns=2,
                                        max_tokens=6, eval_tasks=1))
    base.update(kw)
    return TrainConfig(**base)


STEP = TeacherContextConfig(views=("reference",), exposure_mode="step")


@pytest.mark.parametrize("name, kw, keys", [
    ("sod_trace_reviser_clip", dict(
        loss=LossConfig(turn_weight="sod", trace=True, div_clip=5.0),
        teacher=TeacherConfig(feedback="reviser", context=TeacherContextConfig(
            views=("feedback", "reference"), exposure_mode="step"))),
     ("sod/turn_weight_min", "trace/kl_scale", "clip/div_frac", "loss/grpo")),
    ("unisd_agreement", dict(teacher=TeacherConfig(context=STEP, score_views=("reference", "plan"))),
     ("teacher/agreement_mean",)),
    ("avsd", dict(teacher=TeacherConfig(context=STEP, score_views=("reference", "plan"),
                                        combine="avsd")), ("kl/mean",)),
    ("pi_distill", dict(loss=LossConfig(kind="pi_distill", pi_alpha=0.5),
                        teacher=TeacherConfig(context=STEP)), ("kl/mean",)),
])
def test_each_option_runs_one_step(tmp_path, name, kw, keys):
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import train

    train(_tiny(tmp_path, name, **kw))
    [row] = read_metrics(tmp_path / name)
    for k in keys:
        assert k in row and math.isfinite(row[k]), k
    assert math.isfinite(row["loss/total"])


def test_docstring_examples_of_the_family():
    import doctest

    import agentsd.distill.update as U

    for mod in (U, L):
        r = doctest.testmod(mod)
        assert r.attempted > 0 and r.failed == 0, mod.__name__


# ---- ATESD: adaptive teacher exposure ---------------------------------------------------------

def test_atesd_digamma_and_beta_score_match_torch():
    from agentsd.distill import exposure as X

    for x in (0.3, 1.0, 2.5, 7.0, 40.0):
        assert X.digamma(x) == pytest.approx(float(torch.special.digamma(torch.tensor(x, dtype=torch.float64))),
                                             abs=1e-10)
    a = torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(4.1, dtype=torch.float64, requires_grad=True)
    lp = torch.distributions.Beta(a, b).log_prob(torch.tensor(0.3, dtype=torch.float64))
    lp.backward()
    assert X.beta_log_prob(0.3, 2.3, 4.1) == pytest.approx(float(lp.detach()), abs=1e-10)
    assert X.beta_score(0.3, 2.3, 4.1) == pytest.approx((float(a.grad), float(b.grad)), abs=1e-10)


def test_atesd_reinforce_step_closed_form():
    # w = 0, x = (1): alpha = beta = 1 + ln 2, sigmoid(0) = 1/2; at e = 1/2 the two scores are
    # equal, so both weights move by lr * A * (log 1/2 - psi(a) + psi(2a)) / 2
    from agentsd.distill import exposure as X

    a = 1 + math.log(2.0)
    psi = lambda v: float(torch.special.digamma(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    step = 0.1 * 2.0 * (math.log(0.5) - psi(a) + psi(2 * a)) / 2
    wa, wb = X.reinforce_step([0.0], [0.0], [1.0], 0.5, advantage=2.0, lr=0.1)
    assert wa == pytest.approx([step], abs=1e-12) and wb == pytest.approx([step], abs=1e-12)
    # a rewarded high exposure raises the policy's mean, a punished one lowers it
    for adv, sign in ((1.0, 1), (-1.0, -1)):
        wa, wb = X.reinforce_step([0.0, 0.0], [0.0, 0.0], [1.0, 0.5], 0.9, adv, 0.5)
        mean = (1 + X.softplus(wa[0] + 0.5 * wa[1])) / (2 + X.softplus(wa[0] + 0.5 * wa[1])
                                                       + X.softplus(wb[0] + 0.5 * wb[1]))
        assert sign * (mean - 0.5) > 0


def test_atesd_reinforce_step_is_the_autograd_gradient_and_capped():
    from agentsd.distill import exposure as X

    w_a, w_b, x, e = [0.3, -0.2, 0.1], [0.5, 0.4, -0.3], [1.0, 0.25, -0.6], 0.37
    ta = torch.tensor(w_a, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(w_b, dtype=torch.float64, requires_grad=True)
    tx = torch.tensor(x, dtype=torch.float64)
    sp = torch.nn.functional.softplus
    torch.distributions.Beta(1 + sp(ta @ tx), 1 + sp(tb @ tx)).log_prob(
        torch.tensor(e, dtype=torch.float64)).backward()
    na, nb = X.reinforce_step(w_a, w_b, x, e, advantage=1.5, lr=0.2)
    assert [n - w for n, w in zip(na, w_a, strict=True)] == pytest.approx((0.3 * ta.grad).tolist(), abs=1e-10)
    assert [n - w for n, w in zip(nb, w_b, strict=True)] == pytest.approx((0.3 * tb.grad).tolist(), abs=1e-10)
    ca, cb = X.reinforce_step(w_a, w_b, x, e, advantage=1e3, lr=1.0, max_step=0.01)
    norm = math.sqrt(sum((n - w) ** 2 for n, w in zip(ca + cb, w_a + w_b, strict=True)))
    assert norm == pytest.approx(0.01)


def test_atesd_learning_progress_and_initial_policy():
    from agentsd.distill import exposure as X

    # r_0 = (R1 - R0) + 0.5 (R2 - R1); r_1 with H = 1 is R2 - R1
    assert X.learning_progress([1.0, 3.0, 2.0], 0, 2, 0.5) == pytest.approx(2.0 - 0.5)
    assert X.learning_progress([1.0, 3.0, 2.0], 1, 1, 0.5) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="needs 3 closed windows"):
        X.learning_progress([1.0, 3.0], 0, 2, 0.5)
    c = X.BetaExposureController(seed=0, init=0.3, concentration=10.0)
    a, b = c.alpha_beta(c.features(0.7, 0.2))
    assert (a, b) == pytest.approx((3.0, 7.0))  # mean init, alpha + beta = concentration
    with pytest.raises(ValueError, match="concentration"):
        X.BetaExposureController(seed=0, init=0.05, concentration=6.0)


def test_atesd_controller_holds_scores_after_the_horizon_and_resumes_exactly():
    import json

    from agentsd.distill import exposure as X

    def run(c, steps, rewards):
        out = []
        for s in steps:
            out.append(c.decide(s, success=0.5, reward=rewards[s]))
            c.observe(0.1 * s)
        return out

    rewards = {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 3.0, 6: 3.0, 7: 0.0, 8: 0.0}
    c = X.BetaExposureController(seed=3, hold=2, horizon=1, lr=0.5)
    es = run(c, range(1, 5), rewards)
    assert es[0] == es[1] and es[2] == es[3] and es[0] != es[2]  # one draw per window of 2
    assert c.window_means == [0.0] and "atesd/progress_reward" not in c.last
    w0 = (list(c.w_a), list(c.w_b))
    run(c, [5], rewards)  # window 1 closed: decision 0 scored with r = R1 - R0 = 1
    assert c.window_means == [0.0, 1.0] and c.last["atesd/progress_reward"] == pytest.approx(1.0)
    assert (c.w_a, c.w_b) != w0 and c.baseline == pytest.approx(1.0)
    # the state goes through JSON (the checkpoint) and the resumed controller decides the same
    saved = json.loads(json.dumps(c.state_dict()))
    tail = run(c, [6, 7, 8], rewards)
    d = X.BetaExposureController(seed=3, hold=2, horizon=1, lr=0.5)
    d.load_state_dict(saved)
    assert run(d, [6, 7, 8], rewards) == tail and (d.w_a, d.w_b) == (c.w_a, c.w_b)


def test_atesd_exposure_truncates_the_hint():
    from agentsd.distill import exposure as X

    c = X.BetaExposureController(seed=1, init=0.4, concentration=5.0)
    e = c.decide(1, success=0.0, reward=0.0)
    plan = ["Up", "Up", "Left", "Left", "Up", "Right", "Right"]
    ctx = TeacherContextConfig(views=("plan",), exposure=e)
    shown = hint_text({"plan": plan}, ctx).split(": ", 1)[1].split()
    assert shown == plan[:math.ceil(e * len(plan))] and 0 < len(shown) < len(plan)


def test_atesd_help_names_the_paper():
    import dataclasses

    [f] = [f for f in dataclasses.fields(TeacherConfig) if f.name == "exposure_control"]
    assert "ATESD" in f.metadata["help"]


@pytest.mark.parametrize("kw, message", [
    (lambda: dict(teacher=TeacherConfig(exposure_control="atesd")),
     r"^ATESD \(teacher\.exposure_control='atesd'\) needs a view that exposure reveals"),
    (lambda: dict(algo="grpo", teacher=TeacherConfig(exposure_control="atesd")),
     r"^ATESD .*needs a teacher"),
    (lambda: dict(algo="rft", loss=LossConfig(div_clip=2.0)), r"^UniSD divergence clipping .*needs a teacher"),
    (lambda: dict(loss=LossConfig(turn_weight="sod"), rollout=RolloutSettings(max_turns=1)),
     r"^SOD .*needs episodes of >= 2 turns"),
    (lambda: dict(loss=LossConfig(pass_rate_a=1.0, pass_rate_b=1.0),
                  rollout=RolloutSettings(samples_per_task=1)), r"^PACED .*needs? a group"),
    (lambda: dict(loss=LossConfig(grpo_coef=0.5), rollout=RolloutSettings(samples_per_task=1)),
     r"GRPO blend .*needs a group"),
    (lambda: dict(algo="grpo", loss=LossConfig(kind="pi_distill")), r"^π-Distill .*needs a teacher"),
    (lambda: dict(teacher=TeacherConfig(combine="avsd")), r"^AVSD .*needs several teachers"),
    (lambda: dict(loss=LossConfig(success_routing=True), rollout=RolloutSettings(samples_per_task=1)),
     r"^SRPO .*needs a group"),
])
def test_more_methods_missing_a_piece_fail_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        TrainConfig(**kw())
    assert "\n" not in str(e.value)


def test_views_the_env_does_not_fill_fail_at_config_time(monkeypatch):
    import agentsd.distill.config as C

    monkeypatch.setattr(C, "_env_views", lambda env: {"notes"})
    atesd = TeacherConfig(exposure_control="atesd", context=TeacherContextConfig(views=("plan",)))
    with pytest.raises(ValueError, match=r"^ATESD .*fills none of the views \['plan'\]"):
        TrainConfig(teacher=atesd)
    with pytest.raises(ValueError, match=r"^several teachers .*does not fill the view\(s\) \['plan'\]"):
        TrainConfig(teacher=TeacherConfig(score_views=("reference", "plan")))


def test_atesd_in_the_loop_resumes_exactly(tmp_path):
    """Three steps straight vs two steps then a resume to three: the same exposures, controller
    updates and losses (the controller's state rides in the checkpoint)."""
    import dataclasses

    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import train

    atesd = TeacherConfig(exposure_control="atesd", atesd_horizon=1, context=TeacherContextConfig(
        views=("plan",), exposure_mode="step"))

    def cfg(name, steps):
        return dataclasses.replace(_tiny(tmp_path, name, algo="opd", teacher=atesd), steps=steps)

    train(cfg("ref", 3))
    train(cfg("run", 2))
    assert train(cfg("run", 3)).resumed_from == 2

    def det(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    a, b = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert det(a) == det(b) and [r["step"] for r in b] == [1, 2, 3]
    assert 0 < a[0]["atesd/exposure"] < 1 and "atesd/progress_reward" in a[2]


def test_compare_script_maps_each_family_variant_to_trainer_flags():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "compare.py"
    spec = importlib.util.spec_from_file_location("compare_script", path)
    cmp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cmp)
    args = cmp.parse_args(["--model", "tiny-random", "--steps", "6", "--algos", "opd", "sod", "trace",
                           "sdzero", "sdpo", "atesd"])
    cfg = {a: cmp.run_config(args, a, 0, "unused", args.steps) for a in args.algos}
    assert all(c.algo == "opd" for c in cfg.values())
    assert cfg["opd"].loss == LossConfig() and cfg["opd"].teacher.context.views == ("skills", "reference")
    assert cfg["sod"].loss.turn_weight == "sod"
    assert (cfg["trace"].loss.trace, cfg["trace"].loss.trace_warmup_steps,
            cfg["trace"].loss.trace_anneal_steps) == (True, 3, 3)
    assert (cfg["sdzero"].teacher.feedback, cfg["sdzero"].teacher.context.views) == (
        "reviser", ("skills", "feedback"))
    assert cfg["sdpo"].teacher.feedback == "sibling"
    assert (cfg["atesd"].teacher.exposure_control, cfg["atesd"].teacher.context.views) == (
        "atesd", ("skills", "plan"))
