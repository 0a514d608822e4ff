"""``agentsd skills list | show | build``: inspect and grow a skill library from trajectories.

    agentsd skills list [--root DIR] [--env ID]
    agentsd skills show NAME [--env ID] [--root DIR]
    agentsd skills build --env ID --from runs/rollouts.jsonl [--out runs/skills] [--summarizer deterministic]
    agentsd skills upgrade --root DIR     # rewrite old SKILL.md files in the spec's layout
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "build", "LEDGER"]

#: per-env file listing the trajectory ids already summarized into the library
LEDGER = "ingested.txt"
#: where ``skills build`` writes unless told (never the shipped library by default)
DEFAULT_BUILD_OUT = "runs/skills"


def register(sub: Any) -> None:
    p = sub.add_parser("skills", help="list, show and build skill libraries (skills/<env>/<skill>/SKILL.md)")
    ss = p.add_subparsers(dest="skills_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    ls = ss.add_parser("list", help="list the skills of a library")
    ls.add_argument("--root", default=None, help="library folder (default: the shipped skills/)")
    ls.add_argument("--env", default=None, help="only this env id")
    ls.add_argument("--json", action="store_true", help="one JSON object per skill")
    ls.set_defaults(func=_cmd_list)

    sh = ss.add_parser("show", help="print one skill's SKILL.md")
    sh.add_argument("name", help="skill name (folder name)")
    sh.add_argument("--env", default=None, help="env id, when several envs have a skill of that name")
    sh.add_argument("--root", default=None, help="library folder (default: the shipped skills/)")
    sh.set_defaults(func=_cmd_show)

    up = ss.add_parser("upgrade", help="rewrite every SKILL.md of a library in the current layout "
                                       "(Agent Skills spec front matter; lossless)")
    up.add_argument("--root", required=True, help="library folder to rewrite in place (the shipped one is "
                                                   "skills/ in a checkout)")
    up.set_defaults(func=_cmd_upgrade)

    b = ss.add_parser("build", help="summarize trajectories into skills and merge them into a library")
    b.add_argument("--env", required=True, help="env id whose trajectories to summarize")
    b.add_argument("--from", dest="sources", nargs="+", required=True, metavar="FILE",
                   help="trajectory files, .jsonl or .parquet (from `agentsd rollout` or the store)")
    b.add_argument("--out", default=DEFAULT_BUILD_OUT,
                   help="library folder to create or update (default: %(default)s; the shipped library "
                        "changes only when asked: --out skills in a checkout)")
    b.add_argument("--summarizer", choices=["deterministic", "llm", "both"], default="deterministic",
                   help="deterministic: statistics + privileged data (no model); llm: a policy "
                        "writes skills from a versioned prompt; both: union, deduplicated")
    b.add_argument("--backend", choices=["hf", "openai"], default="hf",
                   help="policy backend for --summarizer llm (openai: any OpenAI-compatible server)")
    b.add_argument("--model", default="smollm2",
                   help="model for --summarizer llm: a name the backend resolves (default: the "
                        "embedded SmolLM2), a local path, or the served model name (openai)")
    b.add_argument("--base-url", default=None, help="server URL for --backend openai (e.g. http://127.0.0.1:8000/v1)")
    b.add_argument("--prompt-version", type=int, default=None, help="summarizer prompt version (default: newest)")
    b.add_argument("--max-skills", type=int, default=4, help="at most this many skills per LLM call")
    b.add_argument("--dedupe", type=float, default=0.6,
                   help="word-overlap threshold (0..1) above which a new skill merges into an existing one")
    b.add_argument("--dry-run", action="store_true", help="print the skills instead of writing them")
    b.set_defaults(func=_cmd_build)


def _root(arg: str | None) -> Path:
    from agentsd.skills.library import default_root

    return Path(arg) if arg else default_root()


def _cmd_list(args: argparse.Namespace) -> int:
    from agentsd.skills.library import load_library

    lib = load_library(_root(args.root), env=args.env)
    if args.json:
        for s in lib:
            print(json.dumps({"env": s.env, "name": s.name, "kind": s.kind, "description": s.description,
                              "support": s.stats.support, "method": s.provenance.method}))
        return 0
    if not len(lib):
        print(f"no skills in {_root(args.root)}" + (f" for {args.env}" if args.env else ""))
        return 0
    rate = lambda r: "-" if r is None else f"{r:.2f}"
    print(f"{'env':<22} {'name':<40} {'kind':<9} {'support':>7} {'succ w/':>7} {'succ w/o':>8}  description")
    for s in lib:
        print(f"{s.env:<22} {s.name:<40} {s.kind:<9} {s.stats.support:>7} "
              f"{rate(s.stats.success_rate_with):>7} {rate(s.stats.success_rate_without):>8}  "
              f"{s.description[:70]}")
    print(f"{len(lib)} skills, {len(lib.envs())} envs")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from agentsd.skills.library import load_library, render_skill_md

    lib = load_library(_root(args.root), env=args.env)
    found = lib.find(args.name)
    if not found:
        names = sorted({s.name for s in lib})
        print(f"no skill named {args.name!r}; known: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    if len(found) > 1:
        print(f"{args.name!r} exists for several envs ({', '.join(s.env for s in found)}); "
              "pick one with --env", file=sys.stderr)
        return 2
    print(render_skill_md(found[0]), end="")
    return 0


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from agentsd.skills.library import load_library

    lib = load_library(Path(args.root), strict=True)
    paths = lib.save(Path(args.root))
    print(f"rewrote {len(paths)} SKILL.md files in {args.root}")
    return 0


def build(env_id: str, sources: list[str], out: Path, summarizer: str = "deterministic",
          policy: Any = None, prompt_version: int | None = None, max_skills: int = 4,
          dedupe: float = 0.6, command: str = "", write: bool = True, notes: str = "",
          workflow_detail: str = "sources") -> dict[str, Any]:
    """Summarize the ``env_id`` trajectories in ``sources`` and merge the skills into the library
    at ``out`` (loaded first when it exists: updates are incremental). Returns a report."""
    from agentsd.skills.library import SkillLibrary, env_dir_name, load_library
    from agentsd.skills.summarize import (
        DeterministicSummarizer,
        LLMSummarizer,
        read_trajectories,
        refresh,
    )

    trajs = [t for t in read_trajectories(sources) if t.env_id == env_id]
    if not trajs:
        raise SystemExit(f"no {env_id} trajectories in {', '.join(map(str, sources))}; check --env "
                         "(the env id recorded in the file) and --from")
    ledger = out / env_dir_name(env_id) / LEDGER
    seen = set(ledger.read_text().split()) if ledger.is_file() else set()
    fresh = [t for t in trajs if t.id not in seen]
    report: dict[str, Any] = {"env": env_id, "trajectories": len(fresh), "skipped_seen": len(trajs) - len(fresh),
                              "solved": sum(t.success for t in fresh), "added": [], "merged": [],
                              "replaced": [], "rejected": [], "written": [], "message": ""}
    lib = load_library(out, strict=True) if out.is_dir() else SkillLibrary()
    report["skills"], report["_library"] = [s.name for s in lib.for_env(env_id)], lib
    summarizers: list[Any] = []
    if summarizer in ("deterministic", "both"):
        summarizers.append(DeterministicSummarizer(command=command, notes=notes,
                                                   workflow_detail=workflow_detail))
    if summarizer in ("llm", "both"):
        summarizers.append(LLMSummarizer(policy, prompt_version=prompt_version, max_skills=max_skills,
                                         command=command, notes=notes))
    work = lib  # written only at the end: a summarizer that fails leaves the files as they were
    messages = []
    for i, summ in enumerate(summarizers):
        # every summarizer reads the same fresh trajectories; statistics count them once
        rep = refresh(work, trajs, summ, env_id, seen=seen, dedupe_threshold=dedupe, count_stats=i == 0)
        messages.append(rep.message)
        report["added"] += rep.added
        report["merged"] += rep.merged
        report["replaced"] += rep.replaced
        if isinstance(summ, LLMSummarizer) and summ.last is not None:
            report["rejected"] += summ.last.rejected
        if not rep.summarized:
            break  # nothing new: a no-op, said once
    report["message"] = "; ".join(dict.fromkeys(messages))
    if not fresh:
        return report  # every trajectory was summarized before: an update must not count twice
    if write:
        report["written"] = [str(p) for p in work.save(out, envs=[env_id])]
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with ledger.open("a") as f:  # after the skills: a crash re-summarizes rather than skips
            f.write("".join(f"{t.id}\n" for t in fresh))
    report["_library"] = work
    report["skills"] = [s.name for s in work.for_env(env_id)]
    return report


def load_policy(backend: str, model: str, base_url: str | None = None) -> Any:
    """A policy for the LLM summarizer from the policy backends (``agentsd.policy``)."""
    from agentsd.policy import load_policy as _load
    from agentsd.skills.summarize import SummarizerUnavailable, _unreachable

    try:
        return _load(backend, model, **({"base_url": base_url} if base_url else {}))
    except Exception as e:
        if _unreachable(e):
            cause = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise SummarizerUnavailable(
                f"the skill summarizer's model {model!r} ({backend}{' at ' + base_url if base_url else ''}) "
                f"cannot be reached ({cause}); start the server or fix --base-url/--model, or use "
                "--summarizer deterministic (the library is unchanged)") from e
        raise


def _cmd_build(args: argparse.Namespace) -> int:
    from agentsd.skills.library import render_skill_md

    if not 0 <= args.dedupe <= 1:
        raise SystemExit(f"--dedupe must be in [0, 1], got {args.dedupe}")
    from agentsd.skills.library import SkillError
    from agentsd.skills.summarize import SummarizerUnavailable

    try:
        policy = load_policy(args.backend, args.model, args.base_url) if args.summarizer in ("llm", "both") else None
    except SummarizerUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "agentsd skills build " + " ".join(shlex.quote(a) for a in [
        "--env", args.env, "--from", *args.sources, "--summarizer", args.summarizer,
        *(["--backend", args.backend, "--model", args.model] if args.summarizer != "deterministic" else [])])
    try:
        rep = build(args.env, args.sources, Path(args.out), args.summarizer, policy, args.prompt_version,
                    args.max_skills, args.dedupe, command, write=not args.dry_run)
    except (SummarizerUnavailable, SkillError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lib = rep.pop("_library")
    if rep["message"] and not rep["trajectories"]:
        print(rep["message"])
    if args.dry_run:
        for s in lib.for_env(args.env):
            print(render_skill_md(s))
    for r in rep["rejected"]:
        print(f"rejected: {r}", file=sys.stderr)
    print(f"{args.env}: {rep['trajectories']} new trajectories ({rep['solved']} solved, "
          f"{rep['skipped_seen']} seen before); added "
          f"{len(rep['added'])}, merged {len(rep['merged'])}, replaced {len(rep['replaced'])}, "
          f"rejected {len(rep['rejected'])}; library now has {len(rep['skills'])} skills for it"
          + ("" if args.dry_run else f" in {args.out}"))
    return 0
