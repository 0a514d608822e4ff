"""``--model.device``: a CUDA request without a GPU fails at config time in one line; on a GPU
(``gpu`` marker) one OPD, GRPO and SFT step run with every tensor of teacher scoring, losses and
metrics on the model's device."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from agentsd.distill.config import ModelConfig, RolloutSettings, TrainConfig, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_device_values():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"ModelConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        ModelConfig(device="gpu0")
    with pytest.raises(ValueError, match=r"ModelConfig.device 'cuda:99'"):
        ModelConfig(device="cuda:99")


@no_cuda
def test_cuda_without_gpu_is_a_one_line_config_error():
    with pytest.raises(ValueError, match=r"no CUDA devices .* use --model.device cpu"):
        ModelConfig(device="cuda")
    r = subprocess.run([sys.executable, "-m", "agentsd", "train", "--model.name", "tiny-random",
                        "--model.device", "cuda", "--steps", "1"], capture_output=True, text=True,
                       timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "ModelConfig.device 'cuda'" in lines[0] and "--model.device cpu" in lines[0]


def test_score_rows_output_lives_on_the_model_device():
    from agentsd.distill.models import tiny_random_model
    from agentsd.distill.teacher import TeacherRow, pad_rows, score_rows

    dev = resolve_device("auto")
    model = tiny_random_model(vocab_size=32, hidden_size=16).to(dev)
    rows = [TeacherRow(0, [1, 2, 3, 4], [2, 3], [1, 2]), TeacherRow(1, [5, 6, 7], [2], [1])]
    out = score_rows(model, rows, [3, 2], want_logits=True)
    lg = out.pop("teacher_logits_rows")
    assert {t.device.type for t in out.values()} == {torch.device(dev).type}
    assert {t.device.type for t in (lg.values_NV, lg.index_BT)} == {torch.device(dev).type}
    assert out["teacher_logp_BT"].shape == (2, 3) and lg.values_NV.shape == (3, 32)
    assert lg.index_BT.tolist() == [[-1, 0, 1], [-1, 2, -1]]
    ids, attn = pad_rows([[1, 2], [3]], device=dev)
    assert ids.device.type == torch.device(dev).type and attn.tolist() == [[1, 1], [1, 0]]


@pytest.mark.parametrize("algo", ["opd", "grpo", "sft"])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=gpu)])
def test_one_step_on_the_gpu(tmp_path, algo, device):
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import build_student, train

    cfg = TrainConfig(algo=algo, steps=1, out_dir=str(tmp_path / algo), eval_every=0,
                      eval_at_start=False, eval_at_end=False, progress=False, tensorboard=False,
                      samples_to_keep=0,
                      model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4, device=device),
                      rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=1,
                                              max_tokens=6, eval_tasks=1))
    model, tok = build_student(cfg)
    assert next(model.parameters()).device.type == "cuda"
    train(cfg, model=model, tokenizer=tok)
    [row] = read_metrics(cfg.out_dir)
    assert row["loss/total"] == row["loss/total"] and row["optim/grad_norm"] >= 0  # finite, ran
    assert all(p.device.type == "cuda" for p in model.parameters())
