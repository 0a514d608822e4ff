"""The ``llamacpp`` rollout sampler: the student written as GGUF, real ``llama-server`` processes.

Always run: the GGUF writers against the embedded SmolLM2 file (a written student read back by
transformers gives the student's logits; a LoRA adapter file has llama.cpp's names, layout and
alpha), the llama.cpp dialect of the OpenAI client against a loopback server, and the one-line
errors. Run where a ``llama-server`` binary exists (``AGENTSD_LLAMA_SERVER`` or ``PATH``; build
one with ``bash scripts/build_llama_server.sh``), skipped otherwise: the server's log-probs
against the trainer's own model (base file, LoRA adapter file, whole written student), and a
short OPD run whose rollouts all come from llama.cpp.
"""

from __future__ import annotations

import copy
import math
import threading
import time

import pytest
import torch

from agentsd.distill.config import ModelConfig, RolloutSettings, TrainConfig
from agentsd.distill.models import with_lora
from agentsd.distill.samplers import SamplerError, preflight, probe_logprobs
from agentsd.policy.base import SamplingParams
from agentsd.policy.llamacpp import (
    LlamaCppError,
    LlamaServer,
    _permute_rows,
    find_server_binary,
    lora_weights,
    write_gguf,
    write_lora_gguf,
)
from agentsd.policy.openai import OpenAIPolicy
from agentsd.policy.vllm import merged_hf_weights

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "Sokoban: push every box onto a goal. Your move:"


@pytest.fixture(scope="module")
def smol():
    from agentsd.policy.models import load_model, smollm2_gguf_path

    try:
        model, tok = load_model("smollm2", device="cpu")
    except Exception as e:  # noqa: BLE001 - the wheel is a test dependency; say how to get it
        pytest.skip(f"the embedded SmolLM2 is not installed ({e})")
    return model, tok, smollm2_gguf_path()


def _lora(model, seed=0, std=0.02):
    torch.manual_seed(seed)
    m = with_lora(copy.deepcopy(model), rank=4, alpha=8.0)
    with torch.no_grad():  # a non-zero B, so the adapter changes the model
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, std)
    return m.eval()


def _logits(model, tok):
    with torch.no_grad():
        return model(input_ids=torch.tensor([tok.encode(PROMPT)])).logits[0]


# ---- GGUF writers ---------------------------------------------------------------------------

def test_written_student_reads_back_as_the_student(smol, tmp_path):
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM

    model, tok, base = smol
    student = _lora(model)
    out = write_gguf(merged_hf_weights(student), base, tmp_path / "student.gguf", dtype="f16")
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    want, got = _logits(student, tok), _logits(back, tok)
    assert (got - want).abs().max().item() < 0.05  # f16 rounding of the adapted weights
    # the adapter matters, so the match is not the base model's
    assert (_logits(model, tok) - want).abs().max().item() > 0.5
    assert not list(tmp_path.glob(".student.gguf.*"))  # no temporary left behind
    src = {t.name: t for t in gguf.GGUFReader(str(base)).tensors}
    r = gguf.GGUFReader(str(out))
    written = {t.name: t for t in r.tensors}
    assert written.keys() == src.keys()
    assert written["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    # the embedding and the norms were not adapted: same type, same bytes
    for name in ("token_embd.weight", "blk.0.attn_norm.weight", "output_norm.weight"):
        assert written[name].tensor_type == src[name].tensor_type
        assert np.array_equal(np.asarray(written[name].data), np.asarray(src[name].data))
    assert r.fields["tokenizer.chat_template"].contents() == tok.chat_template


def test_lora_file_has_llama_cpp_names_layout_and_alpha(smol, tmp_path):
    import gguf
    import numpy as np

    model, tok, base = smol
    student = _lora(model)
    out = write_lora_gguf(student, base, tmp_path / "lora.gguf")
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    assert len(t) == 2 * 7 * 30  # 7 projections per layer, 30 layers, A and B each
    pairs, alpha = lora_weights(student)
    [(_, a, b)] = [p for p in pairs if p[0] == "model.layers.3.self_attn.q_proj.weight"]
    assert np.allclose(t["blk.3.attn_q.weight.lora_a"], a.numpy())
    # B of the query projection is stored with llama.cpp's rotary row order; v is not permuted
    assert np.allclose(t["blk.3.attn_q.weight.lora_b"], _permute_rows(b.numpy(), 9))
    assert not np.allclose(t["blk.3.attn_q.weight.lora_b"], b.numpy())
    [(_, _, bv)] = [p for p in pairs if p[0] == "model.layers.3.self_attn.v_proj.weight"]
    assert np.allclose(t["blk.3.attn_v.weight.lora_b"], bv.numpy())


def test_a_student_of_another_shape_is_refused_naming_the_base(smol, tmp_path, tok):
    from agentsd.distill.models import tiny_random_model

    _, _, base = smol
    tiny = tiny_random_model(vocab_size=len(tok), hidden_size=16, layers=2, seed=0)
    with pytest.raises(LlamaCppError, match="not the student's base model"):
        write_gguf(merged_hf_weights(tiny), base, tmp_path / "x.gguf")
    with pytest.raises(LlamaCppError, match="dtype"):
        write_gguf([], base, tmp_path / "x.gguf", dtype="q4")
    assert not list(tmp_path.iterdir())


def test_an_architecture_the_writer_was_not_checked_on_is_refused(tmp_path):
    import gguf

    path = tmp_path / "qwen.gguf"  # a real GGUF header of another architecture, no tensors
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(LlamaCppError, match="'qwen2' is not supported.*--rollout.sampler hf") as e:
        write_gguf([], path, tmp_path / "out.gguf")
    assert "\n" not in str(e.value) and not (tmp_path / "out.gguf").exists()


# ---- errors before any work ----------------------------------------------------------------

def test_missing_binary_and_missing_gguf_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTSD_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(LlamaCppError, match="build_llama_server.sh"):
        find_server_binary()
    cfg = TrainConfig(algo="opd", steps=1, out_dir=str(tmp_path / "run"),
                      model=ModelConfig(name="tiny-random"), rollout=RolloutSettings(sampler="llamacpp"))
    with pytest.raises(SamplerError, match="build_llama_server.sh") as e:
        preflight(cfg)
    assert "\n" not in str(e.value)
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("AGENTSD_LLAMA_SERVER", str(fake))
    with pytest.raises(SamplerError, match="convert_hf_to_gguf.py"):
        preflight(cfg)  # tiny-random has no GGUF file


def test_config_checks_llamacpp_fields():
    with pytest.raises(ValueError, match="llamacpp_dtype"):
        RolloutSettings(sampler="llamacpp", llamacpp_dtype="q4_0")
    with pytest.raises(ValueError, match="llamacpp_servers"):
        RolloutSettings(sampler="llamacpp", llamacpp_servers=0)
    with pytest.raises(ValueError, match="llamacpp_parallel"):
        RolloutSettings(sampler="llamacpp", llamacpp_parallel=0)
    with pytest.raises(ValueError, match="llamacpp_ctx"):
        RolloutSettings(sampler="llamacpp", llamacpp_ctx=-1)


def test_server_kv_cache_is_sized_to_the_episode_budget(tmp_path, monkeypatch, tok):
    from agentsd.distill.samplers import LlamaCppSampler

    fake = tmp_path / "llama-server"  # never started: only the command line is read
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("AGENTSD_LLAMA_SERVER", str(fake))
    gguf_file = tmp_path / "base.gguf"
    gguf_file.write_bytes(b"GGUF")

    def cmd(**rollout):
        cfg = TrainConfig(algo="opd", steps=1, out_dir=str(tmp_path / "run"), rollout=RolloutSettings(
            sampler="llamacpp", llamacpp_gguf=str(gguf_file), eval_tasks=64, **rollout))
        c = LlamaCppSampler(cfg, tok, tmp_path).servers[0].command(gguf_file)
        return int(c[c.index("-np") + 1]), int(c[c.index("-c") + 1])

    # 64 held-out episodes at once would be 64 x 4096 tokens of KV (6 GB for SmolLM2)
    assert cmd(max_episode_tokens=1000, max_tokens=24) == (16, 16 * 1280)
    assert cmd(llamacpp_parallel=4, llamacpp_ctx=512) == (4, 4 * 512)


def test_server_that_exits_on_load_reports_its_log(tmp_path):
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = LlamaServer(str(fake), parallel=2)
    with pytest.raises(LlamaCppError, match="exited with code 3.*failed to load model"):
        server.start(tmp_path / "m.gguf")
    assert server.proc is None


# ---- the llama.cpp dialect of the OpenAI client (loopback) -----------------------------------

class LlamaDialectServer:
    """Answers like llama-server: ``owned_by: llamacpp``, per-token ``logprobs.content`` with ids,
    ``prob`` instead of ``logprob`` when ``post_sampling_probs`` is set."""

    def __init__(self):
        import socket

        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.bodies = []

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model",
                                                             "owned_by": "llamacpp"}]})

        async def completions(request):
            body = await request.json()
            self.bodies.append(body)
            post = body.get("post_sampling_probs")
            content = [{"id": i, "token": f"t{i}", "bytes": [],
                        **({"prob": 0.25} if post else {"logprob": -2.0})} for i in (17, 4, 250)]
            return JSONResponse({"choices": [{"text": "whatever", "index": 0, "finish_reason": "length",
                                              "logprobs": {"content": content}}]})

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = Starlette(routes=[Route("/v1/models", models),
                                Route("/v1/completions", completions, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1"


def test_client_speaks_llama_cpp_dialect(tok):
    srv = LlamaDialectServer()
    try:
        pol = OpenAIPolicy("m", base_url=srv.url, tokenizer=tok)
        assert pol.flavor == "llamacpp"  # detected from /models
        [g] = pol.generate([[1, 2, 3]], SamplingParams(temperature=0.7, max_tokens=3, seed=1))
        assert g.token_ids == [17, 4, 250] and g.logprobs == [-2.0] * 3
        assert g.meta["token_ids_source"] == "server"
        body = srv.bodies[-1]
        assert body["samplers"] == ["temperature", "top_k", "top_p"] and body["top_k"] == 0
        assert body["post_sampling_probs"] is False
        pol.post_sampling_logprobs = True
        [g] = pol.generate([[1, 2, 3]], SamplingParams(temperature=0.7, max_tokens=3))
        assert g.logprobs == pytest.approx([math.log(0.25)] * 3)
        assert srv.bodies[-1]["post_sampling_probs"] is True
        generic = OpenAIPolicy("m", base_url=srv.url, tokenizer=tok, flavor="generic")
        generic.generate([[1, 2, 3]], SamplingParams(max_tokens=3))
        assert "samplers" not in srv.bodies[-1]  # vLLM and others get the plain OpenAI body
    finally:
        srv.server.should_exit = True
        srv.thread.join(10)


# ---- a real llama-server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def binary():
    try:
        return find_server_binary()
    except LlamaCppError as e:
        pytest.skip(str(e))


@pytest.fixture
def server(binary):
    s = LlamaServer(binary, parallel=2, ctx_per_slot=512, threads=1)
    yield s
    s.stop()


def _client(server, tok, post=True):
    from agentsd.policy.llamacpp import SERVED_NAME

    return OpenAIPolicy(SERVED_NAME, base_url=server.url, tokenizer=tok, flavor="llamacpp",
                        post_sampling_logprobs=post, verify_model=False)


def test_server_logprobs_match_the_trainers_model_both_conventions(smol, server, tmp_path):
    model, tok, base = smol
    server.start(write_gguf(merged_hf_weights(model), base, tmp_path / "base.gguf", dtype="f16"))
    params = SamplingParams(temperature=0.7, max_tokens=8, seed=3)
    d = probe_logprobs(_client(server, tok, post=True), model, tok, params, "processed")
    assert d["processed"] < 0.03 and d["raw"] > 0.1
    d = probe_logprobs(_client(server, tok, post=False), model, tok, params, "raw")
    assert d["raw"] < 0.03 and d["processed"] > 0.1
    print("llama.cpp (f16 copy) vs trainer, mean |Δ log-prob|:", d)


def test_server_applies_the_lora_file_and_a_whole_written_student(smol, server, tmp_path):
    from agentsd.policy.llamacpp import base_weights

    model, tok, base = smol
    student = _lora(model, std=0.05)
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=5)
    # what the llamacpp sampler serves: the adapter's base written once, the adapter per update
    f16 = write_gguf(base_weights(student), base, tmp_path / "base.gguf", dtype="f16")
    server.start(f16, write_lora_gguf(student, f16, tmp_path / "lora.gguf"))
    d_lora = probe_logprobs(_client(server, tok), student, tok, params, "processed")
    assert d_lora["processed"] < 0.03
    with pytest.raises(SamplerError, match="disagrees with the trainer's model"):
        probe_logprobs(_client(server, tok), model, tok, params, "processed")  # the adapter is on
    full = copy.deepcopy(model)  # full fine-tuning: every weight may change
    with torch.no_grad():
        full.model.norm.weight.mul_(1.3)
        full.model.layers[0].mlp.down_proj.weight.add_(0.01)
    server.start(write_gguf(merged_hf_weights(full), base, tmp_path / "full.gguf", dtype="f32"))
    d_full = probe_logprobs(_client(server, tok), full, tok, params, "processed")
    assert d_full["processed"] < 0.01
    print("lora over an f16 base:", d_lora, "whole student in f32:", d_full)


@pytest.mark.slow
def test_opd_run_samples_every_rollout_from_llama_cpp(smol, binary, tmp_path):
    from agentsd.distill.metrics import read_metrics
    from agentsd.distill.trainer import train

    rs = RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=2, max_tokens=12, eval_tasks=2,
                         sampler="llamacpp", llamacpp_threads=1)
    cfg = TrainConfig(algo="opd", steps=2, out_dir=str(tmp_path / "run"), eval_every=0, eval_at_start=False,
                      eval_at_end=True, checkpoint_every=1, progress=False, tensorboard=False,
                      samples_to_keep=0, teacher_eval=False, model=ModelConfig(name="smollm2", lora_rank=4),
                      rollout=rs)
    res = train(cfg)
    assert res.steps_done == 2 and "eval/success" in res.final_eval
    rows = read_metrics(tmp_path / "run")
    # sampled by llama.cpp from the trainer's current weights: importance ratios close to 1
    assert all(abs(r["is/ratio_mean"] - 1) < 0.05 for r in rows), [r["is/ratio_mean"] for r in rows]
    assert not list((tmp_path / "run" / "sampler_gguf").glob("*.gguf"))  # cleaned up on close
