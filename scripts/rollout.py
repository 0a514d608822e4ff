"""Collect rollouts: the same as ``agentsd rollout`` (see ``--help``).

    python scripts/rollout.py --env Sokoban-v0 --model smollm2 -n 2 --out runs/sokoban.jsonl
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from agentsd.cli import main as cli_main

    return cli_main(["rollout", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
