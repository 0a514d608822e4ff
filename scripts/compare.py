"""Compare GRPO, RFT, plain OPSD (teacher sees the per-turn reference reply) and skill-conditioned
OPD (skills + reference) from one shared warm start: same model, same episode budget, same code
path, several seeds, the same held-out tasks.

1. **Warm start**: one SFT run on oracle demonstrations (a share of them in the teacher's
   context, so the teacher is on-format before it teaches), evaluated on the held-out tasks.
2. **Teacher check**: the warm model *acting* with each teacher context (OPD's skills + reference,
   OPSD's reference only) on the same held-out tasks.
3. **Runs**: every (algo, seed) starts from the warm start (``--model.init-from``: its adapter
   merged, a fresh adapter trained on top, so the ``frozen`` teacher is the warm model) and
   trains ``--steps`` steps of ``--tasks x --samples`` episodes. Jobs run in ``--workers``
   processes with one torch thread each (on a shared CPU that beats one multi-threaded job).

Writes ``results.json`` (as results come in), ``results.md`` (the README table),
``learning_curve.png`` (held-out success vs step, mean ± std over seeds per algorithm) and every
run folder under ``--out``::

    python scripts/compare.py --env Sokoban-Easy-v0 --seeds 0 1 2 --steps 8 --out runs/compare
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

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
}
ALGOS = ("grpo", "rft", "opsd", "opd", *VARIANTS)
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
    p.add_argument("--teacher-check", nargs="*", default=["opd", "opsd"], choices=["opd", "opsd"],
                   help="teacher contexts whose acting success on the held-out tasks is measured "
                        "from the warm model (the first one also measures the warm student)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds")
    p.add_argument("--warm-steps", type=int, default=20, help="SFT steps of the shared warm start")
    p.add_argument("--warm-lr", type=float, default=1e-3, help="SFT learning rate")
    p.add_argument("--warm-from", default="", help="reuse this warm-start run folder instead")
    p.add_argument("--teacher-frac", type=float, default=0.5,
                   help="share of warm-start demos in the teacher's context")
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
              "warm_steps"):
        if getattr(args, n) < 1:
            p.error(f"--{n.replace('_', '-')} must be >= 1")
    if "grpo" in args.algos and args.samples < 2:
        p.error("--samples must be >= 2 when comparing grpo (group-relative advantages)")
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

    warm = algo == "sft"
    v = VARIANTS.get(algo, {"algo": algo})
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
        teacher=TeacherConfig(mode="frozen", **v.get("teacher", {}), context=TeacherContextConfig(
            views=v.get("views", ("skills", "reference")), max_skills=args.max_skills)),
        optim=OptimConfig(lr=args.warm_lr if warm else args.lr),
        demos=DemoConfig(source="oracle", teacher_frac=args.teacher_frac),
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

    cfg = job["cfg"]
    t = time.perf_counter()
    model, tok = _base(cfg)
    res = train(cfg, model=model, tokenizer=tok)
    return {"algo": job["algo"], "seed": cfg.seed, **res.final_eval,
            "curve": [(h["step"], h["eval/success"]) for h in res.history if "eval/success" in h],
            "updated_steps": int(sum(h.get("optim/updated", 0) for h in res.history)),
            "wall_s": round(time.perf_counter() - t, 1)}


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
    results: dict = {"args": vars(args), "warm": None, "teacher": [], "runs": []}
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
            cfg = run_config(args, algo, 0, str(out / f"teacher_{algo}"), 1, warm_dir)
            jobs.append({"kind": "teacher", "algo": algo, "cfg": cfg, "student": i == 0,
                         "context": ",".join(cfg.teacher_views().views)})
        for seed in args.seeds:
            for algo in args.algos:
                jobs.append({"algo": algo, "cfg": run_config(  # algo: the compared name
                    args, algo, seed, str(out / f"{algo}_seed{seed}"), args.steps, warm_dir)})
        n_check = len(args.teacher_check)
        print(f"[2/3] teacher check + [3/3] {len(jobs) - n_check} runs on {args.workers} workers",
              flush=True)
        for r in pool.imap_unordered(_dispatch, jobs):
            key = "teacher" if "teacher_context" in r else "runs"
            if "student" in r:
                results["warm"] = r.pop("student")
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
    parse rate and temperature-1 success, next to the warm start and the teacher acting."""
    a = results["args"]
    lines = ["| policy | held-out success (greedy), mean ± std over seeds | per seed | parse rate |"
             " success at T=1 | steps with a non-zero gradient |",
             "|---|---|---|---|---|---|"]
    w = results.get("warm")
    if w:
        src = f"`{a['warm_from']}`" if a.get("warm_from") else f"{a['warm_steps']} steps"
        lines.append(f"| warm start (SFT, {src}) | {w['eval/success']:.3f} | - | "
                     f"{w['eval/parse_rate']:.2f} | {_opt(w.get('eval/success_t1'))} | - |")
    for t in results.get("teacher", []):
        lines.append(f"| teacher acting ({t['algo']} context: {t['teacher_context']}) | "
                     f"{t['teacher/eval_success']:.3f} | - | {t['teacher/eval_parse_rate']:.2f} | "
                     f"{_opt(t.get('teacher/eval_success_t1'))} | - |")
    for algo in dict.fromkeys(r["algo"] for r in results["runs"]):
        rs = sorted((r for r in results["runs"] if r["algo"] == algo), key=lambda r: r["seed"])
        m, sd = _mean_sd([r["eval/success"] for r in rs])
        p, _ = _mean_sd([r["eval/parse_rate"] for r in rs])
        t1s = [r["eval/success_t1"] for r in rs if "eval/success_t1" in r]
        t1 = "{:.3f} ± {:.3f}".format(*_mean_sd(t1s)) if t1s else "-"
        per_seed = ", ".join(f"{r['eval/success']:.3f}" for r in rs)
        if len(rs) < len(a["seeds"]):  # a run still in progress or stopped early
            per_seed += f" (partial: seeds {', '.join(str(r['seed']) for r in rs)} of {len(a['seeds'])})"
        lines.append(f"| {algo} | {m:.3f} ± {sd:.3f} | {per_seed} | {p:.2f} | "
                     f"{t1} | "
                     f"{sum(r['updated_steps'] for r in rs)}/{len(rs) * a['steps']} |")
    return "\n".join(lines)


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
