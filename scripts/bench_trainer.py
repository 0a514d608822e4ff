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

    python scripts/bench_trainer.py                                  # tiny-ish random Llama, CPU
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
    ids = torch.randint(0, V, (args.batch, args.seq), generator=g).to(args.device)
    attn = torch.ones_like(ids)
    mask = torch.zeros(args.batch, args.seq, device=args.device)
    mask[:, args.seq // 2:] = 1
    return model, ids, attn, mask


def opd_step(model, teacher, opt, ids, attn, mask, chunk):
    """One distillation update through the library's own functions."""

    from agentsd.distill import losses as L
    from agentsd.distill.teacher import TeacherRow, forward_logprobs, score_rows

    B, T = ids.shape
    rows = [TeacherRow(b, ids[b].tolist(), list(range(T // 2, T)), list(range(T // 2, T)))
            for b in range(B)]
    with teacher.scoring() as tm:
        t_lp = score_rows(tm, rows, [T] * B, max_tokens=B * T, chunk_size=chunk)["teacher_logp_BT"]
    t_lp = t_lp.to(ids.device)
    out = forward_logprobs(model, ids, attn, chunk_size=chunk, want_entropy=True, positions_BT=mask)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker_memory(args)))
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
            "step": lambda: opd_step(model, teacher, opt, ids, attn, mask, args.chunk),
            "floor": lambda: floor_step(model, ids, attn),
            "masked": lambda: floor_masked_step(model, ids, attn, mask)}, args.repeats, args.device)
        t_step, t_floor, t_masked = t["step"], t["floor"], t["masked"]
        res.update({"opd_step_s": round(t_step, 4), "floor_s": round(t_floor, 4),
                    "step_over_floor": round(t_step / t_floor, 3),
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
