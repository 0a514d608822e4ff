"""Shared-prefix forwards under data parallelism and FSDP: two ``gloo`` CPU processes updating
with ``--optim.share-prefix`` end with the parameters one process gets from the whole batch on
the unshared path (ToolWorld-Easy episodes, SmolLM2's tokenizer, a tiny random model). Under
FSDP the student's forward falls back to the unshared path (its collectives must pair up
across ranks) and the teacher still shares; the ``prefix/*`` metrics say so."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from test_distributed import _rendezvous

from agentsd.distill.config import LossConfig, ModelConfig, OptimConfig, RolloutSettings, TrainConfig

TOL = 1e-5


def _cfg(share: bool, fsdp: bool) -> TrainConfig:
    return TrainConfig(algo="opd", progress=False, tensorboard=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4,
                                         lora=not fsdp, fsdp=fsdp),
                       rollout=RolloutSettings(env="ToolWorld-Easy-v0", tasks_per_step=4,
                                               samples_per_task=1),
                       loss=LossConfig(chunk_size=64),
                       optim=OptimConfig(lr=1.0, grad_clip=0.0, share_prefix=share,
                                         share_prefix_min_tokens=0, memory_budget_gb=-1.0))


def _step(rank: int, world: int, share: bool, fsdp: bool) -> dict[str, torch.Tensor]:
    import agentsd
    from agentsd.demos import oracle_demos
    from agentsd.distill import distributed
    from agentsd.distill import fsdp as F
    from agentsd.distill.teacher import Teacher, build_teacher_rows
    from agentsd.distill.trainer import build_student
    from agentsd.distill.update import build_batch, update

    torch.set_num_threads(1)
    cfg = _cfg(share, fsdp)
    model, tok = build_student(cfg)
    if fsdp:
        F.shard_model(model, cfg)
    teacher = Teacher(model, "frozen")
    with torch.no_grad():  # a student unlike its frozen teacher, the same on every rank
        gen = torch.Generator().manual_seed(1)
        for n, p in model.named_parameters():
            if fsdp or "lora_B" in n:
                p.add_(F.local_like(p, torch.randn(p.shape, generator=gen) * (0.05 if fsdp else 0.5)))
    trajs = oracle_demos("ToolWorld-Easy-v0", agentsd.split_seeds("ToolWorld-Easy-v0", "train", 4), tok)
    for t in trajs:
        for turn in t.turns:
            turn.action_logprobs = [-10.8] * len(turn.action_ids)
    trajs = distributed.shard(trajs)
    head = tok.encode("You are the teacher.")
    data = build_batch(trajs, cfg, 1, lambda t, i: build_teacher_rows(t, head + t.turns[0].prompt_ids, i))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    m, _ = update(model, opt, teacher, data, cfg, tok.eos_token_id, lambda _m: contextlib.nullcontext())
    full = F.checkpoint_tensors(model, opt)
    weights = full[0] if full else {n: p.detach().clone() for n, p in model.named_parameters()
                                    if p.requires_grad}
    extra = {f"_m/{k}": torch.tensor(v) for k, v in m.items() if k.startswith("prefix/")}
    return weights | extra | {"_loss": torch.tensor(m["loss/total"])}


def _worker(rank: int, world: int, init: str, fsdp: bool, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(_step(rank, world, True, fsdp), f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_sharing_processes_match_one_unshared_process(tmp_path, fsdp):
    import torch.multiprocessing as mp

    single = _step(0, 1, False, fsdp)
    mp.spawn(_worker, args=(2, _rendezvous(tmp_path), fsdp, str(tmp_path / "p")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"p.rank{r}", weights_only=True) for r in range(2)]
    for name, want in single.items():
        for got in ranks[:1] if fsdp else ranks:  # FSDP: rank 0 holds the gathered tensors
            assert torch.allclose(got[name], want, atol=TOL, rtol=0), name
    m = ranks[0]
    shared, total = float(m["_m/prefix/shared_tokens"]), float(m["_m/prefix/total_tokens"])
    # DDP: each rank's student rows and teacher rows share their system prompt; FSDP: the
    # teacher's only (the student falls back), so a smaller share
    assert 0 < shared < total
    assert (shared > 0.3 * total) != fsdp
