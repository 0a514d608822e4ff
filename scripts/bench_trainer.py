"""Trainer benchmark: the distillation step against its compute floor, and the memory of a
``frozen`` teacher (LoRA adapter disabled, one copy of the weights) against student-only
training and against a separate teacher copy.

- **Step time.** One distillation update on a batch of ``B`` sequences of ``T`` tokens (half
  prompt, half action), exactly as the trainer runs it: teacher scoring through
  :func:`score_rows` (no grad, adapter off, output head on the scored positions), student
  :func:`forward_logprobs` (output head on the action positions, frozen-head gradient saved in
  the forward), sampled-token reverse KL, backward, AdamW step. Two floors, timed in the same
  process on the same tokens:

  - ``floor``: one plain student forward (full logits) + backward of a trivial loss + one
    plain no-grad teacher forward (the issue's definition);
  - ``floor_action_head``: the same with the output head applied on the action positions only
    (the work the step itself does), so ``step_over_action_head_floor`` is our bookkeeping
    alone, with the head rows we skip not counted in our favour.
- **Peak memory.** Each variant runs in a fresh subprocess (peak RSS on CPU, peak CUDA
  allocation on GPU) doing one update on the same batch: ``student`` (student-only training:
  SFT loss, no teacher), ``frozen`` (OPD, adapter off) and ``copy`` (OPD with a deep copy of
  the model as the teacher).

- **Shared prefixes** (``--optim.share-prefix``). By default the batch's prompt half is one
  shared prefix (a system prompt, as in real steps): the step runs with and without
  sharing in the same process, and both are reported against the floor over the *unshared*
  tokens (``step_over_floor`` with sharing, ``unshared_step_over_floor`` without).
  ``--episodes`` times the trainer's own OPD :func:`~agentsd.distill.update.update` on real
  episodes instead (8 ToolWorld-Easy-v0 oracle episodes, 8 ten-turn Sokoban-Step-v0 episodes
  of a detouring student, 8 ToolWorld-Lite-v0 oracle episodes; SmolLM2's tokenizer and chat
  template, the teacher's rows from the trainer's teacher context), shared against unshared,
  as ratios of update time and of peak RSS (each variant in a fresh process).

    python scripts/bench_trainer.py                                  # tiny-ish random Llama, CPU
    python scripts/bench_trainer.py --episodes --model-like smollm2 --layers 4
    python scripts/bench_trainer.py --model-like smollm2 --batch 4 --seq 512
    python scripts/bench_trainer.py --model-like smollm2 --device cuda --batch 8 --seq 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-like", default="",
                   help="random weights with this model's config (e.g. smollm2); default: a "
                        "random Llama with --hidden/--layers/--vocab")
    p.add_argument("--hidden", type=int, default=256, help="hidden size of the default model")
    p.add_argument("--layers", type=int, default=4,
                   help="layers of the default model; with --model-like, 0 keeps the real depth")
    p.add_argument("--vocab", type=int, default=49152, help="vocabulary of the default model")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed rounds (after one warm-up round); medians are reported")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--chunk", type=int, default=256, help="output-head chunk size")
    p.add_argument("--memory-only", action="store_true", help="skip the step-time comparison")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="decoder layers recompute in the backward pass (--model.gradient-checkpointing)")
    p.add_argument("--shared-prompt", type=float, default=1.0,
                   help="fraction of the prompt half that is the same for every sequence (0: "
                        "random ids everywhere, nothing to share)")
    p.add_argument("--episodes", action="store_true",
                   help="time the trainer's OPD update on real episodes, shared vs unshared")
    p.add_argument("--envs", default="ToolWorld-Easy-v0,Sokoban-Step-v0,ToolWorld-Lite-v0",
                   help="--episodes: the envs (8 episodes each)")
    p.add_argument("--share-min-tokens", type=int, default=1024,
                   help="--episodes: --optim.share-prefix-min-tokens (a forward shares only when "
                        "it saves this many tokens)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    import torch

    from agentsd.distill.models import random_model_like, tiny_random_model, with_lora

    torch.manual_seed(0)
    if args.model_like:
        model = random_model_like(args.model_like, layers=args.layers or None)
    else:
        model = tiny_random_model(vocab_size=args.vocab, hidden_size=args.hidden, layers=args.layers,
                                  heads=max(1, args.hidden // 64), init_std=0.02)
    model = with_lora(model.to(args.device), rank=16, alpha=32.0).train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (args.batch, args.seq), generator=g)
    common = int(args.seq // 2 * args.shared_prompt)
    ids[:, :common] = ids[0, :common]  # one system prompt for the batch
    ids = ids.to(args.device)
    attn = torch.ones_like(ids)
    mask = torch.zeros(args.batch, args.seq, device=args.device)
    mask[:, args.seq // 2:] = 1
    return model, ids, attn, mask


def opd_step(model, teacher, opt, ids, attn, mask, chunk, share=False):
    """One distillation update through the library's own functions (``share``: shared-prefix
    forwards for the student and the teacher)."""

    from agentsd.distill import losses as L
    from agentsd.distill.prefix import Sharing
    from agentsd.distill.teacher import TeacherRow, forward_logprobs, score_rows

    B, T = ids.shape
    rows = [TeacherRow(b, ids[b].tolist(), list(range(T // 2, T)), list(range(T // 2, T)))
            for b in range(B)]
    with teacher.scoring() as tm:
        t_lp = score_rows(tm, rows, [T] * B, max_tokens=B * T, chunk_size=chunk,
                          share=Sharing(max_tokens=B * T) if share else None)["teacher_logp_BT"]
    t_lp = t_lp.to(ids.device)
    out = forward_logprobs(model, ids, attn, chunk_size=chunk, want_entropy=True, positions_BT=mask,
                           share=Sharing(max_tokens=B * T) if share else None)
    lp = out["logp_BT"]
    loss = L.masked_mean(L.sampled_token_reverse_kl(lp, t_lp, lp.detach(), mask).loss_BT, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def student_step(model, opt, ids, attn, mask, chunk):
    """Student-only training on the same tokens (SFT loss, no teacher): the memory baseline."""
    from agentsd.distill import losses as L
    from agentsd.distill.teacher import forward_logprobs

    lp = forward_logprobs(model, ids, attn, chunk_size=chunk, positions_BT=mask)["logp_BT"]
    loss = L.masked_mean(L.sft_loss(lp, mask).loss_BT, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def floor_step(model, ids, attn):
    """Student forward + backward (plain logits, trivial loss) + teacher forward, nothing else."""
    import torch

    logits = model(input_ids=ids, attention_mask=attn).logits
    logits.float().mean().backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), model.disable_adapter():
        model(input_ids=ids, attention_mask=attn)


def floor_masked_step(model, ids, attn, mask):
    """The stricter floor: the same, but the output head only on the action positions (what
    the OPD step computes), so the ratio shows bookkeeping alone, not the head work it skips."""
    import torch

    from agentsd.distill.teacher import _unwrap

    sel = mask[:, 1:].reshape(-1).nonzero().squeeze(-1)
    head = model.get_output_embeddings()

    def head_rows(hidden):
        D = hidden.shape[-1]
        return head(hidden[:, :-1].reshape(-1, D).index_select(0, sel))

    hidden = _unwrap(model).get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
    head_rows(hidden).float().mean().backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), model.disable_adapter():
        head_rows(_unwrap(model).get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each function, timed in alternating rounds (one warm-up round), so a
    load change on a shared machine hits every variant alike."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if r:
                ts[k].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}


def worker_memory(args: argparse.Namespace) -> dict:
    """Runs in a subprocess: one update with the given teacher variant; reports peak memory."""
    import resource

    import torch

    from agentsd.distill.teacher import Teacher

    model, ids, attn, mask = build(args)
    # peak RSS from here on: loading (e.g. a GGUF config) must not mask the difference
    reset = _reset_peak_rss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if args.worker == "student":
        student_step(model, opt, ids, attn, mask, args.chunk)
    else:
        teacher = Teacher(model, "frozen", copy_model=args.worker == "copy")
        opd_step(model, teacher, opt, ids, attn, mask, args.chunk)
    _sync(args.device)
    peak = _peak_rss_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"variant": args.worker, "peak_rss_mib": peak / 1024, "peak_reset": reset}
    if args.device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# the trainer's update on real episodes

def _detour(k: int) -> str:
    """A failing student's turn k: a short thought and a move that makes no progress."""
    return f"Turn {k}: I check the board and try a move. <answer>{('Left', 'Right')[k % 2]}</answer>"


def episodes(env_id: str, tok, n: int = 8) -> list:
    """``n`` real episodes of ``env_id`` as token-level trajectories: the env's oracle (for
    ToolWorld), or a ten-turn detouring student (Sokoban-Step); the privileged views the
    teacher reads are recorded per turn, as in training."""
    import itertools

    import agentsd
    from agentsd.demos import _end_of_turn_ids, _play, oracle_demos

    seeds = agentsd.split_seeds(env_id, "train", n)
    if not env_id.startswith("Sokoban"):
        trajs = oracle_demos(env_id, seeds, tok)
    else:
        end, trajs = _end_of_turn_ids(tok), []
        for seed in seeds:
            env = agentsd.make(env_id, max_turns=10)
            k = itertools.count()

            def actor(k=k):
                text = _detour(next(k))
                return text, [int(t) for t in tok.encode(text, add_special_tokens=False)] + end

            trajs.append(_play(env, env, env_id, int(seed), {"max_turns": 10}, tok, end, None, 10,
                               actor, source="bench"))
            env.close()
    for t in trajs:  # as if sampled near-uniformly: importance weights not ~0
        for turn in t.turns:
            turn.action_logprobs = [-10.8] * len(turn.action_ids)
    return trajs


def _episode_setup(args: argparse.Namespace, env_id: str, share: bool):
    import torch

    from agentsd.distill.config import LossConfig, OptimConfig, RolloutSettings, TrainConfig
    from agentsd.distill.teacher import Teacher
    from agentsd.distill.update import build_batch
    from agentsd.policy.models import load_tokenizer
    from agentsd.teacher_context import TeacherContexts

    tok = load_tokenizer("smollm2")
    model, *_ = build(argparse.Namespace(**{**vars(args), "vocab": len(tok)}))
    trajs = episodes(env_id, tok)
    cfg = TrainConfig(algo="opd", progress=False, tensorboard=False,
                      rollout=RolloutSettings(env=env_id, tasks_per_step=len(trajs), samples_per_task=1),
                      loss=LossConfig(chunk_size=args.chunk),
                      optim=OptimConfig(share_prefix=share, memory_budget_gb=-1.0,
                                        share_prefix_min_tokens=args.share_min_tokens))
    ctx = TeacherContexts(cfg, tok)
    data = build_batch(trajs, cfg, 1, ctx.rows)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, Teacher(model, "frozen"), opt, data, cfg, tok


def _episode_update(model, teacher, opt, data, cfg, tok) -> dict:
    import contextlib

    from agentsd.distill.update import update

    m, _ = update(model, opt, teacher, data, cfg, tok.eos_token_id, lambda _m: contextlib.nullcontext())
    return m


def episode_bench(args: argparse.Namespace, argv: list[str]) -> dict:
    """Per env: the update's median time with and without sharing (interleaved, same process),
    then each variant's peak RSS in a fresh process."""
    import dataclasses
    import functools

    out = {}
    for env_id in args.envs.split(","):
        setup = _episode_setup(args, env_id, True)
        model, teacher, opt, data, cfg, tok = setup
        off = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, share_prefix=False))
        stats: dict[str, dict] = {}

        def run(c, key, setup=setup, stats=stats):
            m, t, o, d, _, k = setup
            stats[key] = _episode_update(m, t, o, d, c, k)

        t = time_interleaved({"shared": functools.partial(run, cfg, "shared"),
                              "unshared": functools.partial(run, off, "unshared")}, args.repeats, args.device)
        lengths = [len(x.token_ids()) for x in data.trajs]
        mem = {v: _subprocess(argv, f"episodes:{env_id}:{v}") for v in ("shared", "unshared")}
        key = "peak_cuda_mib" if args.device.startswith("cuda") else "peak_rss_mib"
        out[env_id] = {
            "episodes": len(lengths), "turns_mean": round(sum(len(x.turns) for x in data.trajs) / len(lengths), 1),
            "tokens_mean": round(sum(lengths) / len(lengths)),
            "shared_token_frac": round(stats["shared"].get("prefix/shared_tokens", 0.0)
                                       / stats["shared"].get("prefix/total_tokens", 1.0), 3),
            "update_s_shared": round(t["shared"], 3), "update_s_unshared": round(t["unshared"], 3),
            "speedup": round(t["unshared"] / t["shared"], 2),
            "peak_mib_shared": round(mem["shared"][key], 1), "peak_mib_unshared": round(mem["unshared"][key], 1),
            "peak_unshared_over_shared": round(mem["unshared"][key] / mem["shared"][key], 2)}
        print(json.dumps({env_id: out[env_id]}), file=sys.stderr, flush=True)  # as it goes
        del setup, model, teacher, opt, data
    return out


def _subprocess(argv: list[str], worker: str) -> dict:
    # glibc keeps freed heap and raises its mmap threshold as blocks are freed, so a process's
    # peak RSS would count transients already released; a fixed threshold hands every large
    # block back on free, and peak RSS tracks live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", worker],
                       capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def worker_episode_memory(args: argparse.Namespace) -> dict:
    """Runs in a subprocess: one OPD update on an env's episodes; reports peak memory."""
    import resource

    import torch

    _, env_id, variant = args.worker.split(":")
    model, teacher, opt, data, cfg, tok = _episode_setup(args, env_id, variant == "shared")
    reset = _reset_peak_rss()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _episode_update(model, teacher, opt, data, cfg, tok)
    _sync(args.device)
    peak = _peak_rss_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"variant": args.worker, "peak_rss_mib": peak / 1024, "peak_reset": reset}
    if args.device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker.startswith("episodes:"):
        print(json.dumps(worker_episode_memory(args)))
        return 0
    if args.worker:
        print(json.dumps(worker_memory(args)))
        return 0
    if args.episodes:
        import torch

        passthrough = list(argv if argv is not None else sys.argv[1:])
        res = {"device": args.device, "threads": torch.get_num_threads(),
               "load_1min": round(os.getloadavg()[0], 2), "repeats": args.repeats,
               "envs": episode_bench(args, passthrough)}
        print(json.dumps(res, indent=1))
        return 0
    import torch

    from agentsd.distill.teacher import Teacher

    res = {"device": args.device if not args.device.startswith("cuda")
           else torch.cuda.get_device_name(), "batch": args.batch, "seq": args.seq,
           "threads": torch.get_num_threads()}
    if not args.memory_only:
        model, ids, attn, mask = build(args)
        res["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        teacher = Teacher(model, "frozen")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        t = time_interleaved({
            "step": lambda: opd_step(model, teacher, opt, ids, attn, mask, args.chunk, share=True),
            "unshared": lambda: opd_step(model, teacher, opt, ids, attn, mask, args.chunk),
            "floor": lambda: floor_step(model, ids, attn),
            "masked": lambda: floor_masked_step(model, ids, attn, mask)}, args.repeats, args.device)
        t_step, t_floor, t_masked = t["step"], t["floor"], t["masked"]
        # the floors run over the unshared tokens: sharing is allowed to beat them
        res.update({"opd_step_s": round(t_step, 4), "floor_s": round(t_floor, 4),
                    "shared_prompt_tokens": int(args.seq // 2 * args.shared_prompt),
                    "step_over_floor": round(t_step / t_floor, 3),
                    "unshared_step_s": round(t["unshared"], 4),
                    "unshared_step_over_floor": round(t["unshared"] / t_floor, 3),
                    "unshared_over_shared": round(t["unshared"] / t_step, 3),
                    "floor_action_head_s": round(t_masked, 4),
                    "step_over_action_head_floor": round(t_step / t_masked, 3),
                    "opd_tokens_per_s": round(args.batch * args.seq / t_step, 1)})
        del model, teacher, opt
    mem = {}
    here = os.path.abspath(__file__)
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--memory-only"]
    for variant in ("student", "frozen", "copy"):
        # glibc keeps freed heap and raises its mmap threshold as blocks are freed, so a
        # process's peak RSS would count transients already released (a teacher phase's
        # logits chunks next to the student's); a fixed threshold hands every large block
        # back on free, and peak RSS tracks live memory
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_",
                                                                       "65536")}
        r = subprocess.run([sys.executable, here, *passthrough, "--worker", variant],
                           capture_output=True, text=True, check=True, env=env)
        mem[variant] = json.loads(r.stdout.strip().splitlines()[-1])
    key = "peak_cuda_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    res["peak_mib_frozen"] = round(mem["frozen"][key], 1)
    res["peak_mib_copy"] = round(mem["copy"][key], 1)
    res["peak_mib_student_only"] = round(mem["student"][key], 1)
    res["copy_over_frozen"] = round(mem["copy"][key] / mem["frozen"][key], 3)
    res["frozen_over_student_only"] = round(mem["frozen"][key] / mem["student"][key], 3)
    res["memory_measure"] = key
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
