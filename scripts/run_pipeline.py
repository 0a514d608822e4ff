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
    p.add_argument("--warm-steps", type=int, default=defaults.warm_steps,
                   help="SFT warm-start steps (0 = none)")
    p.add_argument("--warm-demos", type=int, default=defaults.warm_demos,
                   help="oracle demos per warm-start step")
    p.add_argument("--warm-lr", type=float, default=defaults.warm_lr, help="warm-start learning rate")
    p.add_argument("--demo-teacher-frac", type=float, default=defaults.demo_teacher_frac,
                   help="share of warm-start demos in the teacher's context")
    p.add_argument("--skill-demos", type=int, default=defaults.skill_demos,
                   help="oracle episodes the skill summarizer reads")
    p.add_argument("--no-shipped-skills", action="store_true",
                   help="the teacher reads only skills summarized in this run")
    add_config_args(p, defaults=defaults.train)
    args = p.parse_args(argv)
    try:
        train = config_from_args(args, base=defaults.train)
        cfg = PipelineConfig(train=train, warm_steps=args.warm_steps, warm_demos=args.warm_demos,
                             warm_lr=args.warm_lr, demo_teacher_frac=args.demo_teacher_frac,
                             skill_demos=args.skill_demos, shipped_skills=not args.no_shipped_skills)
    except (ValueError, TypeError) as e:
        print(f"error: bad config: {e}", file=sys.stderr)
        return 2
    print(json.dumps(run_pipeline(cfg), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
