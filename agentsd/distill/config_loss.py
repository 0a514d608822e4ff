"""The objective's and the teacher's config sections (``--loss.*``, ``--teacher.*``), re-exported
by :mod:`agentsd.distill.config` with the rest of the trainer's configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentsd.distill.config_fields import _check, _f, _nonneg, _pos_int
from agentsd.hints import SKILLS_AT, TeacherContextConfig

__all__ = ["LossConfig", "TeacherConfig"]


@dataclass(frozen=True)
class LossConfig:
    """The per-token objective (see :mod:`agentsd.distill.losses`)."""

    kind: str = _f("reverse_kl", "distillation loss: reverse_kl (sampled-token, IS-weighted), "
                                 "pg (policy-gradient form), jsd (full-vocabulary or top-k "
                                 "generalized JSD), pi_distill (π-Distill: full-vocabulary "
                                 "H(pS,pT) - pi_alpha*H(pS) on action tokens)")
    alpha: float = _f(1.0, "jsd only: 0 forward KL(teacher||student) ... 1 reverse KL")
    pi_alpha: float = _f(1.0, "pi_distill only (π-Distill): entropy coefficient alpha in "
                              "H(pS,pT) - alpha*H(pS); 1 = reverse KL, <1 keeps entropy")
    top_k: int = _f(0, "jsd only: top-k bins plus a tail bucket (0 = full vocabulary)")
    pg_coef: float = _f(1.0, "pg only: advantage = -coef * (log p_sampler - log p_teacher)")
    is_clip: float = _f(2.0, "importance-weight clip: rho = min(p_theta / p_sampler, is_clip); "
                             "0 disables")
    token_clip: float = _f(0.0, "point-wise clip of the per-token signal (0 = off)")
    position_weight: str = _f("none", "per-token weight by position: none, linear, sqrt")
    position_start: float = _f(0.5, "position weight at the first action token (ramps to 1)")
    pass_rate_a: float = _f(0.0, "per-task weight p^a (1-p)^b over the group's pass rate p; "
                                 "a = b = 0 disables")
    pass_rate_b: float = _f(0.0, "see pass_rate_a")
    success_routing: bool = _f(False, "route successful samples to GRPO, failed ones to "
                                       "distillation (SRPO)")
    distill_coef: float = _f(1.0, "weight of the distillation term")
    grpo_coef: float = _f(0.0, "weight of the GRPO term on the env reward (blend)")
    grpo_clip_eps: float = _f(0.2, "GRPO ratio clip epsilon")
    grpo_std_norm: bool = _f(True, "divide group advantages by the group's reward std")
    reduce: str = _f("token", "token (mean over all action tokens) or sequence (mean of "
                              "per-sequence means)")
    chunk_size: int = _f(256, "positions per chunk of output-head / log-softmax computation")
    turn_weight: str = _f("none", "per-turn distillation weight: none, or sod (SOD, step-wise "
                                  "OPD for small agents: w_k = exp(-sod_scale * mean divergence "
                                  "of turn k), normalized to token mean 1 per trajectory)")
    sod_scale: float = _f(1.0, "SOD: how fast a turn's weight falls with its mean divergence "
                               "(nats^-1; 0 = uniform)")
    trace: bool = _f(False, "TRACE token routing: forward KL on turns of successful rollouts "
                            "that match the env's reference step, reverse KL on turns that do "
                            "not, GRPO (coef grpo_coef, or 1 if 0) on the other tokens")
    trace_warmup_steps: int = _f(10, "TRACE: steps with the KL channel at full strength")
    trace_anneal_steps: int = _f(10, "TRACE: steps after the warm-up over which the KL channel "
                                     "falls linearly to 0 (its tokens move to GRPO)")
    div_clip: float = _f(0.0, "UniSD divergence clipping: drop tokens whose per-token "
                              "divergence exceeds this (nats) from distillation (0 = off)")
    cepo: bool = _f(False, "CEPO (contrastive evidence policy optimization): replace the "
                           "distillation loss by a policy gradient on token credit "
                           "relu(min(e+, -e-)) - relu(min(-e+, e-)), e+/e- the correct-answer / "
                           "wrong-answer teacher's log-prob minus the student's; the wrong-answer "
                           "teacher reads a rejected rollout of the group in place of the answer; "
                           "groups without a failed rollout are not distilled")
    cepo_coef: float = _f(1.0, "CEPO: scale of the token credit")
    curio_sft: bool = _f(False, "CurioSFT (entropy-preserving SFT by self-distillation), algo "
                                "sft/rft: add KL(q || p) toward the student's own distribution at a "
                                "per-token temperature tau = 1 + (tau_max - 1) * clamp(1 - H / "
                                "entropy_target, 0, 1) (stop-gradient q)")
    curio_coef: float = _f(1.0, "CurioSFT: weight of the self-distillation term")
    curio_tau_max: float = _f(2.0, "CurioSFT: temperature at zero entropy (>= 1)")
    curio_entropy_target: float = _f(1.0, "CurioSFT: entropy (nats) at and above which the "
                                          "temperature is 1 (no flattening)")
    gt_mix: float = _f(0.0, "ground-truth target mixing (Even your Teacher Needs Guidance): "
                            "target (1 - w) pT + w * ground truth on the tokens of turns that "
                            "match the env's reference step, fixed weight w (0 = off)")
    gt_floor: float = _f(0.0, "ground-truth target mixing with the closed-form weight "
                              "w = clamp((floor - pT) / (1 - pT), 0, 1): the ground truth gets at "
                              "least this share of the target (0 = off; not with gt_mix)")
    task_divergence: bool = _f(False, "OPAD task-adaptive divergence: reverse KL on code envs "
                                      "(tag 'code'), the symmetric JSD (alpha 0.5, full "
                                      "vocabulary) on agentic ones; overrides kind and alpha")
    tsd_select: bool = _f(False, "TSD-KD token selection: distill only tokens where the teacher "
                                 "is relatively more confident than the student, log pT(y) - "
                                 "log pS(y) > tsd_margin")
    tsd_margin: float = _f(0.0, "TSD-KD: the log-ratio margin a token must exceed")

    def __post_init__(self) -> None:
        _check(self.kind in ("reverse_kl", "pg", "jsd", "pi_distill"), "LossConfig", "kind",
               "must be 'reverse_kl', 'pg', 'jsd' or 'pi_distill'", self.kind)
        _check(0 <= self.pi_alpha <= 1, "LossConfig", "pi_alpha", "must be in [0, 1]",
               self.pi_alpha)
        _check(self.turn_weight in ("none", "sod"), "LossConfig", "turn_weight",
               "must be 'none' or 'sod'", self.turn_weight)
        _nonneg("LossConfig", self, "sod_scale", "div_clip")
        for n in ("trace_warmup_steps", "trace_anneal_steps"):
            _check(isinstance(getattr(self, n), int) and getattr(self, n) >= 0, "LossConfig", n,
                   "must be an int >= 0", getattr(self, n))
        _check(0 <= self.alpha <= 1, "LossConfig", "alpha",
               "must be in [0, 1] (0 forward KL, 1 reverse KL)", self.alpha)
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "LossConfig", "top_k",
               "must be an int >= 0", self.top_k)
        _nonneg("LossConfig", self, "is_clip", "token_clip", "pass_rate_a", "pass_rate_b",
                "distill_coef", "grpo_coef", "grpo_clip_eps", "pg_coef")
        _check(self.position_weight in ("none", "linear", "sqrt"), "LossConfig",
               "position_weight", "must be 'none', 'linear' or 'sqrt'", self.position_weight)
        _check(0 <= self.position_start <= 1, "LossConfig", "position_start", "must be in [0, 1]",
               self.position_start)
        _check(self.reduce in ("token", "sequence"), "LossConfig", "reduce",
               "must be 'token' or 'sequence'", self.reduce)
        _check(self.is_clip == 0 or self.is_clip >= 1, "LossConfig", "is_clip",
               "must be 0 (off) or >= 1", self.is_clip)
        _pos_int("LossConfig", self, "chunk_size")
        _nonneg("LossConfig", self, "cepo_coef", "curio_coef")
        _check(self.curio_tau_max >= 1, "LossConfig", "curio_tau_max", "must be >= 1",
               self.curio_tau_max)
        _check(self.curio_entropy_target > 0, "LossConfig", "curio_entropy_target", "must be > 0",
               self.curio_entropy_target)
        _check(0 <= self.gt_mix <= 1, "LossConfig", "gt_mix", "must be in [0, 1]", self.gt_mix)
        _check(0 <= self.gt_floor <= 1, "LossConfig", "gt_floor", "must be in [0, 1]",
               self.gt_floor)
        _check(not (self.gt_mix and self.gt_floor), "LossConfig", "gt_floor",
               "and gt_mix are two ways to set one weight: set one of them", self.gt_floor)


@dataclass(frozen=True)
class TeacherConfig:
    """Which weights score, and what the teacher sees."""

    mode: str = _f("frozen", "live | frozen (LoRA adapter disabled) | ema | sync")
    ema_decay: float = _f(0.95, "ema mode: teacher <- decay * teacher + (1 - decay) * student")
    sync_every: int = _f(10, "sync mode: copy the student into the teacher every N steps")
    sync_on_improve: bool = _f(False, "sync mode: only sync when held-out success improved")
    skills_dir: str = _f("", "skill library root (default: the shipped skills/ folder)")
    bandit_c: float = _f(1.0, "exploration constant of the skill-usefulness bandit")
    context: TeacherContextConfig = _f(TeacherContextConfig(), "teacher context")
    skills_at: str = _f("system", "where the teacher reads its skills: system (the task's system "
                                  "message) or user (the end of the latest user/observation "
                                  "message of every turn, before that turn's hint); the scoring "
                                  "rows and the acting teacher alike")
    max_tokens_per_forward: int = _f(8192, "padded tokens per teacher forward")
    feedback: str = _f("none", "what fills the 'feedback' view: none; reviser (SD-Zero: the "
                               "previous sample of the same group, i.e. an earlier attempt at "
                               "the task, with its reward and the env's replies); sibling "
                               "(SDPO: a successful other sample of the group; groups without "
                               "one are not distilled)")
    score_views: tuple[str, ...] = _f((), "several teachers: score each listed view as its own "
                                          "teacher context (plus skills for opd) and combine "
                                          "them per 'combine'; empty = one teacher")
    combine: str = _f("agreement", "several teachers: agreement (UniSD: mean target, token "
                                   "weight exp(-agreement_scale * std of their log-probs)), "
                                   "avsd (AVSD: consensus gap + aligned, bounded per-view "
                                   "residuals), mean, or confidence (MAD-OPD: each "
                                   "teacher weighted by its confidence in the token)")
    agreement_scale: float = _f(1.0, "UniSD agreement: weight = exp(-scale * teacher spread)")
    avsd_residual: float = _f(0.5, "AVSD: bound on each view's residual gap (nats)")
    exposure_control: str = _f("none", "how much of the privileged solution the teacher sees "
                                       "during training: none (context.exposure, fixed) or atesd "
                                       "(ATESD, adaptive teacher exposure: a Beta policy over "
                                       "training-state statistics, rewarded by learning progress, "
                                       "picks the reveal ratio; see agentsd.distill.exposure)")
    atesd_init: float = _f(0.5, "ATESD: mean exposure of the controller's first Beta policy")
    atesd_concentration: float = _f(6.0, "ATESD: alpha + beta of the first Beta policy (larger: "
                                         "draws closer to the mean)")
    atesd_lr: float = _f(0.5, "ATESD: the controller's REINFORCE learning rate")
    atesd_hold: int = _f(1, "ATESD: steps one sampled exposure is held for (a window)")
    atesd_horizon: int = _f(2, "ATESD: windows of later learning progress that score a decision")
    atesd_discount: float = _f(0.5, "ATESD: discount of later windows' progress in the reward")
    confidence_scale: float = _f(1.0, "MAD-OPD (combine=confidence): teacher n's weight on a "
                                      "token is softmax_n(scale * log pT_n(y)), the target their "
                                      "weighted mixture (0: plain mixture, large: the most "
                                      "confident teacher)")
    refine: str = _f("none", "none, or vpd (VPD, Variational Policy Distillation): after each "
                             "update the teacher's own weights (mode ema or sync) take a trust-region "
                             "policy-gradient step on the trajectories' outcomes in its context "
                             "(E-step) while the student distills it (M-step)")
    vpd_lr: float = _f(1e-4, "VPD: SGD learning rate of the teacher's E-step")
    vpd_steps: int = _f(1, "VPD: gradient steps per E-step")
    vpd_kl: float = _f(0.1, "VPD: weight of the KL(teacher before || teacher after) penalty")
    vpd_clip: float = _f(0.2, "VPD: ratio clip epsilon of the E-step's surrogate")

    def __post_init__(self) -> None:
        from agentsd.distill.teacher import TEACHER_MODES

        _check(self.mode in TEACHER_MODES, "TeacherConfig", "mode", f"must be one of {TEACHER_MODES}",
               self.mode)
        _check(0 <= self.ema_decay < 1, "TeacherConfig", "ema_decay", "must be in [0, 1)",
               self.ema_decay)
        _pos_int("TeacherConfig", self, "sync_every", "max_tokens_per_forward")
        _nonneg("TeacherConfig", self, "bandit_c")
        if isinstance(self.context, dict):
            object.__setattr__(self, "context", TeacherContextConfig(**self.context))
        _check(self.skills_at in SKILLS_AT, "TeacherConfig", "skills_at",
               "must be 'system' or 'user'", self.skills_at)
        if self.context.skills_at != self.skills_at:  # one setting: teacher.skills_at wins
            _check(self.context.skills_at == "system" or self.skills_at == "system", "TeacherConfig",
                   "skills_at", f"disagrees with teacher.context.skills_at="
                   f"{self.context.skills_at!r} (set one of them)", self.skills_at)
            at = self.skills_at if self.skills_at != "system" else self.context.skills_at
            object.__setattr__(self, "skills_at", at)
            object.__setattr__(self, "context", dataclasses.replace(self.context, skills_at=at))
        _check(self.feedback in ("none", "reviser", "sibling"), "TeacherConfig", "feedback",
               "must be 'none', 'reviser' or 'sibling'", self.feedback)
        views = tuple(self.score_views) if not isinstance(self.score_views, str) else (self.score_views,)
        object.__setattr__(self, "score_views", views)
        if views:
            TeacherContextConfig(views=views)  # unknown or repeated view names fail here
            _check(len(views) >= 2 and "skills" not in views, "TeacherConfig", "score_views",
                   "must name at least two views, not 'skills' (each view is one teacher)", views)
        _check(self.combine in ("agreement", "avsd", "mean", "confidence"), "TeacherConfig",
               "combine", "must be 'agreement', 'avsd', 'mean' or 'confidence'", self.combine)
        _nonneg("TeacherConfig", self, "agreement_scale", "avsd_residual")
        _check(self.exposure_control in ("none", "atesd"), "TeacherConfig", "exposure_control",
               "must be 'none' or 'atesd'", self.exposure_control)
        _check(0 < self.atesd_init < 1, "TeacherConfig", "atesd_init", "must be in (0, 1)",
               self.atesd_init)
        _check(self.atesd_concentration * min(self.atesd_init, 1 - self.atesd_init) > 1,
               "TeacherConfig", "atesd_concentration",
               "must exceed 1 / min(atesd_init, 1 - atesd_init) (alpha, beta > 1)",
               self.atesd_concentration)
        _pos_int("TeacherConfig", self, "atesd_hold", "atesd_horizon")
        _nonneg("TeacherConfig", self, "atesd_lr")
        _check(0 <= self.atesd_discount <= 1, "TeacherConfig", "atesd_discount",
               "must be in [0, 1]", self.atesd_discount)
        _nonneg("TeacherConfig", self, "confidence_scale", "vpd_lr", "vpd_kl", "vpd_clip")
        _check(self.refine in ("none", "vpd"), "TeacherConfig", "refine",
               "must be 'none' or 'vpd'", self.refine)
        _pos_int("TeacherConfig", self, "vpd_steps")
