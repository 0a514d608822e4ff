"""Compare GRPO, RFT, plain OPSD (teacher sees the per-turn reference reply), skill-conditioned
OPD and Skill-SD, with controls, from one shared warm start: same model, same episode budget,
same code path, several seeds, the same held-out tasks.

1. **Warm start**: one SFT run on oracle demonstrations, evaluated on the held-out tasks. By
   default the demos are the train split's (a share of them in the teacher's context, so the
   teacher is on-format before it teaches); ``--warm-split warm`` takes them from another split
   instead, in the plain context only (ToolWorld-Lite's ``warm`` templates: the student learns
   the format, not the workflows the skills teach).
2. **Teacher check**: the warm model *acting* with each checked arm's teacher context on the
   same held-out tasks: the step-0 teacher advantage each arm has to distill.
3. **Runs**: every (algo, seed) starts from the warm start (``--model.init-from``: its adapter
   merged, a fresh adapter trained on top, so the ``frozen`` teacher is the warm model) and
   trains ``--steps`` steps of ``--tasks x --samples`` episodes. Jobs run in ``--workers``
   processes with one torch thread each (on a shared CPU that beats one multi-threaded job).

Arms for a skill env (ToolWorld-Lite): ``skillsd`` (Skill-SD: GRPO + the importance-weighted
reverse KL to a skills-only teacher synced with the student), ``opd-skills`` / ``opd-skills-fkl``
(skills-only OPD, sampled-token reverse KL / full-vocabulary forward KL), ``opsd`` (the
reference hint only), ``sft-teacher`` (off-policy context distillation: SFT on the skills
teacher's own successful samples, replayed in the student's plain prompt), and the controls
``shuffled-fkl`` (the same library with every workflow's body moved to another template's
skill: the right slot, the wrong rule) and ``none-fkl`` (an empty library: the teacher sees
nothing added). ``--eval-splits`` adds held-out splits evaluated at the end of every run (e.g.
``test_templates``, new kinds of task).

Writes ``results.json`` (as results come in), ``results.md`` (the README table, with the exact
command), ``learning_curve.png`` (held-out success vs step, mean ± std over seeds per algorithm)
and every run folder under ``--out``::

    python scripts/compare.py --env Sokoban-Easy-v0 --seeds 0 1 2 --steps 8 --out runs/compare
    python scripts/compare.py --env ToolWorld-Lite-v0 --warm-split warm --skills-at user \
        --algos grpo skillsd opd-skills-fkl shuffled-fkl none-fkl --teacher-check opd-skills-fkl \
        shuffled-fkl --eval-splits test_templates --max-turns 6 --max-tokens 80 --out runs/lite
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_arms import VARIANTS as _FAMILY_ARMS  # noqa: E402

#: compared variants that are an algorithm plus loss / teacher options; ``views`` replaces the
#: teacher's context views (default: skills + the per-turn reference)
VARIANTS: dict[str, dict] = {
    # OPD with the full-vocabulary forward KL to the teacher
    "opd-fkl": {"algo": "opd", "loss": {"kind": "jsd", "alpha": 0.0}},
    # SOD: OPD with each turn's distillation weight falling with its mean divergence
    "sod": {"algo": "opd", "loss": {"turn_weight": "sod"}},
    # TRACE: forward KL on the matching turns of successes, reverse KL on turns that miss the
    # reference step, GRPO elsewhere; the KL channel anneals to 0 over the second half of the run
    "trace": {"algo": "opd", "loss": {"trace": True}},
    # SD-Zero: the reviser teacher sees skills and the group's other attempt with its reward and
    # the env's replies, no reference solution (binary reward turned into dense targets)
    "sdzero": {"algo": "opd", "teacher": {"feedback": "reviser"}, "views": ("skills", "feedback")},
    # OPD's context plus the SD-Zero feedback view
    "opd-feedback": {"algo": "opd", "teacher": {"feedback": "reviser"},
                     "views": ("skills", "reference", "feedback")},
    # SDPO: the teacher sees a successful sibling sample (groups without one are not distilled)
    "sdpo": {"algo": "opd", "teacher": {"feedback": "sibling"},
             "views": ("skills", "reference", "feedback")},
    # ATESD: the teacher sees a learned share of the remaining plan (a Beta-policy controller)
    "atesd": {"algo": "opd", "teacher": {"exposure_control": "atesd"}, "views": ("skills", "plan")},
    # Skill-SD: GRPO on the env reward plus the importance-weighted sampled-token reverse KL to
    # a skills-only teacher, the teacher synced with the improving student every 4 steps
    "skillsd": {"algo": "opd", "loss": {"grpo_coef": 1.0},
                "teacher": {"mode": "sync", "sync_every": 4}, "views": ("skills",)},
    # skills-only OPD: sampled-token reverse KL / full-vocabulary forward KL
    "opd-skills": {"algo": "opd", "views": ("skills",)},
    "opd-skills-fkl": {"algo": "opd", "loss": {"kind": "jsd", "alpha": 0.0}, "views": ("skills",)},
    # controls: the same library with the workflows' bodies deranged (the wrong rule in the
    # right slot), and an empty library (the teacher sees nothing added)
    "shuffled-fkl": {"algo": "opd", "loss": {"kind": "jsd", "alpha": 0.0}, "views": ("skills",),
                     "library": "shuffled"},
    "none-fkl": {"algo": "opd", "loss": {"kind": "jsd", "alpha": 0.0}, "views": ("skills",),
                 "library": "empty"},
    # off-policy context distillation (Snell et al. 2022): SFT on the skills teacher's own
    # successful samples of the train tasks, re-rendered in the student's plain prompt
    "sft-teacher": {"algo": "sft", "views": ("skills",), "context_distill": True},
    # issue 25. CEPO: token credit where the correct-answer teacher favours and a wrong-answer
    # teacher (a rejected rollout of the group as its reference) disfavours the token
    "cepo": {"algo": "opd", "loss": {"cepo": True}},
    # VPD: the SD-Zero reviser teacher (skills + the group's other attempt) refined on outcomes
    # by a trust-region policy-gradient step on its own (EMA) weights after every update
    "vpd": {"algo": "opd", "teacher": {"feedback": "reviser", "mode": "ema", "refine": "vpd"},
            "views": ("skills", "feedback")},
    # CurioSFT: SFT on the oracle demos plus self-distillation toward the student's own
    # entropy-tempered distribution (as the warm start: scripts/curio_sft_check.py)
    "curio-sft": {"algo": "sft", "loss": {"curio_sft": True}},
    # ground-truth target mixing: the reference step's tokens get at least half the target's mass
    "gt-mix": {"algo": "opd", "loss": {"gt_floor": 0.5}},
    # MAD-OPD: the reference and plan teachers, weighted per token by their confidence in it
    "mad-opd": {"algo": "opd", "teacher": {"score_views": ("reference", "plan"), "combine": "confidence"},
                "views": ("skills", "reference", "plan")},
    # OPAD: the divergence by the task: JSD on agentic envs, reverse KL on code
    "opad": {"algo": "opd", "loss": {"task_divergence": True}},
    # π-Play: the teacher reads how the task was generated (generated envs only: ToolWorld, Code-Gen)
    "pi-play": {"algo": "opd", "views": ("skills", "construction")},
    # TSD-KD: distill only the tokens where the teacher is relatively more confident
    "tsd-kd": {"algo": "opd", "loss": {"tsd_select": True}},
    # TSD-KD in full: token selection plus the teacher re-ranking each task's candidates (a
    # pairwise ranking loss on the student's mean log-probs); OPAD's step-level sampling, every
    # step one sample or one step drawn per episode (scripts/family_arms.py, their flags)
    **_FAMILY_ARMS,
}
ALGOS = ("grpo", "rft", "opsd", "opd", *VARIANTS)
#: arms whose teacher context the step-0 check can measure (every arm with a teacher)
CHECKABLE = tuple(a for a in ALGOS if a not in ("grpo", "rft"))
#: what the default run compares (the family variants are asked for by name)
DEFAULT_ALGOS = ("grpo", "rft", "opsd", "opd", "opd-fkl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="Sokoban-Easy-v0", help="registered env id")
    p.add_argument("--model", default="smollm2", help="model name ('tiny-random' for a smoke run)")
    p.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=list(ALGOS),
                   help="algorithms to compare. Variants of OPD (skills + reference teacher, "
                        "sampled-token reverse KL): opd-fkl (full-vocabulary forward KL), sod "
                        "(SOD per-turn divergence weights), trace (TRACE token routing, KL "
                        "annealed over the second half), sdzero (SD-Zero reviser: skills + the "
                        "group's other attempt and its reward, no reference), opd-feedback (OPD's "
                        "context plus that feedback), sdpo (SDPO: a successful sibling), atesd "
                        "(ATESD: a learned share of the remaining plan instead of the reference)")
    p.add_argument("--teacher-check", nargs="*", default=["opd", "opsd"], choices=list(CHECKABLE),
                   help="teacher contexts whose acting success on the held-out tasks is measured "
                        "from the warm model (the first one also measures the warm student)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds")
    p.add_argument("--warm-steps", type=int, default=20, help="SFT steps of the shared warm start")
    p.add_argument("--warm-lr", type=float, default=1e-3, help="SFT learning rate")
    p.add_argument("--warm-from", default="", help="reuse this warm-start run folder instead")
    p.add_argument("--teacher-frac", type=float, default=0.5,
                   help="share of warm-start demos in the teacher's context (oracle demos of the "
                        "train split only)")
    p.add_argument("--warm-split", default="",
                   help="take the warm-start demos from this split of the env (e.g. warm), in the "
                        "plain context, instead of the train split's")
    p.add_argument("--warm-demos", type=int, default=128, help="oracle demos of --warm-split")
    p.add_argument("--skills-at", default="system", choices=("system", "user"),
                   help="where the teacher reads its skills: the system message, or the end of "
                        "every turn's latest observation")
    p.add_argument("--skills-dir", default="", help="skill library root (default: shipped skills/)")
    p.add_argument("--max-skill-chars", type=int, default=800, help="skills section length cap")
    p.add_argument("--eval-splits", nargs="*", default=[],
                   help="more held-out splits evaluated at the end of every run (e.g. test_templates)")
    p.add_argument("--steps", type=int, default=8, help="training steps per run")
    p.add_argument("--eval-every", type=int, default=4, help="held-out evaluation every N steps")
    p.add_argument("--tasks", type=int, default=4, help="tasks per step")
    p.add_argument("--samples", type=int, default=2, help="samples per task (GRPO group size)")
    p.add_argument("--max-turns", type=int, default=2, help="turns per episode")
    p.add_argument("--max-tokens", type=int, default=24, help="tokens per action")
    p.add_argument("--eval-tasks", type=int, default=32, help="held-out test tasks")
    p.add_argument("--temperature", type=float, default=1.0, help="training sampling temperature")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (all algorithms)")
    p.add_argument("--max-skills", type=int, default=3, help="skills shown to the OPD teacher")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes")
    p.add_argument("--sampler", default="hf", choices=("hf", "llamacpp"),
                   help="who samples rollouts and held-out episodes: hf (in-process) or llamacpp (a "
                        "local llama-server per run, one thread; scripts/build_llama_server.sh)")
    p.add_argument("--eval-t1", action="store_true",
                   help="runs also evaluate at temperature 1 (the warm start always does)")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table and plot from <out>/results.json")
    args = p.parse_args(argv)
    for n in ("steps", "tasks", "samples", "max_turns", "max_tokens", "eval_tasks", "workers",
              "warm_steps", "warm_demos"):
        if getattr(args, n) < 1:
            p.error(f"--{n.replace('_', '-')} must be >= 1")
    if {"grpo", "skillsd"} & set(args.algos) and args.samples < 2:
        p.error("--samples must be >= 2 when comparing grpo or skillsd (group-relative advantages)")
    return args


def run_config(args: argparse.Namespace, algo: str, seed: int, out_dir: str, steps: int,
               init_from: str = ""):
    from agentsd.distill.config import (
        DemoConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        RolloutSettings,
        TeacherConfig,
        TrainConfig,
    )
    from agentsd.hints import TeacherContextConfig

    warm = algo == "sft"  # the shared warm start (sft-teacher is a compared run)
    v = VARIANTS.get(algo, {"algo": algo})
    skills_dir = {"shuffled": getattr(args, "shuffled_dir", ""), "empty": getattr(args, "empty_dir", "")
                  }.get(v.get("library", ""), args.skills_dir)
    if warm and args.warm_split:  # the format warm start: another split's demos, plain context
        demos = DemoConfig(source=args.warm_demos_file, teacher_frac=0.0)
    elif v.get("context_distill"):  # filled by the job: the teacher's replayed successes
        demos = DemoConfig(source=str(Path(out_dir).with_name(Path(out_dir).name + "_demos.jsonl")),
                           teacher_frac=0.0)
    else:
        demos = DemoConfig(source="oracle", teacher_frac=args.teacher_frac)
    loss_kw = dict(v.get("loss", {}))
    if loss_kw.get("trace"):  # the whole TRACE schedule inside the run: KL, then anneal to 0
        loss_kw.setdefault("trace_warmup_steps", steps // 2)
        loss_kw.setdefault("trace_anneal_steps", steps - steps // 2)
    return TrainConfig(
        algo=v["algo"], loss=LossConfig(**loss_kw), steps=steps, seed=seed, out_dir=out_dir,
        eval_every=0 if warm else args.eval_every, eval_at_start=False, eval_at_end=not warm,
        teacher_eval=False,
        checkpoint_every=steps, resume=False, progress=False, samples_to_keep=4,
        model=ModelConfig(name=args.model, lora=True, lora_rank=16, lora_alpha=32.0,
                          tiny_hidden=16, init_from=init_from),
        rollout=RolloutSettings(env=args.env, tasks_per_step=args.tasks if not warm else
                                args.tasks * args.samples,
                                samples_per_task=args.samples if not warm else 1,
                                max_turns=args.max_turns, max_tokens=args.max_tokens,
                                eval_tasks=args.eval_tasks, temperature=args.temperature,
                                eval_sampled=warm or args.eval_t1,
                                sampler=args.sampler, llamacpp_threads=1 if args.sampler == "llamacpp" else 0),
        teacher=TeacherConfig(**{"mode": "frozen", **v.get("teacher", {})}, skills_dir=skills_dir,
                              context=TeacherContextConfig(
            views=v.get("views", ("skills", "reference")), max_skills=args.max_skills,
            max_skill_chars=args.max_skill_chars, skills_at=args.skills_at)),
        optim=OptimConfig(lr=args.warm_lr if warm else args.lr),
        demos=demos,
    )


# ---------------------------------------------------------------------------------------------
# worker processes: each loads the base model once and runs jobs with one torch thread

_BASE: dict = {}


def _worker_init(model: str) -> None:
    import torch

    torch.set_num_threads(1)
    if model == "tiny-random":
        return
    from agentsd.policy.models import load_model

    _BASE["model"], _BASE["tok"] = load_model(model)


def _base(cfg):
    import copy

    from agentsd.distill.trainer import build_student, prepare_student

    if "model" not in _BASE:
        return build_student(cfg)
    return prepare_student(copy.deepcopy(_BASE["model"]), cfg), _BASE["tok"]


def _run_job(job: dict) -> dict:
    from agentsd.distill.trainer import train

    t = time.perf_counter()
    extra: dict = {}
    if job.get("context_distill"):  # sample the teacher's demos first, then build the SFT run
        extra = _teacher_demos(job)
        if not extra["teacher_demos"]:
            return {"algo": job["algo"], "seed": job["seed"], **extra, "skipped": (
                "no successful teacher sample to fine-tune on"), "curve": [], "updated_steps": 0,
                "wall_s": round(time.perf_counter() - t, 1)}
        job = {**job, "cfg": run_config(job["args"], job["algo"], job["seed"], job["out_dir"],
                                        job["args"].steps, job["warm_dir"])}
    cfg = job["cfg"]
    model, tok = _base(cfg)
    res = train(cfg, model=model, tokenizer=tok)
    out = {"algo": job["algo"], "seed": cfg.seed, **res.final_eval, **extra,
           "curve": [(h["step"], h["eval/success"]) for h in res.history if "eval/success" in h],
           "curve_first_tool": [(h["step"], h["eval/first_tool"]) for h in res.history if "eval/first_tool" in h],
           "updated_steps": int(sum(h.get("optim/updated", 0) for h in res.history))}
    out.update(_split_evals(model, tok, cfg, job.get("eval_splits", ())))
    out["wall_s"] = round(time.perf_counter() - t, 1)
    return out


def _split_evals(model, tok, cfg, splits) -> dict:
    """Greedy held-out success on more splits (``eval_<split>/...``) with the final weights."""
    from agentsd.distill.trainer import evaluate
    from agentsd.policy.hf import HFPolicy
    from agentsd.rollout import split_tasks

    out: dict = {}
    greedy = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, eval_sampled=False))
    for split in splits:
        tasks = split_tasks(cfg.rollout.env, split, cfg.rollout.eval_tasks)
        out.update(evaluate(HFPolicy(model, tok), greedy, tasks=tasks, prefix=f"eval_{split}/"))
    return out


def _teacher_demos(job: dict) -> dict:
    """Context distillation's data: the warm model acting in the skills teacher's context on
    the train tasks of every step (the arm's whole episode budget, at the training temperature),
    its successes replayed in the student's plain prompt and written where the SFT run reads."""
    from agentsd.demos import replay_demos
    from agentsd.distill.episodes import rollouts, train_seeds
    from agentsd.distill.trainer import _TeacherContexts
    from agentsd.policy.hf import HFPolicy
    from agentsd.rollout import Task, split_kwargs
    from agentsd.store import write_jsonl

    args, tcfg = job["args"], job["teacher_cfg"]
    model, tok = _base(tcfg)  # the warm start, its fresh adapter still zero: the warm model
    model.eval()
    ctx = _TeacherContexts(tcfg, tok)
    kw = split_kwargs(tcfg.rollout.env, "train")
    tasks = [Task(ctx.env_factory(Task(tcfg.rollout.env, s, kw), tcfg.rollout.max_turns), s)
             for step in range(1, args.steps + 1) for s in train_seeds(tcfg, step)]
    trajs, _ = rollouts(HFPolicy(model, tok), tcfg, None, tcfg.rollout.samples_per_task,
                        tcfg.rollout.temperature, sample_seed=tcfg.seed * 1_000_003 + 7,
                        progress=False, tasks=tasks)
    demos = replay_demos(trajs, tok, env_id=tcfg.rollout.env, kwargs=kw)
    if demos:
        write_jsonl(demos, Path(job["out_dir"]).with_name(Path(job["out_dir"]).name + "_demos.jsonl"))
    return {"teacher_samples": len(trajs), "teacher_demos": len(demos),
            "teacher_sample_success": sum(t.success for t in trajs) / max(len(trajs), 1)}


def _teacher_job(job: dict) -> dict:
    """The warm model acting with a teacher context (no training); with ``student`` also the
    warm model acting on the plain task (the step-0 point of every run)."""
    from agentsd.distill.teacher import Teacher
    from agentsd.distill.trainer import _TeacherContexts, evaluate, evaluate_teacher
    from agentsd.policy.hf import HFPolicy

    cfg = job["cfg"]
    model, tok = _base(cfg)
    teacher = Teacher(model, "frozen")
    policy = HFPolicy(model, tok)
    ev = evaluate_teacher(policy, teacher, _TeacherContexts(cfg, tok), cfg)
    out = {"algo": job["algo"], "teacher_context": job["context"], **ev}
    if job.get("student"):  # the warm model on the other held-out splits too
        out["student_splits"] = _split_evals(model, tok, cfg, job.get("eval_splits", ()))
    if job.get("student"):
        out["student"] = evaluate(policy, dataclasses.replace(
            cfg, rollout=dataclasses.replace(cfg.rollout, eval_sampled=True)))
    return out


def _dispatch(job: dict) -> dict:
    return _teacher_job(job) if job.get("kind") == "teacher" else _run_job(job)


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        results = json.loads((out / "results.json").read_text())
        _write_outputs(results, out)
        return 0
    import multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    _prepare_inputs(args, out)
    results: dict = {"args": vars(args), "command": " ".join(["python", *sys.argv]), "warm": None,
                     "teacher": [], "runs": []}
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_worker_init, initargs=(args.model,)) as pool:
        warm_dir = args.warm_from or str(out / "warm_start")
        if not args.warm_from:
            print(f"[1/3] warm start: SFT on oracle demos, {args.warm_steps} steps", flush=True)
            cfg = run_config(args, "sft", 0, warm_dir, args.warm_steps)
            w = pool.apply(_dispatch, ({"algo": "sft", "cfg": cfg},))
            print(f"      warm start trained [{w['wall_s']:.0f}s]", flush=True)
        jobs = []
        for i, algo in enumerate(args.teacher_check):  # the first also measures the warm student
            cfg = run_config(args, _as_teacher(algo), 0, str(out / f"teacher_{algo}"), 1, warm_dir)
            jobs.append({"kind": "teacher", "algo": algo, "cfg": cfg, "student": i == 0,
                         "context": _context_name(algo, cfg), "eval_splits": args.eval_splits})
        for seed in args.seeds:
            for algo in args.algos:
                run_dir = str(out / f"{algo}_seed{seed}")
                job = {"algo": algo, "seed": seed, "eval_splits": args.eval_splits}
                if VARIANTS.get(algo, {}).get("context_distill"):
                    job.update(context_distill=True, args=args, out_dir=run_dir, warm_dir=warm_dir,
                               teacher_cfg=run_config(args, "opd-skills", seed, run_dir + "_teacher",
                                                      args.steps, warm_dir))
                else:
                    job["cfg"] = run_config(args, algo, seed, run_dir, args.steps, warm_dir)
                jobs.append(job)
        n_check = len(args.teacher_check)
        print(f"[2/3] teacher check + [3/3] {len(jobs) - n_check} runs on {args.workers} workers",
              flush=True)
        for r in pool.imap_unordered(_dispatch, jobs):
            key = "teacher" if "teacher_context" in r else "runs"
            if "student" in r:
                results["warm"] = r.pop("student")
                results["warm_splits"] = r.pop("student_splits", {})
            results[key].append(r)
            print("      " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                         for k, v in r.items() if k != "curve"}), flush=True)
            _save(results, out)
        pool.close()  # let the workers exit on their own (terminate() breaks their pipes)
        pool.join()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    _save(results, out)
    _write_outputs(results, out)
    return 0


def _prepare_inputs(args: argparse.Namespace, out: Path) -> None:
    """What the runs read, written once: the warm start's demos (``--warm-split``) and the
    control libraries (shuffled workflows, empty)."""
    if args.warm_split:
        args.warm_demos_file = str(out / "warm_demos.jsonl")
        if not Path(args.warm_demos_file).exists():
            _write_split_demos(args.env, args.warm_split, args.warm_demos, args.model, args.warm_demos_file)
    if {"shuffled-fkl"} & set(args.algos) | {"shuffled-fkl"} & set(args.teacher_check):
        args.shuffled_dir = str(out / "skills_shuffled")
        shuffled_library(args.skills_dir or None, args.env, args.shuffled_dir)
    args.empty_dir = str(out / "skills_empty")
    Path(args.empty_dir).mkdir(parents=True, exist_ok=True)


def _write_split_demos(env: str, split: str, n: int, model: str, path: str) -> None:
    from agentsd.demos import oracle_demos
    from agentsd.policy.models import load_tokenizer
    from agentsd.rollout import split_tasks
    from agentsd.store import write_jsonl

    tasks = split_tasks(env, split, n)
    tok = load_tokenizer("smollm2" if model == "tiny-random" else model)
    demos = oracle_demos(env, [t.seed for t in tasks], tok, kwargs=tasks[0].kwargs)
    write_jsonl([d for d in demos if d.success], path)
    print(f"      warm-start demos: {sum(d.success for d in demos)}/{len(demos)} oracle episodes of "
          f"split {split!r} -> {path}", flush=True)


def shuffled_library(src: str | None, env: str, dest: str) -> dict[str, str]:
    """A copy of ``env``'s library where every workflow keeps its name and description (what
    retrieval matches, so each task still picks its own slot) but carries the body of another
    template's workflow (a cyclic shift in name order): the same library, the wrong rule.
    Pitfalls and conventions are kept. Returns ``{skill: the skill whose body it now has}``."""
    import dataclasses as dc

    from agentsd.skills import SkillLibrary, load_library

    lib = load_library(src, env=env)
    flows = sorted((s for s in lib.for_env(env) if s.kind == "workflow"), key=lambda s: s.name)
    moved = {a.name: b for a, b in zip(flows, flows[1:] + flows[:1])} if len(flows) > 1 else {}
    out = SkillLibrary()
    for s in lib.for_env(env):
        out.add(dc.replace(s, body=moved[s.name].body) if s.name in moved else s)
    out.save(dest)
    return {a: b.name for a, b in moved.items()}


def _as_teacher(algo: str) -> str:
    """The run config whose teacher context an arm's check measures (context distillation's
    teacher is the skills-only one)."""
    return "opd-skills" if VARIANTS.get(algo, {}).get("context_distill") else algo


def _context_name(algo: str, cfg) -> str:
    lib = VARIANTS.get(algo, {}).get("library", "")
    return ",".join(cfg.teacher_views().views) + (f" ({lib} library)" if lib else "")


def _save(results: dict, out: Path) -> None:
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown_table(results: dict) -> str:
    """Held-out success per algorithm: mean ± sample std over seeds, the per-seed values, the
    parse rate, temperature-1 success, every ``--eval-splits`` split, wall time and the episodes
    it took to reach GRPO's final success, next to the warm start and each checked teacher
    context acting (its advantage over the warm student), then the exact command."""
    a = results["args"]
    splits = list(a.get("eval_splits") or [])
    per_ep = a["tasks"] * a["samples"]
    # ToolWorld: the right first tool (what a workflow rule moves first), mean ± std and per seed
    ft = any("eval/first_tool" in r for r in results["runs"])
    head = ("| policy | held-out success (greedy), mean ± std over seeds | per seed | parse rate |"
            + (" right first tool, mean ± std (per seed) |" if ft else "")
            + " success at T=1 |" + "".join(f" {sp} success |" for sp in splits)
            + " steps with a non-zero gradient | episodes to GRPO's final | wall s per run |")
    lines = [head, "|" + "---|" * (8 + ft + len(splits))]
    ftc = (lambda x: f" {_opt(x)} |") if ft else (lambda x: "")
    w = results.get("warm")
    blank = " - |" * len(splits)
    if w:
        src = f"`{a['warm_from']}`" if a.get("warm_from") else f"{a['warm_steps']} steps"
        ws = results.get("warm_splits") or {}
        lines.append(f"| warm start (SFT, {src}) | {w['eval/success']:.3f} | - | "
                     f"{w['eval/parse_rate']:.2f} |{ftc(w.get('eval/first_tool'))} {_opt(w.get('eval/success_t1'))} |"
                     + "".join(f" {_opt(ws.get(f'eval_{sp}/success'))} |" for sp in splits)
                     + " - | - | - |")
    for t in results.get("teacher", []):
        adv = (f" (advantage {t['teacher/eval_success'] - w['eval/success']:+.3f})" if w else "")
        lines.append(f"| teacher acting ({t['algo']} context: {t['teacher_context']}) | "
                     f"{t['teacher/eval_success']:.3f}{adv} | - | {t['teacher/eval_parse_rate']:.2f} |"
                     f"{ftc(t.get('teacher/eval_first_tool'))} "
                     f"{_opt(t.get('teacher/eval_success_t1'))} |{blank} - | - | - |")
    grpo_final = _final_mean(results, "grpo")
    for algo in dict.fromkeys(r["algo"] for r in results["runs"]):
        rs = sorted((r for r in results["runs"] if r["algo"] == algo), key=lambda r: r["seed"])
        done = [r for r in rs if "eval/success" in r]
        if not done:
            lines.append(f"| {algo} | - ({'; '.join(r.get('skipped', '') for r in rs)}) |"
                         + " - |" * (6 + ft + len(splits)))
            continue
        m, sd = _mean_sd([r["eval/success"] for r in done])
        p, _ = _mean_sd([r["eval/parse_rate"] for r in done])
        t1s = [r["eval/success_t1"] for r in done if "eval/success_t1" in r]
        t1 = "{:.3f} ± {:.3f}".format(*_mean_sd(t1s)) if t1s else "-"
        per_seed = ", ".join(f"{r['eval/success']:.3f}" for r in done)
        if len(done) < len(a["seeds"]):  # a run still in progress or stopped early
            per_seed += f" (partial: seeds {', '.join(str(r['seed']) for r in done)} of {len(a['seeds'])})"
        cells = []
        for sp in splits:
            xs = [r[f"eval_{sp}/success"] for r in done if f"eval_{sp}/success" in r]
            cells.append("{:.3f} ± {:.3f}".format(*_mean_sd(xs)) if xs else "-")
        reach = _episodes_to(done, grpo_final, per_ep) if grpo_final is not None else None
        fts = [r["eval/first_tool"] for r in done if "eval/first_tool" in r]
        ftcell = ("{:.3f} ± {:.3f} ({})".format(*_mean_sd(fts), ", ".join(f"{x:.3f}" for x in fts))
                  if fts else "-")
        lines.append(f"| {algo} | {m:.3f} ± {sd:.3f} | {per_seed} | {p:.2f} |"
                     + (f" {ftcell} |" if ft else "") + f" {t1} |"
                     + "".join(f" {c} |" for c in cells)
                     + f" {sum(r['updated_steps'] for r in done)}/{len(done) * a['steps']} |"
                     f" {'-' if reach is None else reach} |"
                     f" {statistics.mean(r['wall_s'] for r in done):.0f} |")
    if results.get("command"):
        lines += ["", f"Command: `{results['command']}`; sampler: {a.get('sampler', 'hf')}."]
    return "\n".join(lines)


def _final_mean(results: dict, algo: str) -> float | None:
    xs = [r["eval/success"] for r in results["runs"] if r["algo"] == algo and "eval/success" in r]
    return statistics.mean(xs) if xs else None


def _episodes_to(runs: list[dict], target: float, per_step: int) -> str | None:
    """Training episodes until the seed-mean held-out curve first reaches ``target`` (``never``
    when it does not within the run)."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        for step, v in r.get("curve", []):
            by_step.setdefault(int(step), []).append(v)
    for step in sorted(by_step):
        if step > 0 and statistics.mean(by_step[step]) >= target:
            return str(step * per_step)
    return "never"


def _write_outputs(results: dict, out: Path) -> None:
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    print("\n" + table)
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    w = results.get("warm")
    for r in results["runs"]:
        pts = [tuple(p) for p in r["curve"]]
        if w:
            pts = [(0, w["eval/success"])] + [p for p in pts if p[0] > 0]
        curves.setdefault(r["algo"], []).append(pts)
    if curves:
        try:
            from agentsd.distill.report import plot_comparison

            plot_comparison(curves, out / "learning_curve.png",
                            title=f"{results['args']['env']}: held-out success from one warm start",
                            ylabel="held-out success (greedy)")
        except ImportError as e:
            print(f"(no plot: {e})")


if __name__ == "__main__":
    sys.exit(main())
