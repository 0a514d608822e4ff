"""FSDP (``--model.fsdp``, :mod:`agentsd.distill.fsdp`): two ``gloo`` CPU processes sharding a
fully fine-tuned student end one OPD step (frozen teacher, uneven micro-batch counts per rank)
with the parameters a single process gets from the whole batch, to float32 round-off; rank 0
alone writes the checkpoint, which holds full tensors that a single process loads. Plain SGD
without clipping, as in ``test_distributed.py``, so any error in the gradient's scale shows."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from test_distributed import _batch, _nullcontext, _rendezvous

from agentsd.distill.config import LossConfig, ModelConfig, OptimConfig, RolloutSettings, TrainConfig

TOL = 1e-6


def _cfg() -> TrainConfig:
    return TrainConfig(algo="opd", progress=False, tensorboard=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora=False, fsdp=True),
                       rollout=RolloutSettings(tasks_per_step=4, samples_per_task=1, max_turns=2),
                       loss=LossConfig(chunk_size=64),
                       # rank 0's two short episodes fit one micro-batch, rank 1's long ones need
                       # two: FSDP's collectives must still pair up (an idle pass on rank 0)
                       optim=OptimConfig(lr=1.0, grad_clip=0.0, max_tokens_per_micro_batch=400))


def _uneven_batch(tok):
    trajs = _batch(tok)
    for t in trajs[2:]:  # the second half about twice as long
        t.turns[0].prompt_ids = t.turns[0].prompt_ids * 2
    return trajs


def _step(rank: int, world: int, out: str | None = None) -> dict[str, torch.Tensor]:
    """One full fine-tuning update on this rank's shard (sharded when ``world`` > 1); rank 0
    writes a checkpoint to ``out``. Returns the full parameters after the update."""
    from agentsd.distill import distributed, fsdp
    from agentsd.distill.checkpoint import save_checkpoint
    from agentsd.distill.teacher import Teacher, build_teacher_rows
    from agentsd.distill.trainer import build_student
    from agentsd.distill.update import build_batch, micro_batches, update

    torch.set_num_threads(1)
    cfg = _cfg()
    model, tok = build_student(cfg)
    fsdp.shard_model(model, cfg)
    assert fsdp.sharded(model) == (world > 1)
    teacher = Teacher(model, "frozen")  # full fine-tuning: a snapshot of the initial weights
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a student unlike its frozen teacher, the same on every rank
        for p in model.parameters():
            p.add_(fsdp.local_like(p, torch.randn(p.shape, generator=gen) * 0.05))
    trajs = distributed.shard(_uneven_batch(tok))
    n_mb = len(micro_batches([len(t.token_ids()) for t in trajs], cfg.optim.max_tokens_per_micro_batch))
    assert n_mb == ({0: 1, 1: 2}[rank] if world == 2 else 3)
    prefix = tok.encode("You are the teacher. Solve it.")
    data = build_batch(trajs, cfg, 1, lambda t, i: build_teacher_rows(t, prefix, i))
    opt = _sgd(model)
    m, _ = update(model, opt, teacher, data, cfg, tok.eos_token_id, lambda _m: _nullcontext())
    assert m["optim/updated"] == 1.0
    full = fsdp.checkpoint_tensors(model, opt)
    state = fsdp.full_tensors({"teacher": teacher.state_dict(), "world_size": world})
    if out is not None and rank == 0:
        save_checkpoint(out, 1, model, opt, state, full=full)
    weights = full[0] if full else {n: p.detach().clone() for n, p in model.named_parameters()}
    return weights | {"_loss": torch.tensor(m["loss/total"]), "_grad_norm": torch.tensor(m["optim/grad_norm"])}


def _sgd(model):
    # momentum: the first step equals plain SGD, and the checkpoint has optimizer state
    return torch.optim.SGD(list(model.parameters()), lr=_cfg().optim.lr, momentum=0.9)


def _resume(out: str) -> dict[str, torch.Tensor]:
    """A fresh sharded student and optimizer loaded from the checkpoint (every rank), gathered
    back: the weights and momentum buffers it holds."""
    from agentsd.distill import fsdp
    from agentsd.distill.checkpoint import load_checkpoint
    from agentsd.distill.trainer import build_student

    model, _ = build_student(_cfg())
    fsdp.shard_model(model, _cfg())
    opt = _sgd(model)
    load_checkpoint(f"{out}/checkpoints/step_000001", model, opt)
    weights, optim = fsdp.checkpoint_tensors(model, opt)
    return weights | {f"_mom{i}": s["momentum_buffer"] for i, s in optim["state"].items()}


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        params = _step(rank, world, out)
        if rank == 0:
            torch.save(params, f"{out}/params.pt")
        dist.barrier()
        assert sorted(os.listdir(f"{out}/checkpoints")) == ["latest", "step_000001"]  # rank 0's
        resumed = _resume(out)
        if rank == 0:
            torch.save(resumed, f"{out}/resumed.pt")
    finally:
        dist.destroy_process_group()


def test_fsdp_two_gloo_processes_match_one_process_and_checkpoint_loads_unsharded(tmp_path):
    import torch.multiprocessing as mp

    from agentsd.distill.checkpoint import load_checkpoint, load_trainable
    from agentsd.distill.teacher import Teacher
    from agentsd.distill.trainer import build_student

    single = _step(0, 1)
    assert single["_grad_norm"] > 1e-3
    mp.spawn(_worker, args=(2, _rendezvous(tmp_path), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "params.pt", weights_only=True)
    assert set(got) == set(single)
    for name, want in single.items():
        if name.startswith("_"):  # loss and gradient norm: sums in another order
            assert float(got[name]) == pytest.approx(float(want), rel=1e-5), name
        else:
            assert torch.allclose(got[name], want, atol=TOL, rtol=0), (name, (got[name] - want).abs().max())
    # one checkpoint, written by rank 0, of full tensors: a single unsharded process loads it
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001"]
    ckpt = tmp_path / "checkpoints" / "step_000001"
    cfg = dataclasses.replace(_cfg(), model=dataclasses.replace(_cfg().model, fsdp=False))
    model, _ = build_student(cfg)
    opt = _sgd(model)
    state = load_checkpoint(ckpt, model, opt)
    assert state["world_size"] == 2
    saved = load_trainable(ckpt)
    assert set(saved) == {n for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), saved[n]) and torch.equal(saved[n], got[n]), n
    # ... and so do two sharded processes (resume): the same weights and momentum, gathered back
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    moms = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert len(moms) == len([k for k in resumed if k.startswith("_mom")]) > 0
    for i, m in enumerate(moms):
        assert torch.equal(resumed[f"_mom{i}"], m)
    assert all(torch.equal(resumed[n], saved[n]) for n in saved)
    teacher = Teacher(model, "frozen")
    teacher.load_state_dict(state["teacher"])
    init, _ = build_student(cfg)  # the frozen teacher's snapshot: the initial (seeded) weights
    for n, p in init.named_parameters():
        assert torch.equal(teacher.snapshot[n], p.detach()), n


def test_fsdp_refused_with_lora_in_one_line():
    with pytest.raises(ValueError, match=r"ModelConfig\.fsdp .*LoRA adapter is small.*--model\.lora false"):
        ModelConfig(fsdp=True)
    assert ModelConfig(fsdp=True, lora=False).fsdp  # full fine-tuning: allowed


def test_fsdp_flag_parses_and_is_a_noop_in_one_process():
    from agentsd.distill import fsdp
    from agentsd.distill.cli import parse_train_args
    from agentsd.distill.trainer import build_student

    cfg, _ = parse_train_args(["--model.lora", "false", "--model.fsdp", "true", "--model.name", "tiny-random",
                               "--model.tiny-hidden", "16"])
    assert cfg.model.fsdp and not cfg.model.lora
    model, _ = build_student(cfg)
    assert fsdp.shard_model(model, cfg) is model and not fsdp.sharded(model)
    with pytest.raises(ValueError, match=r"--model\.lora false .*\(flag --model\.fsdp\)"):
        parse_train_args(["--model.fsdp", "true"])  # lora defaults to true


def test_torchrun_fsdp_opd_run_samples_evaluates_and_writes_one_run_folder(tmp_path):
    """``torchrun --nproc_per_node 2 ... --model.lora false --model.fsdp true`` on the CPU: the
    sharded student samples rollouts, the frozen teacher scores and acts (held-out evaluation at
    start), rank 0 alone reports, and its checkpoints hold the full, unsharded tensors."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.models import tiny_random_model
    from agentsd.policy.models import load_tokenizer

    flags = ["--algo", "opd", "--steps", "2", "--model.name", "tiny-random", "--model.tiny-hidden", "16",
             "--model.lora", "false", "--model.fsdp", "true", "--rollout.tasks-per-step", "2",
             "--rollout.samples-per-task", "1", "--rollout.max-turns", "2", "--rollout.max-tokens", "8",
             "--rollout.eval-tasks", "2", "--rollout.eval-sampled", "false", "--eval-at-start", "true",
             "--eval-at-end", "false", "--eval-every", "0", "--checkpoint-every", "1", "--progress", "false",
             "--tensorboard", "false", "--optim.lr", "0.01", "--threads", "1", "--out-dir", str(tmp_path)]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "agentsd.distill.cli", *flags], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 1  # rank 0 alone reports
    rows = read_metrics(tmp_path)
    assert [row["step"] for row in rows] == [0, 1, 2] and "teacher/eval_success" in rows[0]
    assert all(row["optim/grad_norm"] > 0 for row in rows[1:])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001", "step_000002"]
    saved = load_file(str(tmp_path / "checkpoints" / "step_000002" / "trainable.safetensors"))
    model = tiny_random_model(vocab_size=len(load_tokenizer("smollm2")), hidden_size=16)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert {n: t.shape for n, t in saved.items()} == shapes  # full tensors, not one rank's shard
