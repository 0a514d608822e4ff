"""How much do skills and privileged hints change the teacher? The signal the trainer distills.

For each built-in env, on held-out (``test`` split) seeds, with the real model (SmolLM2 by
default) playing as the plain student:

1. the student plays (rollout engine, plain task prompt) -> student success rate;
2. for each teacher condition (``skills``: retrieved skills from the library; ``hints``:
   privileged views; ``skills+hints``; ``hints-step``: per-turn next-step hints), the same model
   conditioned on that context scores the *student's own* action tokens; we report the mean
   per-token log-prob gap ``log pi_T(y | c') - log pi_S(y | c)`` (token-weighted), its mean
   absolute value, and the share of tokens the teacher finds more likely;
3. the conditioned teacher also plays the same seeds itself (its context replacing the task
   prompt) -> teacher success rate per condition (``--no-act`` skips this).

    python scripts/measure_teacher_gap.py --episodes 8 --max-turns 4
    python scripts/measure_teacher_gap.py --envs Sokoban-Easy-v0 --episodes 4 --out runs/gap.json

Reading the gap: on the student's own samples, the mean of ``log pi_T - log pi_S`` estimates
``-KL(pi_S || pi_T)``, so it is <= 0 in expectation whatever the context; its size is the
per-token reverse KL the trainer minimizes (how much the context changes the model's
predictions on the student's tokens), near 0 meaning no signal. Whether that signal points
somewhere better is what the teacher success rate (and training) says.

Numbers depend on the model and sampling; this script only measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: teacher conditions: name -> TeacherContextConfig keyword arguments
CONDITIONS: dict[str, dict[str, Any]] = {
    "skills": {"views": ("skills",)},
    "hints": {"views": ("answer", "solution", "plan", "hidden_tests", "notes")},
    "skills+hints": {"views": ("skills", "answer", "solution", "plan", "hidden_tests", "notes")},
    "hints-step": {"views": ("notes",), "exposure_mode": "step"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--envs", nargs="*", default=None, help="env ids (default: every built-in env)")
    p.add_argument("--episodes", type=int, default=8, help="held-out episodes per env")
    p.add_argument("--model", default="smollm2", help="model name for the hf backend")
    p.add_argument("--max-turns", type=int, default=4, help="turn cap per episode (keeps CPU time bounded)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per action")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of student and teacher")
    p.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS),
                   help="teacher conditions to measure")
    p.add_argument("--skills-root", default=None, help="skill library (default: the shipped skills/)")
    p.add_argument("--max-skills", type=int, default=3, help="skills shown to the teacher")
    p.add_argument("--exposure", type=float, default=1.0, help="share of the gold solution/plan revealed")
    p.add_argument("--act", nargs="*", default=None, choices=list(CONDITIONS),
                   help="conditions whose teacher also plays the episodes (default: every measured "
                        "episode-mode condition; pass no value to skip teacher rollouts)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 avoids OpenMP spin-waiting when the CPU is shared)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.max_turns < 1 or args.max_tokens < 1:
        p.error("--episodes, --max-turns and --max-tokens must be >= 1")
    if not 0 <= args.exposure <= 1:
        p.error("--exposure must be in [0, 1]")
    return args


def builtin_envs() -> list[str]:
    import agentsd

    return sorted(i for i, s in agentsd.registry().items() if str(s.entry_point).startswith("agentsd.envs."))


def token_logprobs(model: Any, ids: list[int], positions: list[int]) -> list[float]:
    """log p(ids[i] | ids[:i]) for each i in ``positions`` (one forward pass)."""
    import torch

    if not positions:
        return []
    with torch.no_grad():
        logits_TV = model(torch.tensor([ids], device=model.device)).logits[0]
    logp_TV = torch.log_softmax(logits_TV[:-1].float(), dim=-1)
    pos_P = torch.tensor(positions, device=logp_TV.device)
    tok_P = torch.tensor([ids[i] for i in positions], device=logp_TV.device)
    return logp_TV[pos_P - 1, tok_P].tolist()


def render(tokenizer: Any, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "input_ids") else out)


def action_spans(traj: Any) -> list[list[int]]:
    """Positions of each turn's action tokens in ``traj.token_ids()``."""
    spans, pos = [], 0
    for t in traj.turns:
        pos += len(t.prompt_ids)
        spans.append(list(range(pos, pos + len(t.action_ids))))
        pos += len(t.action_ids)
    return spans


def gap_for(model: Any, tokenizer: Any, traj: Any, privs: list, skills: list, cfg: Any) -> dict[str, Any]:
    """Per-token teacher and student log-probs on the student's action tokens."""
    from agentsd.hints import build_teacher_messages

    ids = traj.token_ids()
    spans = action_spans(traj)
    all_pos = [p for s in spans for p in s]
    student = token_logprobs(model, ids, all_pos)
    plen = traj.prompt_len()
    task = traj.turns[0].observation
    teacher: list[float] = []
    if cfg.exposure_mode == "episode":
        tprompt = render(tokenizer, build_teacher_messages(task, privs[0], skills, cfg))
        shift = len(tprompt) - plen
        teacher = token_logprobs(model, tprompt + ids[plen:], [p + shift for p in all_pos])
    else:  # one row per turn: that turn's context, the response up to its action, score its action
        for k, span in enumerate(spans):
            if not span:
                continue
            tprompt = render(tokenizer, build_teacher_messages(task, privs[k], skills, cfg, turn=k))
            shift = len(tprompt) - plen
            teacher += token_logprobs(model, tprompt + ids[plen:span[-1] + 1], [p + shift for p in span])
    sampler = traj.sampler_logprobs()
    return {"teacher": teacher, "student": student,
            "sampler_mismatch": statistics.fmean(abs(sampler[p] - s) for p, s in zip(all_pos, student,
                                                                                     strict=True))
            if all_pos else 0.0}


class TeacherPrompted:
    """An env whose first observation is the teacher's context (for measuring how the
    conditioned teacher acts). Measurement only: it shows privileged material on purpose."""

    def __init__(self, env: Any, library: list, k: int, cfg: Any) -> None:
        self._env, self._library, self._k, self._cfg = env, library, k, cfg

    def reset(self, **kw: Any):
        from agentsd.hints import build_teacher_messages, task_query
        from agentsd.skills.retrieve import select_skills

        obs, info = self._env.reset(**kw)
        skills = select_skills(self._library, task_query(obs), k=self._k) if "skills" in self._cfg.views else []
        return build_teacher_messages(obs, self._env.privileged(), skills, self._cfg), info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def summarize_gap(rows: list[dict[str, Any]]) -> dict[str, float]:
    d = [t - s for r in rows for t, s in zip(r["teacher"], r["student"], strict=True)]
    per_ep = [statistics.fmean(t - s for t, s in zip(r["teacher"], r["student"], strict=True))
              for r in rows if r["teacher"]]
    if not d:
        return {"tokens": 0}
    return {"tokens": len(d), "mean_gap": statistics.fmean(d), "mean_abs_gap": statistics.fmean(abs(x) for x in d),
            "share_teacher_higher": sum(x > 0 for x in d) / len(d),
            "episode_mean_gap_sd": statistics.pstdev(per_ep) if len(per_ep) > 1 else 0.0,
            "sampler_mismatch": statistics.fmean(r["sampler_mismatch"] for r in rows)}


def measure_env(env_id: str, policy: Any, args: argparse.Namespace) -> dict[str, Any]:
    import agentsd
    from agentsd.hints import TeacherContextConfig, replay_privileged, task_query
    from agentsd.policy.base import SamplingParams
    from agentsd.rollout import rollout
    from agentsd.skills.library import load_library
    from agentsd.skills.retrieve import select_skills

    seeds = agentsd.split_seeds(env_id, "test", args.episodes)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    t0 = time.time()
    student = rollout(policy, env_id, seeds=seeds, params=params, max_turns=args.max_turns)
    out: dict[str, Any] = {"env": env_id, "seeds": [seeds[0], seeds[-1]], "episodes": len(student),
                           "student_success": statistics.fmean(t.success for t in student),
                           "student_reward": statistics.fmean(t.total_reward for t in student),
                           "action_tokens": sum(t.num_action_tokens() for t in student), "conditions": {}}
    try:
        lib_skills = load_library(args.skills_root, env=env_id).for_env(env_id)
    except Exception as e:  # no library for this env: the skills conditions show nothing
        print(f"  [{env_id}] no skills: {e}", file=sys.stderr)
        lib_skills = []
    privs = {t.id: replay_privileged(t) for t in student}
    model, tok = policy.model, policy.tokenizer
    for name in args.conditions:
        cfg = TeacherContextConfig(max_skills=args.max_skills, exposure=args.exposure, **CONDITIONS[name])
        rows, shown = [], []
        for t in student:
            skills = select_skills(lib_skills, task_query(t.turns[0].observation), k=args.max_skills) \
                if "skills" in cfg.views else []
            shown.append([s.name for s in skills])
            rows.append(gap_for(model, tok, t, privs[t.id], skills, cfg))
        res = summarize_gap(rows)
        res["skills_shown"] = sorted({n for s in shown for n in s})
        acting = args.act if args.act is not None else args.conditions
        if name in acting and cfg.exposure_mode == "episode":
            def factory(cfg: Any = cfg) -> TeacherPrompted:
                return TeacherPrompted(agentsd.make(env_id, max_turns=args.max_turns), lib_skills,
                                       args.max_skills, cfg)

            acted = rollout(policy, [factory], seeds=seeds, params=params, max_turns=args.max_turns)
            res["teacher_success"] = statistics.fmean(t.success for t in acted)
            res["teacher_reward"] = statistics.fmean(t.total_reward for t in acted)
        out["conditions"][name] = res
        print(f"  [{env_id}] {name}: {json.dumps({k: v for k, v in res.items() if k != 'skills_shown'})}",
              file=sys.stderr)
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| env | condition | student success | teacher success | mean gap (nats/token) | mean abs gap | "
             "teacher higher | tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, c in r["conditions"].items():
            ts = f"{c['teacher_success']:.2f}" if "teacher_success" in c else "-"
            lines.append(f"| {r['env']} | {name} | {r['student_success']:.2f} | {ts} | "
                         f"{c.get('mean_gap', float('nan')):+.3f} | {c.get('mean_abs_gap', float('nan')):.3f} | "
                         f"{c.get('share_teacher_higher', float('nan')):.2f} | {c.get('tokens', 0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from agentsd.policy import load_policy

    torch.set_num_threads(args.threads)
    t0 = time.time()
    policy = load_policy("hf", args.model)
    policy.model.eval()
    print(f"loaded {policy.model_id} in {time.time() - t0:.1f}s", file=sys.stderr)
    results = []
    report = {"model": policy.model_id, "args": {k: v for k, v in vars(args).items()},
              "conditions": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
                             for k, v in CONDITIONS.items() if k in args.conditions},
              "results": results}
    for env_id in args.envs or builtin_envs():
        print(f"{env_id} ...", file=sys.stderr)
        results.append(measure_env(env_id, policy, args))
        if args.out:  # after every env, so a long run killed midway keeps what it measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
