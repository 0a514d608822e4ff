"""AdamW turns any gradient into a step of about ``lr`` per weight, so a gradient of rounding
noise (a teacher that reads exactly like the student: norm ~3e-6) moved the weights at random
and broke the no-context control of a ToolWorld-Lite comparison (its right-first-tool rate fell
from 0.48 to 0.00 in 4 steps). ``optim.min_grad_norm`` skips such steps."""

from __future__ import annotations

import pytest
import torch

from agentsd.distill.config import OptimConfig
from agentsd.distill.update import optimizer_step


class _One(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))


def _step(grad: float, min_norm: float) -> tuple[float, bool, float]:
    m = _One()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
    m.w.grad = torch.full((4,), grad)
    norm, stepped = optimizer_step(m, opt, grad_clip=1.0, min_norm=min_norm)
    return norm, stepped, float((m.w.detach() - 1).abs().max())


def test_adamw_makes_a_noise_gradient_a_full_step_unless_skipped():
    norm, stepped, moved = _step(1e-6, 0.0)  # the hazard: a 2e-6 norm moves every weight by ~lr
    assert stepped and norm == pytest.approx(2e-6, rel=1e-3) and moved == pytest.approx(1e-3, rel=2e-2)
    norm, stepped, moved = _step(1e-6, OptimConfig().min_grad_norm)
    assert not stepped and moved == 0.0 and norm == pytest.approx(2e-6, rel=1e-3)  # still logged


def test_a_real_gradient_still_steps_and_zero_never_does():
    _, stepped, moved = _step(1e-2, OptimConfig().min_grad_norm)
    assert stepped and moved > 0
    _, stepped, moved = _step(0.0, 0.0)
    assert not stepped and moved == 0.0


def test_min_grad_norm_is_declared_non_negative():
    with pytest.raises(ValueError, match="OptimConfig.min_grad_norm"):
        OptimConfig(min_grad_norm=-1.0)
