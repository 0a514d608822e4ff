"""agentsd's on-policy distillation step against TRL's, side by side: time per step and peak
memory on the same model, prompts and token budget, in one run.

- **TRL**: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=1`` (every batch is the student's own
  generation: fully on-policy) and ``beta=1`` (TRL's generalized JSD at beta 1 is the reverse KL
  ``KL(student || teacher)``, over the full vocabulary at every completion position),
  ``temperature=1``, ``seq_kd=False``, gradient checkpointing off, a separate teacher model (a
  copy of the base weights: GKD needs one), the student trained through a PEFT LoRA adapter.
  Timed per optimizer step with a ``TrainerCallback`` (generation + teacher and student
  forwards + backward + AdamW).
- **agentsd**: one OPD step as :func:`agentsd.distill.trainer.train` runs it, on single-turn
  episodes of the same prompts: sampling with the ``hf`` backend, then
  :func:`agentsd.distill.update.build_batch` and :func:`agentsd.distill.update.update`
  (teacher = the same network with the LoRA adapter disabled, ``frozen``; sampled-token reverse
  KL with the importance weight; AdamW). ``--agentsd-loss jsd`` runs the full-vocabulary
  reverse KL instead (``loss.kind=jsd, alpha=1``), the same estimator as TRL's.

Both sides: the same ``B`` prompts every step (the first observation of ``--env`` on seeds
``0..B-1``, chat-templated), ``--max-new-tokens`` sampled tokens per prompt at temperature 1, the
same LoRA rank/alpha/targets, learning rate and seed, fp32 on the CPU. Each side runs in its own
subprocess, one after the other, so its peak memory (peak RSS on the CPU, peak CUDA allocation on
a GPU) is its own; ``rss_base_mb`` is the process after imports, before any model is built
(TRL imports more libraries). The first ``--warmup`` steps are not timed; the median of the
rest is reported. Generated tokens per step are printed too: a side whose samples hit EOS early
did less work.

    pip install 'agentsd[bench]'          # TRL
    python scripts/bench_vs_trl.py --model tiny-random
    python scripts/bench_vs_trl.py --model smollm2 --batch 4 --max-new-tokens 32 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIDES = ("agentsd", "trl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny-random",
                   help="tiny-random (random-weight Llama, smollm2 tokenizer) or a model name/path "
                        "(smollm2 = the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--tiny-hidden", type=int, default=64, help="hidden size of tiny-random")
    p.add_argument("--tiny-layers", type=int, default=2, help="layers of tiny-random")
    p.add_argument("--env", default="Sokoban-Easy-v0", help="env whose first observations are the prompts")
    p.add_argument("--batch", type=int, default=4, help="prompts (sequences) per step")
    p.add_argument("--max-new-tokens", type=int, default=32, help="sampled tokens per prompt")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (both sides)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (both sides)")
    p.add_argument("--agentsd-loss", default="reverse_kl", choices=("reverse_kl", "jsd"),
                   help="agentsd objective: sampled-token reverse KL (default) or full-vocabulary "
                        "reverse KL (jsd, alpha=1: TRL's estimator)")
    p.add_argument("--agentsd-sampler", default="hf", choices=("hf", "llamacpp"),
                   help="who samples agentsd's episodes: hf (in-process transformers) or llamacpp (a "
                        "local llama-server on the model's GGUF, the LoRA adapter written and the "
                        "server restarted after every update, inside the timed step; GGUF models only)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed (both sides)")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--worker", default="", choices=("",) + SIDES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# shared setup

def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prompts(args: argparse.Namespace) -> list[list[dict]]:
    """The first observation of ``args.env`` on seeds 0..B-1, as chat messages."""
    import agentsd

    out = []
    for seed in range(args.batch):
        env = agentsd.make(args.env)
        obs, _ = env.reset(seed=seed)
        out.append([dict(m) for m in obs])
        env.close()
    return out


def _base_model(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    from agentsd.distill.models import tiny_random_model
    from agentsd.policy.models import load_model, load_tokenizer

    if args.model == "tiny-random":
        tok = load_tokenizer("smollm2")
        model = tiny_random_model(vocab_size=len(tok), hidden_size=args.tiny_hidden,
                                  layers=args.tiny_layers, seed=args.seed, eos_token_id=tok.eos_token_id)
    else:
        model, tok = load_model(args.model, device="cpu", dtype=torch.float32)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(args.device), tok


def _lora_targets(model: Any) -> list[str]:
    from agentsd.distill.models import LORA_TARGETS

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return [t for t in LORA_TARGETS if t in names]


# ---------------------------------------------------------------------------------------------
# agentsd: the trainer's OPD step on single-turn episodes

def run_agentsd(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from agentsd.distill.config import LossConfig, ModelConfig, RolloutSettings, TrainConfig
    from agentsd.distill.models import with_lora
    from agentsd.distill.teacher import Teacher, build_teacher_rows, render_prompt
    from agentsd.distill.update import build_batch, update
    from agentsd.policy.base import SamplingParams
    from agentsd.policy.hf import HFPolicy
    from agentsd.trajectory import Trajectory, Turn

    base = _rss_mb()
    torch.manual_seed(args.seed)
    model, tok = _base_model(args)
    prompts = [render_prompt(tok, m) for m in _prompts(args)]
    model = with_lora(model, rank=args.lora_rank, alpha=2.0 * args.lora_rank)  # the LORA_TARGETS it has
    model.train()
    loss = LossConfig(kind=args.agentsd_loss, alpha=1.0)
    cfg = TrainConfig(algo="opd", model=ModelConfig(name="tiny-random", lora_rank=args.lora_rank,
                                                    device=args.device),
                      rollout=RolloutSettings(env=args.env, temperature=1.0, max_tokens=args.max_new_tokens,
                                              tasks_per_step=args.batch, samples_per_task=1),
                      loss=loss)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    teacher = Teacher(model, "frozen", 0.95, 10, False)
    policy = HFPolicy(model, tok)
    sampler = _llamacpp_sampler(args, cfg, model, tok) if args.agentsd_sampler == "llamacpp" else None
    times, n_tok, gen_s, sync_s = [], [], [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        sampling = sampler.policy if sampler is not None else policy  # a new pool after each sync
        gens = sampling.generate(prompts, SamplingParams(temperature=1.0, max_tokens=args.max_new_tokens,
                                                         seed=args.seed * 1000 + step))
        t_gen = time.perf_counter() - t0
        trajs = [Trajectory(env_id=args.env, turns=[Turn(prompt_ids=p, action_ids=g.token_ids,
                                                          action_logprobs=g.logprobs)])
                 for p, g in zip(prompts, gens)]
        # the teacher scores the same prompt + tokens (a self-distillation step with no extra
        # context: the same work as TRL's teacher forward)
        data = build_batch(trajs, cfg, 1, lambda t, i: build_teacher_rows(t, t.turns[0].prompt_ids, i))
        update(model, opt, teacher, data, cfg, policy.pad_token_id, lambda m: contextlib.nullcontext())
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_sync = time.perf_counter()
        if sampler is not None:
            sampler.sync(model, step + 1)  # the sampler follows the update: part of the step
        t_sync = time.perf_counter() - t_sync
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            n_tok.append(sum(len(g.token_ids) for g in gens))
            gen_s.append(t_gen)
            sync_s.append(t_sync)
    out = {"side": "agentsd", "loss": f"{args.agentsd_loss} (teacher: LoRA adapter off)",
           "sampler": args.agentsd_sampler, "step_s": statistics.median(times), "step_s_all": times,
           "generate_s": statistics.median(gen_s), "sync_s": statistics.median(sync_s),
           "gen_tokens_per_step": statistics.mean(n_tok), "peak_mb": _peak_mb(args.device),
           "rss_base_mb": base}
    if sampler is not None:
        peak_server = sum(server.peak_rss_mb() for server in sampler.servers)
        sampler.close()
        # the server is memory this side needs too: count its peak on top of the trainer's
        out |= {"trainer_peak_mb": out["peak_mb"], "server_peak_mb": peak_server,
                "peak_mb": out["peak_mb"] + peak_server}
    return out


def _llamacpp_sampler(args: argparse.Namespace, cfg: Any, model: Any, tok: Any) -> Any:
    """The trainer's ``llamacpp`` sampler for ``model`` (a local llama-server on its base written
    once as F16 into a copy of the model's GGUF, the LoRA adapter written and the server restarted
    on every ``sync``), already following ``model``."""
    import dataclasses

    from agentsd.distill.samplers import LlamaCppSampler

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=args.model),
                              rollout=dataclasses.replace(cfg.rollout, sampler="llamacpp",
                                                          eval_tasks=args.batch, llamacpp_ctx=1024))
    sampler = LlamaCppSampler(cfg, tok, Path(tempfile.mkdtemp(prefix="bench-llamacpp-")))
    sampler.sync(model, 0)
    return sampler


# ---------------------------------------------------------------------------------------------
# TRL: GKDTrainer, lmbda=1 (on-policy), beta=1 (reverse KL)

def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import copy
    import logging
    import warnings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:  # TRL before GKD moved to trl.experimental
        from trl import GKDConfig, GKDTrainer

    base = _rss_mb()

    warnings.filterwarnings("ignore")
    logging.getLogger("trl").setLevel(logging.ERROR)
    torch.manual_seed(args.seed)
    model, tok = _base_model(args)
    teacher = copy.deepcopy(model).eval()  # GKD needs a teacher model: the base weights
    msgs = _prompts(args)
    n_rows = args.batch * (args.warmup + args.steps)
    # the assistant turn is a placeholder: with lmbda=1 every batch is replaced by the student's
    # own generation from the prompt (messages[:-1])
    ds = Dataset.from_list([{"messages": msgs[i % args.batch] + [{"role": "assistant", "content": "."}]}
                            for i in range(n_rows)])
    out = tempfile.mkdtemp(prefix="bench_trl_")
    cfg = GKDConfig(output_dir=out, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                    max_steps=args.warmup + args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                    warmup_steps=0, weight_decay=0.0, lmbda=1.0, beta=1.0, temperature=1.0,
                    max_new_tokens=args.max_new_tokens, seq_kd=False, gradient_checkpointing=False,
                    logging_steps=10_000, save_strategy="no", report_to=[], seed=args.seed,
                    use_cpu=not args.device.startswith("cuda"), bf16=False, fp16=False,
                    dataloader_num_workers=0, disable_tqdm=True, max_length=4096)
    lora = LoraConfig(r=args.lora_rank, lora_alpha=2.0 * args.lora_rank, lora_dropout=0.0, bias="none",
                      target_modules=_lora_targets(model), task_type="CAUSAL_LM")
    times: list[float] = []
    n_tok: list[int] = []
    gen_s: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if state.global_step > args.warmup:
                times.append(time.perf_counter() - self.t0)

    trainer = GKDTrainer(model=model, teacher_model=teacher, args=cfg, train_dataset=ds,
                         processing_class=tok, peft_config=lora, callbacks=[Clock()])
    generate = trainer.generate_on_policy_outputs

    def counted(m, inputs, gen_cfg):  # count what the student generated (the work done)
        t0 = time.perf_counter()
        ids, attn, labels = generate(m, inputs, gen_cfg)
        gen_s.append(time.perf_counter() - t0)
        n_tok.append(int((labels != -100).sum()))
        return ids, attn, labels

    trainer.generate_on_policy_outputs = counted
    trainer.train()
    return {"side": "trl", "loss": "GKD lmbda=1 beta=1 (full-vocabulary reverse KL; teacher: a copy)",
            "step_s": statistics.median(times), "step_s_all": times,
            "generate_s": statistics.median(gen_s[args.warmup:] or gen_s),
            "gen_tokens_per_step": statistics.mean(n_tok[args.warmup:] or n_tok),
            "peak_mb": _peak_mb(args.device), "rss_base_mb": base, "trl_version": _trl_version()}


def _trl_version() -> str:
    import trl

    return trl.__version__


# ---------------------------------------------------------------------------------------------

def _worker_cmd(argv: list[str], side: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *argv, "--worker", side]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        res = (run_agentsd if args.worker == "agentsd" else run_trl)(args)
        print("RESULT " + json.dumps(res))
        return 0
    try:
        import trl  # noqa: F401
    except ImportError:
        print("error: TRL is not installed: pip install 'agentsd[bench]' (or pip install trl)", file=sys.stderr)
        return 2
    results = {}
    for side in SIDES:  # one after the other: they would share the cores
        proc = subprocess.run(_worker_cmd(argv, side), capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"error: the {side} worker failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[side] = json.loads(line[-1][len("RESULT "):])
    a, t = results["agentsd"], results["trl"]
    summary = {"model": args.model, "device": args.device, "batch": args.batch,
               "agentsd_sampler": args.agentsd_sampler,
               "max_new_tokens": args.max_new_tokens, "timed_steps": args.steps,
               "agentsd": a, "trl": t,
               "speedup_trl_over_agentsd": t["step_s"] / a["step_s"],
               "peak_memory_ratio_trl_over_agentsd": t["peak_mb"] / a["peak_mb"],
               "peak_above_base_ratio": (t["peak_mb"] - t["rss_base_mb"]) / max(a["peak_mb"] - a["rss_base_mb"], 1e-9)
               if not args.device.startswith("cuda") else None}
    unit = "MiB CUDA" if args.device.startswith("cuda") else "MiB RSS"
    print(f"model {args.model} on {args.device}; {args.batch} prompts x {args.max_new_tokens} new tokens "
          f"per step; median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'':9} {'s/step':>8} {'of which sampling':>18} {'gen tok/step':>13} {'peak ' + unit:>16} "
          f"{'base RSS':>9}  objective")
    for r in (a, t):
        print(f"{r['side']:9} {r['step_s']:8.3f} {r['generate_s']:18.3f} {r['gen_tokens_per_step']:13.1f} "
              f"{r['peak_mb']:16.0f} {r['rss_base_mb']:9.0f}  {r['loss']}")
    if a.get("sampler") == "llamacpp":
        print(f"agentsd sampled with llama.cpp: adapter write + server restart {a['sync_s']:.3f} s/step "
              f"(in its s/step); its peak adds the server's {a['server_peak_mb']:.0f} MiB to the "
              f"trainer's {a['trainer_peak_mb']:.0f}")
    print(f"TRL / agentsd: time per step {summary['speedup_trl_over_agentsd']:.2f}x, peak memory "
          f"{summary['peak_memory_ratio_trl_over_agentsd']:.2f}x"
          + (f" ({summary['peak_above_base_ratio']:.2f}x above each process's post-import base)"
             if summary["peak_above_base_ratio"] is not None else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
