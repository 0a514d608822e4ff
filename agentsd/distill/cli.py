"""agentsd train: run (or resume) one training run from flags or a config file.

Every TrainConfig field is a flag (--algo, --loss.kind, --teacher.mode, --rollout.env ...),
derived from the config dataclasses by tyro (agentsd.distill.flags); --help lists each with its
meaning and default. --config FILE (JSON/YAML, part of a config) sets the defaults and flags
override it. The config is validated before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainOptions", "register_train", "parse_train_args", "main"]


@dataclass(frozen=True)
class TrainOptions:
    """Options of the command that are not part of the run's config."""

    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0 = auto: 1 when other jobs keep the cores busy, else the "
                "cores, at most 4; see agentsd.threads)"})
    report: bool = field(default=True, metadata={
        "help": "write the learning curve and HTML report into the run folder at the end "
                "(--report false skips it)"})


def parse_train_args(argv: list[str] | None = None, prog: str = "agentsd train") -> tuple[Any, TrainOptions]:
    """``(TrainConfig, TrainOptions)`` from ``argv``; see :func:`agentsd.distill.flags.parse_config`."""
    from agentsd.cli import EXIT_CODES
    from agentsd.distill.flags import parse_config

    return parse_config(argv, extras=TrainOptions, prog=prog,
                        description=f"{__doc__}\n{EXIT_CODES}")


def register_train(sub: Any) -> None:
    # tyro parses this command's flags: argparse hands it every word after `train` (no word is
    # an option to a parser whose prefix is '+', so even `--help` passes through)
    p = sub.add_parser("train", help="train a student by on-policy distillation (or a baseline)",
                       description=__doc__, add_help=False, prefix_chars="+")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="flags (agentsd train --help lists them)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    return _train(*parse_train_args(args.argv))


def _train(cfg: Any, opts: TrainOptions) -> int:
    from agentsd.distill.trainer import train
    from agentsd.threads import apply_threads, pick_threads

    n = apply_threads(pick_threads(opts.threads or None))
    print(f"torch CPU threads: {n}", file=sys.stderr)
    res = train(cfg)
    from agentsd.distill.distributed import world

    if not world().is_main:  # rank 0 writes the report and prints the summary
        return 0
    if opts.report:
        from agentsd.distill.report import write_report

        write_report(res.run_dir)
    print(json.dumps({"run_dir": str(res.run_dir), "steps": res.steps_done,
                      "resumed_from": res.resumed_from, **res.final_eval}))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, opts = parse_train_args(argv, prog="train")
    except ValueError as e:  # before any model is loaded
        print(f"train: error: bad config: {e}", file=sys.stderr)
        return 2
    return _train(cfg, opts)


if __name__ == "__main__":
    sys.exit(main())
