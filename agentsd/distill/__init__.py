"""Step-wise on-policy distillation: losses, teacher scoring and modes, the trainer loop with its
GRPO / OPSD / rejection-sampling baselines, checkpoints, metrics and reports.

Submodules import torch lazily; ``import agentsd.distill`` itself is cheap.
"""
