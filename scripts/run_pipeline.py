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

import json
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipelineOptions:
    """The stages around training (defaults: the quickstart's, see ``quickstart_config``)."""

    warm_steps: int = field(default=10, metadata={"help": "SFT warm-start steps (0 = none)"})
    warm_demos: int = field(default=8, metadata={"help": "oracle demos per warm-start step"})
    warm_lr: float = field(default=1e-3, metadata={"help": "warm-start learning rate"})
    demo_teacher_frac: float = field(default=0.5, metadata={
        "help": "share of warm-start demos in the teacher's context"})
    skill_demos: int = field(default=16, metadata={
        "help": "oracle episodes the skill summarizer reads"})
    no_shipped_skills: bool = field(default=False, metadata={
        "help": "the teacher reads only skills summarized in this run"})


def main(argv: list[str] | None = None) -> int:
    from agentsd.distill.flags import parse_config
    from agentsd.distill.pipeline import PipelineConfig, quickstart_config, run_pipeline

    defaults = quickstart_config()
    shown = PipelineOptions(warm_steps=defaults.warm_steps, warm_demos=defaults.warm_demos,
                            warm_lr=defaults.warm_lr, demo_teacher_frac=defaults.demo_teacher_frac,
                            skill_demos=defaults.skill_demos,
                            no_shipped_skills=not defaults.shipped_skills)
    try:
        train, opts = parse_config(argv, default=defaults.train, extras=shown,
                                   prog="run_pipeline.py", description=__doc__.split("\n\n")[0])
        cfg = PipelineConfig(train=train, warm_steps=opts.warm_steps, warm_demos=opts.warm_demos,
                             warm_lr=opts.warm_lr, demo_teacher_frac=opts.demo_teacher_frac,
                             skill_demos=opts.skill_demos, shipped_skills=not opts.no_shipped_skills)
    except (ValueError, OSError) as e:
        print(f"error: bad config: {e}", file=sys.stderr)
        return 2
    print(json.dumps(run_pipeline(cfg), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
