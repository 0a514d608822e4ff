"""The whole pipeline as one script: rollouts -> skills -> OPD training -> held-out evaluation ->
run folder with metrics, checkpoints, learning curve and HTML report (what ``agentsd quickstart``
runs, with every knob exposed).

    python scripts/run_pipeline.py --out-dir runs/pipe --steps 10 --rollout.env Sokoban-Easy-v0
    python scripts/run_pipeline.py --help

The separate stages are ``agentsd rollout`` (or ``scripts/rollout.py``), ``agentsd skills build``
(or ``scripts/build_skills.py``), ``agentsd train`` (or ``scripts/train.py``) and
``python -c 'from agentsd.distill.report import write_report; write_report("RUN")'``.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from agentsd.distill.config import add_config_args, config_from_args
    from agentsd.distill.pipeline import PipelineConfig, quickstart_config, run_pipeline

    defaults = quickstart_config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collect-tasks", type=int, default=defaults.collect_tasks,
                   help="train tasks the base model plays before training (skill sources)")
    p.add_argument("--collect-samples", type=int, default=defaults.collect_samples,
                   help="samples per collected task")
    p.add_argument("--no-shipped-skills", action="store_true",
                   help="the teacher reads only skills summarized in this run")
    add_config_args(p, defaults=defaults.train)
    args = p.parse_args(argv)
    try:
        train = config_from_args(args, base=defaults.train)
        cfg = PipelineConfig(train=train, collect_tasks=args.collect_tasks,
                             collect_samples=args.collect_samples,
                             shipped_skills=not args.no_shipped_skills)
    except (ValueError, TypeError) as e:
        print(f"error: bad config: {e}", file=sys.stderr)
        return 2
    print(json.dumps(run_pipeline(cfg), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
