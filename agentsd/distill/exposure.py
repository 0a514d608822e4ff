"""ATESD: the teacher's exposure to the privileged solution as a learned control.

ATESD (Han, Zhang, Wang, Sun, *Adaptive Teacher Exposure for Self-Distillation in LLM Reasoning*,
arXiv 2605.11458, 2026) observes that a teacher shown the whole reference is not reliably the best
teacher and that student-teacher mismatch grows with how much it is shown. It makes the reveal
ratio ``e`` (``TeacherContextConfig.exposure``: the teacher sees the first ``ceil(e * n)`` items
of the plan, lines of a solution, words of a move sequence; see :func:`agentsd.hints.reveal`) a
decision of a small controller. This module is agentsd's version of it, in plain floats (no
torch), with the formulas below; the paper's exact statistics and constants are not copied.

**Policy.** Training-state features ``x = (1, s, tanh(kl))`` (``s`` the success rate of the
step's rollouts, ``kl`` the previous step's mean student-teacher divergence; nothing that depends
on the run's length, so a run stopped early and resumed longer decides as an uninterrupted one)
give a Beta distribution over ``e``::

    alpha = 1 + softplus(w_a . x),   beta = 1 + softplus(w_b . x),   e ~ Beta(alpha, beta)

(both above 1, so the density is unimodal). At the start ``w_a``, ``w_b`` are zero except the
biases, chosen so that the mean is ``init`` and ``alpha + beta = concentration``. One sampled
``e`` holds for a window of ``hold`` steps; the draw is seeded by ``(seed, window)`` alone, so a
resumed run draws the same exposures.

**Reward: learning progress.** With ``R_i`` the mean env reward of the training rollouts in
window ``i``, the decision of window ``i`` is scored by the discounted progress that follows it::

    r_i = sum_{h=0}^{H-1} gamma^h (R_{i+h+1} - R_{i+h})

(``H = horizon``, ``gamma = discount``): its effect on later improvement, not on its own step's
loss (the delayed credit assignment ATESD addresses). ``r_i`` is known once window ``i + H``
has closed; decisions still open when the run ends are never scored.

**Update: REINFORCE with a running baseline.** With ``A = r_i - b`` (``b`` an exponential moving
average of past rewards, decay ``baseline_decay``) and ``psi`` the digamma function::

    d log p / d alpha = log e - psi(alpha) + psi(alpha + beta)
    d log p / d beta  = log(1 - e) - psi(beta) + psi(alpha + beta)
    w_a += lr * A * (d log p / d alpha) * sigmoid(w_a . x) * x        (same for w_b)

the step's L2 norm over both weight vectors capped at ``max_step``.

>>> c = BetaExposureController(seed=0, init=0.5, concentration=6.0)
>>> c.alpha_beta(c.features(0.0, 0.0))
(3.0, 3.0)
>>> e = c.decide(1, success=0.0, reward=-1.0); 0.0 < e < 1.0
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["BetaExposureController", "softplus", "inverse_softplus", "sigmoid", "digamma",
           "beta_log_prob", "beta_score", "learning_progress", "reinforce_step", "make_controller"]


# ---------------------------------------------------------------------------------------------
# pure pieces

def softplus(z: float) -> float:
    """``log(1 + exp(z))``, stable for large ``|z|``."""
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def inverse_softplus(y: float) -> float:
    """``z`` with ``softplus(z) == y`` (``y > 0``)."""
    return y + math.log(-math.expm1(-y))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def digamma(x: float) -> float:
    """``psi(x) = d/dx log Gamma(x)`` for ``x > 0``: the recurrence ``psi(x) = psi(x+1) - 1/x``
    up to ``x >= 6``, then the asymptotic series (error below 1e-12 there).

    >>> round(digamma(1.0), 10)  # minus the Euler-Mascheroni constant
    -0.5772156649
    """
    if x <= 0:
        raise ValueError(f"digamma needs x > 0, got {x}")
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return acc + math.log(x) - 0.5 / x - series


def beta_log_prob(e: float, alpha: float, beta: float) -> float:
    """``log Beta(e; alpha, beta)`` for ``0 < e < 1``."""
    return ((alpha - 1) * math.log(e) + (beta - 1) * math.log1p(-e)
            + math.lgamma(alpha + beta) - math.lgamma(alpha) - math.lgamma(beta))


def beta_score(e: float, alpha: float, beta: float) -> tuple[float, float]:
    """``(d/d alpha, d/d beta) log Beta(e; alpha, beta)``.

    >>> a, b = beta_score(0.5, 1.0, 1.0)  # log(1/2) - psi(1) + psi(2) = 1 - ln 2
    >>> round(a, 10) == round(b, 10) == round(1 - math.log(2), 10)
    True
    """
    both = digamma(alpha + beta)
    return math.log(e) - digamma(alpha) + both, math.log1p(-e) - digamma(beta) + both


def learning_progress(window_means: Sequence[float], i: int, horizon: int, discount: float) -> float:
    """``r_i = sum_{h<horizon} discount^h (R_{i+h+1} - R_{i+h})`` over the windows' mean rewards.

    >>> learning_progress([0.0, 1.0, 1.5], 0, 2, 0.5)  # 1 + 0.5 * 0.5
    1.25
    """
    if len(window_means) < i + horizon + 1:
        raise ValueError(f"decision {i} needs {i + horizon + 1} closed windows, "
                         f"have {len(window_means)}")
    return sum(discount ** h * (window_means[i + h + 1] - window_means[i + h])
               for h in range(horizon))


def reinforce_step(w_a: Sequence[float], w_b: Sequence[float], x: Sequence[float], e: float,
                   advantage: float, lr: float, max_step: float = float("inf"),
                   ) -> tuple[list[float], list[float]]:
    """One REINFORCE ascent step on ``advantage * log Beta(e; alpha(x), beta(x))`` with
    ``alpha = 1 + softplus(w_a . x)``, ``beta = 1 + softplus(w_b . x)``; the step's L2 norm over
    both vectors is capped at ``max_step``."""
    za, zb = _dot(w_a, x), _dot(w_b, x)
    ga, gb = beta_score(min(max(e, 1e-6), 1 - 1e-6), 1 + softplus(za), 1 + softplus(zb))
    da = [lr * advantage * ga * sigmoid(za) * xi for xi in x]
    db = [lr * advantage * gb * sigmoid(zb) * xi for xi in x]
    norm = math.sqrt(sum(v * v for v in da + db))
    scale = min(1.0, max_step / norm) if norm > 0 else 1.0
    return ([w + scale * d for w, d in zip(w_a, da, strict=True)],
            [w + scale * d for w, d in zip(w_b, db, strict=True)])


def _dot(w: Sequence[float], x: Sequence[float]) -> float:
    return sum(a * b for a, b in zip(w, x, strict=True))


# ---------------------------------------------------------------------------------------------
# the controller

class BetaExposureController:
    """The trainer's ATESD controller (formulas in the module docstring). Call :meth:`decide`
    once per step after the rollouts, before the teacher rows are built, and :meth:`observe`
    after the update; :meth:`state_dict` goes into the checkpoint (JSON-serializable)."""

    def __init__(self, *, seed: int, init: float = 0.5, concentration: float = 6.0,
                 lr: float = 0.5, hold: int = 1, horizon: int = 2, discount: float = 0.5,
                 baseline_decay: float = 0.8, max_step: float = 1.0) -> None:
        if not (concentration * init > 1 and concentration * (1 - init) > 1):
            raise ValueError("ATESD needs concentration * init > 1 and concentration * (1 - init)"
                             f" > 1, got init={init}, concentration={concentration}")
        self.seed, self.lr, self.hold = seed, lr, hold
        self.horizon, self.discount = horizon, discount
        self.baseline_decay, self.max_step = baseline_decay, max_step
        self.w_a = [inverse_softplus(concentration * init - 1), 0.0, 0.0]
        self.w_b = [inverse_softplus(concentration * (1 - init) - 1), 0.0, 0.0]
        self.baseline: float | None = None
        self.kl = 0.0  # the last step's mean divergence (a feature of the next decision)
        self.window = -1  # the window of the current decision
        self.acc = [0.0, 0]  # the current window's reward sum and step count
        self.window_means: list[float] = []
        self.decisions: list[dict[str, Any]] = []  # {window, x, e}, scored once r is known
        self.last: dict[str, float] = {}

    def features(self, success: float, kl: float) -> list[float]:
        return [1.0, float(success), math.tanh(kl)]

    def alpha_beta(self, x: Sequence[float]) -> tuple[float, float]:
        return 1 + softplus(_dot(self.w_a, x)), 1 + softplus(_dot(self.w_b, x))

    def decide(self, step: int, *, success: float, reward: float) -> float:
        """The exposure for ``step`` (1-based) given the success rate and mean reward of its
        rollouts: a new draw at the start of each window (after scoring every decision whose
        progress is now known), the held one otherwise."""
        import numpy as np

        window = (step - 1) // self.hold
        if window != self.window:
            if self.acc[1]:
                self.window_means.append(self.acc[0] / self.acc[1])
            self.acc = [0.0, 0]
            self._score_ready()
            x = self.features(success, self.kl)
            a, b = self.alpha_beta(x)
            e = float(np.random.default_rng([self.seed, 7_411, window]).beta(a, b))
            self.decisions.append({"window": window, "x": x, "e": e})
            self.window = window
            self.last.update({"atesd/alpha": a, "atesd/beta": b, "atesd/mean": a / (a + b)})
        self.acc = [self.acc[0] + float(reward), self.acc[1] + 1]
        self.last["atesd/exposure"] = self.decisions[-1]["e"]
        return self.decisions[-1]["e"]

    def _score_ready(self) -> None:
        # window_means[i] is window i's mean reward: decision i is scored once window i + H closed
        while self.decisions and len(self.window_means) >= self.decisions[0]["window"] + self.horizon + 1:
            d = self.decisions.pop(0)
            r = learning_progress(self.window_means, d["window"], self.horizon, self.discount)
            adv = r - (self.baseline if self.baseline is not None else 0.0)
            self.w_a, self.w_b = reinforce_step(self.w_a, self.w_b, d["x"], d["e"], adv, self.lr,
                                                self.max_step)
            self.baseline = r if self.baseline is None else (
                self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r)
            self.last.update({"atesd/progress_reward": r, "atesd/advantage": adv})

    def observe(self, kl_mean: float | None) -> dict[str, float]:
        """Record the step's mean divergence (a feature of the next decision); the controller's
        metrics for the step."""
        if kl_mean is not None and math.isfinite(kl_mean):
            self.kl = float(kl_mean)
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        keys = ("w_a", "w_b", "baseline", "kl", "window", "acc", "window_means", "decisions",
                "last")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.acc = list(self.acc)
        self.decisions = [dict(d, x=list(d["x"])) for d in self.decisions]


def make_controller(cfg: Any) -> BetaExposureController | None:
    """The run's ATESD controller (``cfg.teacher.exposure_control == 'atesd'``), else ``None``."""
    tc = cfg.teacher
    if getattr(tc, "exposure_control", "none") != "atesd" or not cfg.uses_teacher:
        return None
    return BetaExposureController(seed=cfg.seed, init=tc.atesd_init,
                                  concentration=tc.atesd_concentration, lr=tc.atesd_lr,
                                  hold=tc.atesd_hold, horizon=tc.atesd_horizon,
                                  discount=tc.atesd_discount)
