"""The objective's and the teacher's config sections (``--loss.*``, ``--teacher.*``), re-exported
by :mod:`agentsd.distill.config` with the rest of the trainer's configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentsd.distill.config_fields import _check, _f, check_fields
from agentsd.distill.teacher import TEACHER_MODES
from agentsd.hints import SKILLS_AT, TeacherContextConfig

__all__ = ["LossConfig", "TeacherConfig", "STEP_SAMPLING"]

#: OPAD's step-level sampling modes (``loss.step_sampling``)
STEP_SAMPLING = ("off", "per-step-mean", "one-step")


@dataclass(frozen=True)
class LossConfig:
    """The per-token objective (see :mod:`agentsd.distill.losses`)."""

    kind: str = _f("reverse_kl", "distillation loss: reverse_kl (sampled-token, IS-weighted), "
                                 "pg (policy-gradient form), jsd (full-vocabulary or top-k "
                                 "generalized JSD), pi_distill (π-Distill: full-vocabulary "
                                 "H(pS,pT) - pi_alpha*H(pS) on action tokens)",
                   choices=("reverse_kl", "pg", "jsd", "pi_distill"))
    alpha: float = _f(1.0, "jsd only: 0 forward KL(teacher||student) ... 1 reverse KL", ge=0, le=1,
                      note="(0 forward KL, 1 reverse KL)")
    pi_alpha: float = _f(1.0, "pi_distill only (π-Distill): entropy coefficient alpha in "
                              "H(pS,pT) - alpha*H(pS); 1 = reverse KL, <1 keeps entropy",
                         ge=0, le=1)
    top_k: int = _f(0, "jsd only: top-k bins plus a tail bucket (0 = full vocabulary)",
                    kind=int, ge=0)
    pg_coef: float = _f(1.0, "pg only: advantage = -coef * (log p_sampler - log p_teacher)", ge=0)
    is_clip: float = _f(2.0, "importance-weight clip: rho = min(p_theta / p_sampler, is_clip); "
                             "0 disables", ge=1, off=0)
    token_clip: float = _f(0.0, "point-wise clip of the per-token signal (0 = off)", ge=0)
    position_weight: str = _f("none", "per-token weight by position: none, linear, sqrt",
                              choices=("none", "linear", "sqrt"))
    position_start: float = _f(0.5, "position weight at the first action token (ramps to 1)",
                               ge=0, le=1)
    pass_rate_a: float = _f(0.0, "per-task weight p^a (1-p)^b over the group's pass rate p; "
                                 "a = b = 0 disables", ge=0)
    pass_rate_b: float = _f(0.0, "see pass_rate_a", ge=0)
    success_routing: bool = _f(False, "route successful samples to GRPO, failed ones to "
                                       "distillation (SRPO)")
    distill_coef: float = _f(1.0, "weight of the distillation term", ge=0)
    grpo_coef: float = _f(0.0, "weight of the GRPO term on the env reward (blend)", ge=0)
    grpo_clip_eps: float = _f(0.2, "GRPO ratio clip epsilon", ge=0)
    grpo_std_norm: bool = _f(True, "divide group advantages by the group's reward std")
    reduce: str = _f("token", "token (mean over all action tokens) or sequence (mean of "
                              "per-sequence means)", choices=("token", "sequence"))
    chunk_size: int = _f(256, "positions per chunk of output-head / log-softmax computation",
                         kind=int, ge=1)
    turn_weight: str = _f("none", "per-turn distillation weight: none, or sod (SOD, step-wise "
                                  "OPD for small agents: w_k = exp(-sod_scale * mean divergence "
                                  "of turn k), normalized to token mean 1 per trajectory)",
                          choices=("none", "sod"))
    sod_scale: float = _f(1.0, "SOD: how fast a turn's weight falls with its mean divergence "
                               "(nats^-1; 0 = uniform)", ge=0)
    trace: bool = _f(False, "TRACE token routing: forward KL on turns of successful rollouts "
                            "that match the env's reference step, reverse KL on turns that do "
                            "not, GRPO (coef grpo_coef, or 1 if 0) on the other tokens")
    trace_warmup_steps: int = _f(10, "TRACE: steps with the KL channel at full strength",
                                 kind=int, ge=0)
    trace_anneal_steps: int = _f(10, "TRACE: steps after the warm-up over which the KL channel "
                                     "falls linearly to 0 (its tokens move to GRPO)", kind=int, ge=0)
    div_clip: float = _f(0.0, "UniSD divergence clipping: drop tokens whose per-token "
                              "divergence exceeds this (nats) from distillation (0 = off)", ge=0)
    cepo: bool = _f(False, "CEPO (contrastive evidence policy optimization): replace the "
                           "distillation loss by a policy gradient on token credit "
                           "relu(min(e+, -e-)) - relu(min(-e+, e-)), e+/e- the correct-answer / "
                           "wrong-answer teacher's log-prob minus the student's; the wrong-answer "
                           "teacher reads a rejected rollout of the group in place of the answer; "
                           "groups without a failed rollout are not distilled")
    cepo_coef: float = _f(1.0, "CEPO: scale of the token credit", ge=0)
    curio_sft: bool = _f(False, "CurioSFT (entropy-preserving SFT by self-distillation), algo "
                                "sft/rft: add KL(q || p) toward the student's own distribution at a "
                                "per-token temperature tau = 1 + (tau_max - 1) * clamp(1 - H / "
                                "entropy_target, 0, 1) (stop-gradient q)")
    curio_coef: float = _f(1.0, "CurioSFT: weight of the self-distillation term", ge=0)
    curio_tau_max: float = _f(2.0, "CurioSFT: temperature at zero entropy (>= 1)", ge=1)
    curio_entropy_target: float = _f(1.0, "CurioSFT: entropy (nats) at and above which the "
                                          "temperature is 1 (no flattening)", gt=0)
    gt_mix: float = _f(0.0, "ground-truth target mixing (Even your Teacher Needs Guidance): "
                            "target (1 - w) pT + w * ground truth on the tokens of turns that "
                            "match the env's reference step, fixed weight w (0 = off)",
                    ge=0, le=1)
    gt_floor: float = _f(0.0, "ground-truth target mixing with the closed-form weight "
                              "w = clamp((floor - pT) / (1 - pT), 0, 1): the ground truth gets at "
                              "least this share of the target (0 = off; not with gt_mix)",
                      ge=0, le=1)
    task_divergence: bool = _f(False, "OPAD task-adaptive divergence: reverse KL on code envs "
                                      "(tag 'code'), the symmetric JSD (alpha 0.5, full "
                                      "vocabulary) on agentic ones; overrides kind and alpha")
    tsd_select: bool = _f(False, "TSD-KD token selection: distill only tokens where the teacher "
                                 "is relatively more confident than the student, log pT(y) - "
                                 "log pS(y) > tsd_margin")
    tsd_margin: float = _f(0.0, "TSD-KD: the log-ratio margin a token must exceed", kind=float)
    tsd_rerank_weight: float = _f(0.0, "TSD-KD indirect feedback: weight of a ranking loss "
                                       "added to the distillation term; the teacher ranks each "
                                       "task's candidates (the group's samples) by their mean "
                                       "teacher log-prob per action token, and a pairwise "
                                       "Bradley-Terry loss on the student's mean log-probs pushes "
                                       "up the ones it ranks higher (0 = off; needs "
                                       "rollout.samples_per_task >= 2)", ge=0)
    tsd_rerank_margin: float = _f(0.0, "TSD-KD re-ranking: two candidates whose teacher scores "
                                       "differ by at most this (nats per token) are tied: no "
                                       "pair", ge=0)
    step_sampling: str = _f("off", "OPAD step-level sampling: off; per-step-mean (every step "
                                   "(turn) of an episode is one sample: its action tokens' "
                                   "mean, steps averaged over the batch, so long turns do not "
                                   "dominate); one-step (one step per episode drawn uniformly "
                                   "from (seed, step, task, sample), its tokens' mean, episodes "
                                   "averaged: long episodes do not dominate); replaces the "
                                   "token normalization of every term (reduce must be 'token')",
                            choices=STEP_SAMPLING)

    def __post_init__(self) -> None:
        check_fields(self)
        _check(not (self.gt_mix and self.gt_floor), "LossConfig", "gt_floor",
               "and gt_mix are two ways to set one weight: set one of them", self.gt_floor)


@dataclass(frozen=True)
class TeacherConfig:
    """Which weights score, and what the teacher sees."""

    mode: str = _f("frozen", "live | frozen (LoRA adapter disabled) | ema | sync",
                   choices=TEACHER_MODES)
    ema_decay: float = _f(0.95, "ema mode: teacher <- decay * teacher + (1 - decay) * student",
                          ge=0, lt=1)
    sync_every: int = _f(10, "sync mode: copy the student into the teacher every N steps",
                         kind=int, ge=1)
    sync_on_improve: bool = _f(False, "sync mode: only sync when held-out success improved")
    skills_dir: str = _f("", "skill library root (default: the shipped skills/ folder)")
    bandit_c: float = _f(1.0, "exploration constant of the skill-usefulness bandit", ge=0)
    context: TeacherContextConfig = _f(TeacherContextConfig(), "teacher context")
    skills_at: str = _f("system", "where the teacher reads its skills: system (the task's system "
                                  "message) or user (the end of the latest user/observation "
                                  "message of every turn, before that turn's hint); the scoring "
                                  "rows and the acting teacher alike", choices=SKILLS_AT)
    max_tokens_per_forward: int = _f(8192, "padded tokens per teacher forward", kind=int, ge=1)
    feedback: str = _f("none", "what fills the 'feedback' view: none; reviser (SD-Zero: the "
                               "previous sample of the same group, i.e. an earlier attempt at "
                               "the task, with its reward and the env's replies); sibling "
                               "(SDPO: a successful other sample of the group; groups without "
                               "one are not distilled)", choices=("none", "reviser", "sibling"))
    score_views: tuple[str, ...] = _f((), "several teachers: score each listed view as its own "
                                          "teacher context (plus skills for opd) and combine "
                                          "them per 'combine'; empty = one teacher")
    combine: str = _f("agreement", "several teachers: agreement (UniSD: mean target, token "
                                   "weight exp(-agreement_scale * std of their log-probs)), "
                                   "avsd (AVSD: consensus gap + aligned, bounded per-view "
                                   "residuals), mean, or confidence (MAD-OPD: each "
                                   "teacher weighted by its confidence in the token)",
                         choices=("agreement", "avsd", "mean", "confidence"))
    agreement_scale: float = _f(1.0, "UniSD agreement: weight = exp(-scale * teacher spread)",
                                ge=0)
    avsd_residual: float = _f(0.5, "AVSD: bound on each view's residual gap (nats)", ge=0)
    exposure_control: str = _f("none", "how much of the privileged solution the teacher sees "
                                       "during training: none (context.exposure, fixed) or atesd "
                                       "(ATESD, adaptive teacher exposure: a Beta policy over "
                                       "training-state statistics, rewarded by learning progress, "
                                       "picks the reveal ratio; see agentsd.distill.exposure)",
                                 choices=("none", "atesd"))
    atesd_init: float = _f(0.5, "ATESD: mean exposure of the controller's first Beta policy",
                           gt=0, lt=1)
    atesd_concentration: float = _f(6.0, "ATESD: alpha + beta of the first Beta policy (larger: "
                                         "draws closer to the mean)", gt=2)
    atesd_lr: float = _f(0.5, "ATESD: the controller's REINFORCE learning rate", ge=0)
    atesd_hold: int = _f(1, "ATESD: steps one sampled exposure is held for (a window)",
                         kind=int, ge=1)
    atesd_horizon: int = _f(2, "ATESD: windows of later learning progress that score a decision",
                            kind=int, ge=1)
    atesd_discount: float = _f(0.5, "ATESD: discount of later windows' progress in the reward",
                               ge=0, le=1)
    confidence_scale: float = _f(1.0, "MAD-OPD (combine=confidence): teacher n's weight on a "
                                      "token is softmax_n(scale * log pT_n(y)), the target their "
                                      "weighted mixture (0: plain mixture, large: the most "
                                      "confident teacher)", ge=0)
    refine: str = _f("none", "none, or vpd (VPD, Variational Policy Distillation): after each "
                             "update the teacher's own weights (mode ema or sync) take a trust-region "
                             "policy-gradient step on the trajectories' outcomes in its context "
                             "(E-step) while the student distills it (M-step)",
                     choices=("none", "vpd"))
    vpd_lr: float = _f(1e-4, "VPD: SGD learning rate of the teacher's E-step", ge=0)
    vpd_steps: int = _f(1, "VPD: gradient steps per E-step", kind=int, ge=1)
    vpd_kl: float = _f(0.1, "VPD: weight of the KL(teacher before || teacher after) penalty", ge=0)
    vpd_clip: float = _f(0.2, "VPD: ratio clip epsilon of the E-step's surrogate", ge=0)

    def __post_init__(self) -> None:
        check_fields(self)
        if isinstance(self.context, dict):
            object.__setattr__(self, "context", TeacherContextConfig(**self.context))
        if self.context.skills_at != self.skills_at:  # one setting: teacher.skills_at wins
            _check(self.context.skills_at == "system" or self.skills_at == "system", "TeacherConfig",
                   "skills_at", f"disagrees with teacher.context.skills_at="
                   f"{self.context.skills_at!r} (set one of them)", self.skills_at)
            at = self.skills_at if self.skills_at != "system" else self.context.skills_at
            object.__setattr__(self, "skills_at", at)
            object.__setattr__(self, "context", dataclasses.replace(self.context, skills_at=at))
        views = tuple(self.score_views) if not isinstance(self.score_views, str) else (self.score_views,)
        object.__setattr__(self, "score_views", views)
        if views:
            TeacherContextConfig(views=views)  # unknown or repeated view names fail here
            _check(len(views) >= 2 and "skills" not in views, "TeacherConfig", "score_views",
                   "must name at least two views, not 'skills' (each view is one teacher)", views)
        _check(self.atesd_concentration * min(self.atesd_init, 1 - self.atesd_init) > 1,
               "TeacherConfig", "atesd_concentration",
               "must exceed 1 / min(atesd_init, 1 - atesd_init) (alpha, beta > 1)",
               self.atesd_concentration)
