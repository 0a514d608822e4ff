"""Build the shipped skill library (``skills/``) for every built-in env, from trajectories.

For each env: play train-split seeds with scripted policies (the env's oracle, which follows
the privileged plan and succeeds; the oracle with random example actions mixed in, which
fails and recovers; example actions only, which mostly fail), optionally add real model
rollouts (``--model-episodes``, SmolLM2 by default), save those trajectories as JSONL, then run
the summarizer (``agentsd skills build`` logic) over them. Every SKILL.md records how it was
produced in its provenance (method, summarizer version, source trajectory ids, this command).

    python scripts/build_skills.py                       # all built-in envs -> skills/
    python scripts/build_skills.py --envs Sokoban-Easy-v0 --episodes 20 --out /tmp/lib
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--envs", nargs="*", default=None,
                   help="env ids (default: every env registered by the built-in suite)")
    p.add_argument("--out", default=None, help="library folder (default: the shipped skills/)")
    p.add_argument("--episodes", type=int, default=16,
                   help="episodes per scripted policy (oracle, noisy oracle, example actions)")
    p.add_argument("--per-template", type=int, default=2,
                   help="for envs with task templates (ToolWorld): also this many oracle and this many "
                        "noisy episodes of every train template, so each gets a workflow skill")
    p.add_argument("--noise", type=float, default=0.3,
                   help="probability that the noisy oracle plays a random example action instead")
    p.add_argument("--max-turns", type=int, default=None, help="cap on turns per scripted episode")
    p.add_argument("--model-episodes", type=int, default=0,
                   help="also add this many real model rollouts per env (0 = scripted only)")
    p.add_argument("--model", default="smollm2", help="model for --model-episodes / --summarizer llm")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per model action")
    p.add_argument("--workflow-detail", choices=["sources", "names"], default="sources",
                   help="tool workflows: each argument with where its value comes from (sources), or "
                        "the calls by name only (names; a 135M model copies placeholders verbatim)")
    p.add_argument("--summarizer", choices=["deterministic", "llm", "both"], default="deterministic",
                   help="which summarizer writes the skills")
    p.add_argument("--traj-dir", default="runs/skill_sources",
                   help="where the source trajectories are saved as <env>.jsonl")
    p.add_argument("--keep", action="store_true",
                   help="update the existing library incrementally instead of rebuilding the env's folder")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.model_episodes < 0 or args.per_template < 0:
        p.error("--episodes must be >= 1, --model-episodes >= 0 and --per-template >= 0")
    if not 0 <= args.noise <= 1:
        p.error("--noise must be in [0, 1]")
    return args


def builtin_envs() -> list[str]:
    """Ids registered by the built-in ``envs`` package (not third-party plugins)."""
    import agentsd

    return sorted(i for i, s in agentsd.list_envs().items()
                  if str(s.entry_point).startswith("agentsd.envs."))


def collect(env_id: str, args: argparse.Namespace, policy=None) -> list:
    """Scripted (and optionally model) trajectories on train-split seeds."""
    import agentsd
    from agentsd.skills.scripted import scripted_episode

    seeds = agentsd.split_seeds(env_id, "train", args.episodes)
    trajs = []
    for pol in ("oracle", "noisy", "examples"):
        for s in seeds:
            trajs.append(scripted_episode(env_id, seed=s, policy=pol, noise=args.noise,
                                          max_turns=args.max_turns, split="train"))
    trajs += _per_template(env_id, args)
    if args.model_episodes and policy is not None:
        from agentsd.policy.base import SamplingParams
        from agentsd.rollout import rollout

        mseeds = agentsd.split_seeds(env_id, "train", args.model_episodes, offset=args.episodes)
        trajs += rollout(policy, env_id, seeds=mseeds,
                         params=SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=0))
    return trajs


def train_templates(env_id: str) -> list[str]:
    """The task templates an env's train split draws from (empty for envs without templates)."""
    import agentsd

    env = agentsd.make(env_id, **agentsd.spec(env_id).splits["train"].kwargs)
    try:
        return list(getattr(env.unwrapped, "pool", []) or [])
    finally:
        env.close()


def _per_template(env_id: str, args: argparse.Namespace) -> list:
    """Oracle and noisy episodes of every train template (train seeds past the random ones)."""
    import agentsd
    from agentsd.skills.scripted import scripted_episode

    out = []
    templates = train_templates(env_id) if args.per_template else []
    seeds = agentsd.split_seeds(env_id, "train", args.per_template * max(1, len(templates)),
                                offset=args.episodes + args.model_episodes)
    for k, name in enumerate(templates):
        for j in range(args.per_template):
            s = seeds[k * args.per_template + j]
            for pol in ("oracle", "noisy"):
                out.append(scripted_episode(env_id, seed=s, policy=pol, noise=args.noise, max_turns=args.max_turns,
                                            split="train", options={"template": name}))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from agentsd.skills.cli import build
    from agentsd.skills.library import default_root, env_dir_name

    out = Path(args.out) if args.out else default_root()
    envs = args.envs or builtin_envs()
    policy = None
    if args.model_episodes or args.summarizer != "deterministic":
        from agentsd.policy import load_policy

        policy = load_policy("hf", args.model)
    command = "python scripts/build_skills.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    traj_dir = Path(args.traj_dir)
    traj_dir.mkdir(parents=True, exist_ok=True)
    for env_id in envs:
        t0 = time.time()
        trajs = collect(env_id, args, policy)
        src = traj_dir / f"{env_dir_name(env_id)}.jsonl"
        src.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))
        if not args.keep and (out / env_dir_name(env_id)).is_dir():
            shutil.rmtree(out / env_dir_name(env_id))
        n_model = sum(not t.policy.startswith("scripted:") for t in trajs)
        n_tmpl = sum(bool(t.meta.get("reset_options")) for t in trajs)
        notes = (f"sources: {args.episodes} oracle + {args.episodes} noisy-oracle (noise {args.noise}) "
                 f"+ {args.episodes} example-action scripted episodes on train seeds"
                 + (f", {n_tmpl} oracle/noisy episodes of the train templates" if n_tmpl else "")
                 + (f", {n_model} {args.model} rollouts" if n_model else "") + ".")
        rep = build(env_id, [str(src)], out, args.summarizer, policy, command=command, notes=notes,
                    workflow_detail=args.workflow_detail)
        rep.pop("_library")
        print(f"{env_id}: {rep['trajectories']} trajectories ({rep['solved']} solved) -> "
              f"{len(rep['skills'])} skills {rep['skills']} rejected={len(rep['rejected'])} "
              f"[{time.time() - t0:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
