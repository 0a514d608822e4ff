"""``agentsd train``: run (or resume) one training run from flags or a config file.

Every :class:`~agentsd.distill.config.TrainConfig` field is a flag (``--algo``,
``--loss.kind``, ``--teacher.mode``, ``--rollout.env`` ...); ``--help`` lists them with their
meaning and default. The config is validated before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register_train", "build_parser", "main"]


def _add_args(p: argparse.ArgumentParser) -> None:
    from agentsd.distill.config import add_config_args

    add_config_args(p)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = auto: 1 when other jobs keep the cores busy, "
                        "else the cores, at most 4; see agentsd.threads)")
    p.add_argument("--report", action="store_true",
                   help="write the learning curve and HTML report into the run folder at the end")


def register_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a student by on-policy distillation (or a baseline)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_args(p)
    p.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_args(p)
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    from agentsd.distill.config import config_from_args

    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError) as e:  # before any model is loaded
        print(f"error: bad config: {e}", file=sys.stderr)
        return 2
    from agentsd.distill.trainer import train
    from agentsd.threads import apply_threads, pick_threads

    n = apply_threads(pick_threads(args.threads or None))
    print(f"torch CPU threads: {n}", file=sys.stderr)
    res = train(cfg)
    from agentsd.distill.distributed import world

    if not world().is_main:  # rank 0 writes the report and prints the summary
        return 0
    if args.report:
        from agentsd.distill.report import write_report

        write_report(res.run_dir)
    print(json.dumps({"run_dir": str(res.run_dir), "steps": res.steps_done,
                      "resumed_from": res.resumed_from, **res.final_eval}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return _cmd_train(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
