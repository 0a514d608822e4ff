"""Train a student with on-policy distillation or a baseline (the ``agentsd train`` command).

    python scripts/train.py --algo opd --rollout.env Sokoban-Easy-v0 --steps 20 --out-dir runs/opd
    python scripts/train.py --help     # every config field, with its meaning and default
"""

import sys

from agentsd.distill.cli import main

if __name__ == "__main__":
    sys.exit(main())
