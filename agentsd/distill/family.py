"""What each method of the self-distillation family needs, one small check per method.

:data:`FAMILY_CHECKS` is the table :meth:`agentsd.distill.config.TrainConfig.__post_init__` runs
(in this order, so a config missing two pieces is told about the first): each check takes the
whole :class:`~agentsd.distill.config.TrainConfig` and raises a one-line ``ValueError`` naming
the method and the field when the env or the config does not provide what the method needs.
A new method adds its check here, next to the others.

The env probes (``_env_views``, ``_env_has_reference``, ``_turn_limit``) live in
:mod:`agentsd.distill.config` and are looked up there at call time (tests stub them there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FAMILY_CHECKS", "check_family"]


def _config() -> Any:
    from agentsd.distill import config

    return config


def _feedback_method(cfg: Any) -> str | None:
    return {"reviser": "SD-Zero reviser", "sibling": "SDPO sibling"}.get(cfg.teacher.feedback)


def _shown(cfg: Any) -> set[str]:
    return set(cfg.teacher_views().views) | set(cfg.teacher.score_views)


def _needs_a_teacher(cfg: Any) -> None:
    """Every family option distills from a teacher: algo opd or opsd."""
    lc, tc = cfg.loss, cfg.teacher
    needs = [(lc.turn_weight == "sod", "SOD (loss.turn_weight='sod')"),
             (lc.kind == "pi_distill", "π-Distill (loss.kind='pi_distill')"),
             (lc.trace, "TRACE (loss.trace)"), (tc.feedback != "none", "teacher.feedback"),
             (bool(tc.score_views), "several teachers (teacher.score_views)"),
             (tc.exposure_control == "atesd", "ATESD (teacher.exposure_control='atesd')"),
             (lc.div_clip > 0, "UniSD divergence clipping (loss.div_clip)"),
             (lc.cepo, "CEPO (loss.cepo)"),
             (lc.gt_mix > 0 or lc.gt_floor > 0,
              "ground-truth target mixing (loss.gt_mix / loss.gt_floor)"),
             (lc.task_divergence, "OPAD's task-adaptive divergence (loss.task_divergence)"),
             (lc.tsd_select, "TSD-KD token selection (loss.tsd_select)"),
             (lc.tsd_rerank_weight > 0, "TSD-KD re-ranking (loss.tsd_rerank_weight > 0)"),
             (lc.step_sampling != "off",
              f"OPAD step-level sampling (loss.step_sampling={lc.step_sampling!r})"),
             (tc.refine == "vpd", "VPD (teacher.refine='vpd')"),
             (tc.combine == "confidence" and bool(tc.score_views),
              "MAD-OPD confidence weights (teacher.combine='confidence')")]
    for on, name in needs:
        if on and not cfg.uses_teacher:
            raise ValueError(f"{name} needs a teacher: algo 'opd' or 'opsd', got {cfg.algo!r}")


def _feedback_view(cfg: Any) -> None:
    """SD-Zero / SDPO fill the 'feedback' view, so it must be shown; and shown only if filled."""
    method, tc = _feedback_method(cfg), cfg.teacher
    if method and "feedback" not in _shown(cfg):
        raise ValueError(f"{method} (teacher.feedback={tc.feedback!r}) needs the 'feedback' view "
                         "in teacher.context.views (or teacher.score_views)")
    if tc.feedback == "sibling" and cfg.rollout.samples_per_task < 2:
        raise ValueError("SDPO sibling (teacher.feedback='sibling') needs a group: "
                         f"rollout.samples_per_task >= 2, got {cfg.rollout.samples_per_task}")
    if cfg.uses_teacher and "feedback" in _shown(cfg) and not method:
        raise ValueError("teacher.context.views shows 'feedback' but nothing fills it: set "
                         "--teacher.feedback reviser (SD-Zero) or sibling (SDPO)")


def _trace(cfg: Any) -> None:
    """TRACE routes unmarked tokens to GRPO (a group), forward/reverse KL itself (not
    π-Distill), and marks spans against the env's reference step."""
    lc, G = cfg.loss, cfg.rollout.samples_per_task
    if not lc.trace:
        return
    if G < 2:
        raise ValueError("TRACE (loss.trace) routes unmarked tokens to GRPO, which needs a "
                         f"group: rollout.samples_per_task >= 2, got {G}")
    if lc.kind == "pi_distill":
        raise ValueError("TRACE (loss.trace) routes forward/reverse KL itself: use loss.kind "
                         "reverse_kl, pg or jsd, not pi_distill")
    if not _config()._env_has_reference(cfg.rollout.env):
        raise ValueError(f"TRACE (loss.trace) needs the env's reference step to mark spans: "
                         f"env {cfg.rollout.env} has no oracle_action()")


def _sod(cfg: Any) -> None:
    """SOD weighs an episode's turns against each other: episodes of two turns or more."""
    if cfg.loss.turn_weight == "sod" and (turns := _config()._turn_limit(cfg.rollout)) < 2:
        raise ValueError("SOD (loss.turn_weight='sod') weighs an episode's turns against each "
                         f"other: needs episodes of >= 2 turns, {cfg.rollout.env} with "
                         f"rollout.max_turns={cfg.rollout.max_turns} allows {turns}")


def _groups(cfg: Any) -> None:
    """PACED pass-rate weights and the GRPO blend need a group per task."""
    lc, G = cfg.loss, cfg.rollout.samples_per_task
    if (lc.pass_rate_a > 0 or lc.pass_rate_b > 0) and G < 2:
        raise ValueError("PACED pass-rate weights (loss.pass_rate_a/b) need a group to measure "
                         f"a pass rate: rollout.samples_per_task >= 2, got {G}")
    if cfg.uses_teacher and lc.grpo_coef > 0 and G < 2:
        raise ValueError("the GRPO blend (loss.grpo_coef > 0) needs a group for its advantages:"
                         f" rollout.samples_per_task >= 2, got {G}")


def _atesd(cfg: Any) -> None:
    """ATESD controls how much of a view is revealed: a partly shown view the env fills."""
    if cfg.teacher.exposure_control != "atesd" or not cfg.uses_teacher:
        return
    C = _config()
    views = cfg.teacher_views().views
    exposed = [v for v in views if v in C._PARTLY_SHOWN]
    if not exposed:
        raise ValueError("ATESD (teacher.exposure_control='atesd') needs a view that "
                         "exposure reveals in part (plan, solution or next_step) in "
                         f"teacher.context.views, got {views}")
    if not set(exposed) & C._env_views(cfg.rollout.env):
        raise ValueError(f"ATESD (teacher.exposure_control='atesd'): env "
                         f"{cfg.rollout.env} fills none of the views {exposed} at reset")


def _several_teachers(cfg: Any) -> None:
    """UniSD / AVSD: every scored view is one the env fills; AVSD needs several; they combine
    sampled-token log-probs."""
    C, tc = _config(), cfg.teacher
    from_env = [v for v in tc.score_views if v in C._ENV_VIEWS]
    filled = C._env_views(cfg.rollout.env) if from_env else set()  # one env probe, not one per view
    missing = [v for v in from_env if v not in filled]
    if missing:
        raise ValueError(f"several teachers (teacher.score_views): env {cfg.rollout.env} "
                         f"does not fill the view(s) {missing}")
    if tc.combine == "avsd" and cfg.uses_teacher and not tc.score_views:
        raise ValueError("AVSD (teacher.combine='avsd') needs several teachers to find a "
                         "consensus: set teacher.score_views to two or more views")
    if tc.score_views and cfg.loss.kind not in ("reverse_kl", "pg"):
        raise ValueError(f"several teachers (teacher.score_views) combine sampled-token "
                         f"log-probs: loss.kind must be reverse_kl or pg, got {cfg.loss.kind!r}")


def _cepo(cfg: Any) -> None:
    """CEPO builds its wrong-answer teacher from the group's rejected rollouts (a group), in
    place of a view that carries the answer, and is a sampled-token loss of its own."""
    lc, G = cfg.loss, cfg.rollout.samples_per_task
    if not lc.cepo or not cfg.uses_teacher:
        return
    if G < 2:
        raise ValueError("CEPO (loss.cepo) builds its wrong-answer teacher from a failed rollout of "
                         f"the same group: rollout.samples_per_task >= 2, got {G}")
    from agentsd.distill.family_more import ANSWER_VIEWS

    views = cfg.teacher_views().views
    if not set(views) & set(ANSWER_VIEWS):
        raise ValueError(f"CEPO (loss.cepo) swaps the answer the teacher reads for a rejected "
                         f"rollout's: needs one of the views {list(ANSWER_VIEWS)} in "
                         f"teacher.context.views, got {views}")
    clash = [(lc.trace, "TRACE (loss.trace)"), (bool(cfg.teacher.score_views),
             "several teachers (teacher.score_views)"), (lc.task_divergence,
             "OPAD (loss.task_divergence)"), (lc.kind not in ("reverse_kl", "pg"),
             f"loss.kind={lc.kind!r}"), (cfg.model.fsdp, "FSDP (model.fsdp)")]
    for on, what in clash:
        if on:
            raise ValueError(f"CEPO (loss.cepo) is its own sampled-token loss on two teachers; "
                             f"it does not combine with {what}")


def _curio(cfg: Any) -> None:
    """CurioSFT is an SFT objective (the warm start)."""
    if cfg.loss.curio_sft and cfg.algo not in ("sft", "rft"):
        raise ValueError("CurioSFT (loss.curio_sft) is entropy-preserving SFT: algo 'sft' (the "
                         f"warm start) or 'rft', got {cfg.algo!r}")


def _gt_mix(cfg: Any) -> None:
    """Ground-truth mixing reads the env's reference step, on sampled-token targets."""
    lc = cfg.loss
    if not (lc.gt_mix > 0 or lc.gt_floor > 0) or not cfg.uses_teacher:
        return
    from agentsd.distill.family_more import loss_kind

    if loss_kind(cfg)[0] not in ("reverse_kl", "pg"):
        raise ValueError("ground-truth target mixing (loss.gt_mix / loss.gt_floor) mixes the "
                         "sampled token's target: loss.kind must be reverse_kl or pg, got "
                         f"{loss_kind(cfg)[0]!r}")
    if not _config()._env_has_reference(cfg.rollout.env):
        raise ValueError("ground-truth target mixing (loss.gt_mix / loss.gt_floor) needs the "
                         f"env's reference step as ground truth: env {cfg.rollout.env} has no "
                         "oracle_action()")


def _opad(cfg: Any) -> None:
    """OPAD's JSD (agentic envs) is full-vocabulary: one teacher."""
    if not cfg.loss.task_divergence or not cfg.uses_teacher:
        return
    from agentsd.distill.family_more import loss_kind

    kind = loss_kind(cfg)[0]
    if kind == "jsd" and cfg.teacher.score_views:
        raise ValueError(f"OPAD (loss.task_divergence) picks the full-vocabulary JSD for "
                         f"{cfg.rollout.env} (an agentic env); several teachers "
                         "(teacher.score_views) combine sampled-token log-probs only")


def _vpd(cfg: Any) -> None:
    """VPD refines the teacher's own weights on group advantages."""
    tc = cfg.teacher
    if tc.refine != "vpd" or not cfg.uses_teacher:
        return
    if tc.mode not in ("ema", "sync"):
        raise ValueError("VPD (teacher.refine='vpd') updates the teacher's own copy of the "
                         f"weights: teacher.mode 'ema' or 'sync', got {tc.mode!r}")
    if cfg.rollout.samples_per_task < 2:
        raise ValueError("VPD (teacher.refine='vpd') refines the teacher on group advantages: "
                         f"rollout.samples_per_task >= 2, got {cfg.rollout.samples_per_task}")
    if cfg.model.fsdp:
        raise ValueError("VPD (teacher.refine='vpd') does not run under FSDP (model.fsdp): its "
                         "E-step reads the teacher's whole tensors")


def _mad_opd(cfg: Any) -> None:
    """MAD-OPD weighs several teachers."""
    if cfg.teacher.combine == "confidence" and cfg.uses_teacher and not cfg.teacher.score_views:
        raise ValueError("MAD-OPD (teacher.combine='confidence') weighs several teachers by "
                         "their confidence: set teacher.score_views to two or more views")


def _pi_play(cfg: Any) -> None:
    """π-Play's construction view exists only for envs whose tasks are generated (any algo
    that shows it: sft renders demos in the teacher's context too)."""
    if "construction" not in _shown(cfg):
        return
    C = _config()
    has = C._probe_env(cfg.rollout.env, lambda env: bool(getattr(env.privileged(), "construction",
                                                                 None)))
    if not has:
        raise ValueError(f"π-Play (the 'construction' view): env {cfg.rollout.env} has no "
                         "construction path (its tasks are not generated); drop the view or use "
                         "a generated env (ToolWorld, ToolWorld-Lite, Code-Gen)")


def _tsd_rerank(cfg: Any) -> None:
    """TSD-KD's re-ranking orders a task's candidates against each other: a group; its scoring
    pass runs outside FSDP's matched collectives."""
    if cfg.loss.tsd_rerank_weight <= 0 or not cfg.uses_teacher:
        return
    if (G := cfg.rollout.samples_per_task) < 2:
        raise ValueError("TSD-KD re-ranking (loss.tsd_rerank_weight > 0) ranks a task's own "
                         f"candidates against each other: rollout.samples_per_task >= 2, got {G}")
    if cfg.loss.distill_coef <= 0:
        raise ValueError("TSD-KD re-ranking (loss.tsd_rerank_weight > 0) ranks the candidates the "
                         "distillation term covers: loss.distill_coef must be > 0, got "
                         f"{cfg.loss.distill_coef}")
    if cfg.model.fsdp:
        raise ValueError("TSD-KD re-ranking (loss.tsd_rerank_weight > 0) does not run under FSDP "
                         "(model.fsdp): its scoring pass is not one of FSDP's matched forwards")


def _step_sampling(cfg: Any) -> None:
    """OPAD's step-level sampling treats an episode's steps (turns) as samples: episodes of two
    turns or more (one turn is reduce='sequence')."""
    mode = cfg.loss.step_sampling
    if mode == "off" or not cfg.uses_teacher:
        return
    if cfg.loss.reduce != "token":
        raise ValueError(f"OPAD step-level sampling (loss.step_sampling={mode!r}) sets the "
                         "normalization itself: leave loss.reduce at 'token', got "
                         f"{cfg.loss.reduce!r}")
    if (turns := _config()._turn_limit(cfg.rollout)) < 2:
        raise ValueError(f"OPAD step-level sampling (loss.step_sampling={mode!r}) samples an "
                         f"episode's steps: needs episodes of >= 2 turns, {cfg.rollout.env} with "
                         f"rollout.max_turns={cfg.rollout.max_turns} allows {turns}")


#: the checks, in the order they run
FAMILY_CHECKS: tuple[Callable[[Any], None], ...] = (
    _needs_a_teacher, _feedback_view, _trace, _sod, _groups, _atesd, _several_teachers, _cepo,
    _curio, _gt_mix, _opad, _vpd, _mad_opd, _pi_play, _tsd_rerank, _step_sampling)


def check_family(cfg: Any) -> None:
    """Run every check of :data:`FAMILY_CHECKS` on ``cfg`` (a ``TrainConfig``)."""
    for check in FAMILY_CHECKS:
        check(cfg)
