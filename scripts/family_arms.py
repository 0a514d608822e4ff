"""Compare arms of issue 25's last two methods, for ``scripts/compare.py`` to take in.

``ARMS`` maps each arm to the ``agentsd train`` flags it adds to a run; ``VARIANTS`` is the same
arm in ``compare.py``'s ``VARIANTS`` form (``algo`` and the ``loss`` fields); a test checks the
two agree. Print the flags with ``python scripts/family_arms.py``.

- ``tsd-kd-rerank``: TSD-KD in full: token selection (the teacher relatively more confident)
  plus the teacher re-ranking each task's candidates, a pairwise ranking loss on the student's
  mean log-probs at weight 1 (the ranking loss starts near log 2 per group, the same order as
  the per-token distillation loss; untuned).
- ``opad-step``: OPAD's step-level sampling, every step (turn) one sample: its action tokens'
  mean, steps averaged over the batch.
- ``opad-one-step``: one step per episode drawn for the update, episodes averaged.
"""

from __future__ import annotations

import argparse

#: arm -> the ``agentsd train`` flags it adds
ARMS: dict[str, list[str]] = {
    "tsd-kd-rerank": ["--algo", "opd", "--loss.tsd-select", "true",
                      "--loss.tsd-rerank-weight", "1.0"],
    "opad-step": ["--algo", "opd", "--loss.step-sampling", "per-step-mean"],
    "opad-one-step": ["--algo", "opd", "--loss.step-sampling", "one-step"],
}

#: the same arms as ``scripts/compare.py`` writes its ``VARIANTS``
VARIANTS: dict[str, dict] = {
    "tsd-kd-rerank": {"algo": "opd", "loss": {"tsd_select": True, "tsd_rerank_weight": 1.0}},
    "opad-step": {"algo": "opd", "loss": {"step_sampling": "per-step-mean"}},
    "opad-one-step": {"algo": "opd", "loss": {"step_sampling": "one-step"}},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs="*", default=[], metavar="ARM",
                   help=f"arms to print, of {', '.join(ARMS)} (default: all)")
    args = p.parse_args(argv)
    if unknown := [a for a in args.arms if a not in ARMS]:
        p.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    for name in args.arms or ARMS:
        print(f"{name}: {' '.join(ARMS[name])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
