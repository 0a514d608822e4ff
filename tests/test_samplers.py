"""Rollout samplers (``--rollout.sampler hf | vllm | openai``) and overlap (``--rollout.overlap``).

The ``openai`` sampler is tested end to end against real loopback HTTP servers started here
(starlette + uvicorn) that serve a tiny random Llama, ``/v1/completions`` with token ids and
log-probs (raw or processed, as configured) and vLLM's ``/v1/load_lora_adapter``. The ``vllm``
sampler cannot run here (no GPU, no vLLM): its weight mapping is tested by loading the pushed
tensors into a plain Hugging Face model, and its absence is a one-line config error.
"""

from __future__ import annotations

import copy
import dataclasses
import socket
import threading
import time

import pytest
import torch

from agentsd.distill.config import ModelConfig, RolloutSettings, TrainConfig
from agentsd.distill.metrics import read_metrics
from agentsd.distill.models import tiny_random_model, with_lora
from agentsd.distill.samplers import (
    SamplerError,
    check_logprobs,
    needs_processed,
    probe_logprobs,
    processed_logprobs,
)
from agentsd.policy import HFPolicy, SamplingParams
from agentsd.policy.openai import AdapterRefusedError, OpenAIPolicy, OpenAIPool
from agentsd.policy.vllm import VLLMPolicy, hf_name, merged_hf_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(tok, std=0.5, seed=0):
    # a peaky tiny model (init_std 0.5): raw and temperature-scaled log-probs differ clearly
    return tiny_random_model(vocab_size=len(tok), hidden_size=16, layers=2, seed=seed, init_std=std,
                             eos_token_id=tok.eos_token_id)


def _lora(model, seed=0):
    torch.manual_seed(seed)
    m = with_lora(copy.deepcopy(model), rank=4, alpha=8.0)
    with torch.no_grad():  # a non-zero B, so the adapter changes the model
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return m.eval()


# ---- log-prob conventions ---------------------------------------------------------------------

def test_which_settings_need_processed_logprobs():
    assert not needs_processed(1.0, 1.0) and not needs_processed(0.0, 1.0)
    assert needs_processed(0.7, 1.0) and needs_processed(1.0, 0.9) and needs_processed(1.0, 1.0, 5)
    check_logprobs("openai", "raw", 1.0, 1.0)
    check_logprobs("hf", "processed", 0.5, 0.8)
    with pytest.raises(SamplerError, match="--logprobs-mode processed_logprobs"):
        check_logprobs("openai", "raw", 1.0, 0.9)


def test_processed_logprobs_match_what_the_hf_sampler_reports(tok):
    model = _tiny(tok)
    pol = HFPolicy(model, tok)
    prompt = tok.encode("Hello there", add_special_tokens=False)
    for t, p, k in [(1.0, 1.0, 0), (0.6, 1.0, 0), (0.8, 0.9, 0), (1.3, 0.95, 20)]:
        [g] = pol.generate([prompt], SamplingParams(temperature=t, top_p=p, top_k=k, max_tokens=6, seed=1))
        ids = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        ours = processed_logprobs(logits, ids[0, len(prompt):], t, p, k)
        assert ours.tolist() == pytest.approx(g.logprobs, abs=1e-4), (t, p, k)
    raw = processed_logprobs(logits, ids[0, len(prompt):], 1.0)
    assert torch.allclose(raw, torch.log_softmax(logits.float(), -1).gather(-1, ids[0, len(prompt):, None])[:, 0])


def test_config_refuses_raw_server_logprobs_at_temperature():
    with pytest.raises(ValueError, match="RolloutSettings.server_logprobs.*processed_logprobs"):
        RolloutSettings(sampler="openai", servers=("http://127.0.0.1:1/v1",), temperature=0.7)
    RolloutSettings(sampler="openai", servers=("http://127.0.0.1:1/v1",), temperature=0.7,
                    server_logprobs="processed")
    with pytest.raises(ValueError, match="needs at least one server"):
        RolloutSettings(sampler="openai")
    assert RolloutSettings(sampler="openai", servers="http://a:1/v1,http://b:2/v1").servers == (
        "http://a:1/v1", "http://b:2/v1")


def test_vllm_missing_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    import importlib.util

    from agentsd.distill import trainer

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), rollout=RolloutSettings(sampler="vllm"))  # loads
    monkeypatch.setattr(trainer, "build_student", lambda c: pytest.fail("a model was loaded"))
    with pytest.raises(SamplerError, match=r"vLLM is not installed here: pip install 'agentsd\[vllm\]'") as e:
        trainer.train(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("module", ["agentsd.distill.samplers", "agentsd.policy.vllm"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


# ---- vllm: the weight mapping -------------------------------------------------------------------

def test_merged_lora_weights_carry_hf_names_and_reproduce_the_adapted_model(tok):
    base = _tiny(tok)
    peft = _lora(base)
    pushed = merged_hf_weights(peft)
    names = [n for n, _ in pushed]
    assert names and all("lora_" not in n and "base_layer" not in n and not n.startswith("base_model")
                         for n in names)
    assert set(names) <= set(base.state_dict())
    assert any(n.endswith("self_attn.q_proj.weight") for n in names)
    fresh = copy.deepcopy(base)
    missing = fresh.load_state_dict(dict(pushed), strict=False)
    assert not missing.unexpected_keys
    ids = torch.tensor([tok.encode("the box is on the goal", add_special_tokens=False)])
    with torch.no_grad():
        # float32: the merged weight rounds once, the adapter adds its delta per forward (measured
        # 1.3e-5 apart on logits of size ~10); the base model is ~10 away
        assert torch.allclose(fresh(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-4)
        assert not torch.allclose(base(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-3)
    full = dict(merged_hf_weights(peft, changed_only=False))
    assert set(full) == set(dict(base.named_parameters()))
    assert hf_name("base_model.model.lm_head.weight") == "lm_head.weight"


def test_vllm_push_weights_hands_the_engine_hf_named_tensors(tok):
    """``push_weights`` through a stand-in engine whose model loads HF names like vLLM's does."""
    base, peft = _tiny(tok), _lora(_tiny(tok))
    engine_model = copy.deepcopy(base)

    class FakeModel:
        def load_weights(self, weights):
            params = dict(engine_model.named_parameters())
            for n, t in weights:
                params[n].data.copy_(t)  # a KeyError here is what vLLM would choke on

    class FakeLLM:
        def apply_model(self, fn):
            return fn(FakeModel())

        def reset_prefix_cache(self):
            self.reset = True

    pol = VLLMPolicy.__new__(VLLMPolicy)
    pol.llm = FakeLLM()
    assert pol.push_weights(peft) == len(merged_hf_weights(peft))
    assert pol.push_weights(peft, changed_only=False) == len(dict(base.named_parameters()))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(engine_model(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-5)
    assert pol.llm.reset


# ---- openai: a loopback vLLM-like server --------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoraServer:
    """An OpenAI-compatible server over a tiny model with vLLM's runtime LoRA endpoints.
    ``logprobs``: "raw" (vLLM's default) or "processed"; ``adapter``: "ok", "refuse" (HTTP 400
    as vLLM answers an over-rank adapter) or "absent" (no endpoint: LoRA updating off)."""

    def __init__(self, base, tok, logprobs="raw", adapter="ok"):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        self.base, self.tok, self.logprobs, self.adapter = base, tok, logprobs, adapter
        self.models = {"tiny": HFPolicy(base, tok, model_id="tiny")}
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.completions = 0
        self.temperatures: list[float] = []
        self.lock = threading.Lock()

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

        async def load(request):
            body = await request.json()
            if self.adapter == "refuse":
                return JSONResponse({"error": {"message": "LoRA rank 4 is greater than max_lora_rank 1"}},
                                    status_code=400)
            from peft import PeftModel

            with self.lock:
                model = PeftModel.from_pretrained(copy.deepcopy(self.base), body["lora_path"]).eval()
                self.models[body["lora_name"]] = HFPolicy(model, tok, model_id=body["lora_name"])
                self.loads.append(body["lora_name"])
            return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

        async def unload(request):
            body = await request.json()
            with self.lock:
                self.models.pop(body["lora_name"], None)
                self.unloads.append(body["lora_name"])
            return PlainTextResponse("Success")

        async def completions(request):
            body = await request.json()
            pol = self.models.get(body.get("model"))
            if pol is None:
                return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist."}},
                                    status_code=404)
            prompt = body["prompt"]
            params = SamplingParams(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                                    max_tokens=body.get("max_tokens", 16), seed=body.get("seed"))
            with self.lock:
                self.completions += 1
                self.temperatures.append(params.temperature)
                [g] = pol.generate([prompt], params)
                lps = g.logprobs
                if self.logprobs == "raw":
                    with torch.no_grad():
                        logits = pol.model(input_ids=torch.tensor([prompt + g.token_ids])).logits[0]
                    lps = processed_logprobs(logits[len(prompt) - 1:-1], torch.tensor(g.token_ids), 1.0).tolist()
            ids = g.token_ids
            if g.finish_reason == "stop" and ids and ids[-1] in pol.eos_token_ids:
                ids, lps = ids[:-1], lps[:-1]  # servers do not return the EOS token
            return JSONResponse({"choices": [{"index": 0, "text": tok.decode(ids, skip_special_tokens=True),
                                              "finish_reason": g.finish_reason,
                                              "logprobs": {"tokens": [f"token_id:{t}" for t in ids],
                                                           "token_logprobs": lps}}]})

        routes = [Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"]),
                  Route("/v1/unload_lora_adapter", unload, methods=["POST"])]
        if adapter != "absent":
            routes.append(Route("/v1/load_lora_adapter", load, methods=["POST"]))
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), host="127.0.0.1",
                                                    port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "test server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def servers(tok):
    started = []

    def start(base, **kw):
        s = LoraServer(base, tok, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _cfg(tmp_path, urls, eval_at_end=False, **rollout):
    rs = dict(tasks_per_step=2, samples_per_task=2, max_turns=2, max_tokens=6, eval_tasks=2,
              sampler="openai", servers=tuple(urls))
    rs.update(rollout)
    return TrainConfig(algo="opd", steps=2, out_dir=str(tmp_path / "run"), eval_every=0,
                       eval_at_start=False, eval_at_end=eval_at_end, checkpoint_every=1, progress=False,
                       tensorboard=False, samples_to_keep=0, teacher_eval=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                       rollout=RolloutSettings(**rs))


def _student(cfg, tok, base):
    from agentsd.distill.trainer import prepare_student

    return prepare_student(copy.deepcopy(base), cfg)


def test_openai_sampler_trains_over_two_servers_loading_each_update(tmp_path, tok, servers):
    from agentsd.distill.trainer import train

    base = _tiny(tok)
    a, b = servers(base), servers(base)
    cfg = _cfg(tmp_path, [a.url, b.url], eval_at_end=True)
    res = train(cfg, model=_student(cfg, tok, base), tokenizer=tok)
    assert res.steps_done == 2 and "eval/success" in res.final_eval
    assert 0.0 in a.temperatures + b.temperatures  # held-out greedy evaluation ran on the servers
    for s in (a, b):  # version 0 at start, then after each update; the old one unloaded
        assert [n.rsplit("-", 1)[1] for n in s.loads] == ["v0", "v1", "v2"]
        assert s.unloads == s.loads[:-1]
        assert s.completions > 2  # both servers sampled
    rows = read_metrics(tmp_path / "run")
    assert [r["rollout/staleness"] for r in rows] == [0.0, 0.0]
    # the servers sampled from the trainer's current weights: importance ratios ~ 1
    assert all(abs(r["is/ratio_mean"] - 1) < 1e-3 for r in rows)
    folders = list((tmp_path / "run" / "sampler_adapter").iterdir())
    assert [f.name for f in folders] == [a.loads[-1]] and (folders[0] / "adapter_config.json").exists()


def test_openai_pool_spreads_requests_and_keeps_per_prompt_seeds(tok, servers):
    base = _tiny(tok)
    a, b = servers(base), servers(base)
    one = OpenAIPool([OpenAIPolicy("tiny", base_url=a.url, tokenizer=tok)])
    two = OpenAIPool([OpenAIPolicy("tiny", base_url=u, tokenizer=tok) for u in (a.url, b.url)])
    prompts = [tok.encode(f"task {i}", add_special_tokens=False) for i in range(4)]
    params = SamplingParams(max_tokens=5, seed=7)
    n_a, n_b = a.completions, b.completions
    g2 = two.generate(prompts, params)
    assert (a.completions - n_a, b.completions - n_b) == (2, 2)
    g1 = one.generate(prompts, params)
    assert [g.token_ids for g in g1] == [g.token_ids for g in g2]


def test_server_not_answering_is_one_line_before_any_model_loads(tmp_path, tok, monkeypatch):
    from agentsd.distill import trainer

    cfg = _cfg(tmp_path, [f"http://127.0.0.1:{_free_port()}/v1"])
    monkeypatch.setattr(trainer, "build_student", lambda c: pytest.fail("a model was loaded"))
    with pytest.raises(SamplerError, match=r"does not answer.*vllm serve.*--rollout.servers") as e:
        trainer.train(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode, match", [
    ("refuse", r"refused LoRA adapter .*max_lora_rank 1.*--max-lora-rank"),
    ("absent", r"no /load_lora_adapter endpoint.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"),
])
def test_adapter_refused_stops_before_the_first_rollout(tmp_path, tok, servers, mode, match):
    from agentsd.distill.trainer import train

    base = _tiny(tok)
    s = servers(base, adapter=mode)
    cfg = _cfg(tmp_path, [s.url])
    with pytest.raises(AdapterRefusedError, match=match) as e:
        train(cfg, model=_student(cfg, tok, base), tokenizer=tok)
    assert "\n" not in str(e.value)
    assert s.completions == 0 and not (tmp_path / "run" / "checkpoints").exists()


def test_wrong_logprob_convention_is_caught_on_start(tmp_path, tok, servers):
    from agentsd.distill.trainer import train

    base = _tiny(tok)
    raw = servers(base, logprobs="raw")
    cfg = _cfg(tmp_path, [raw.url], temperature=0.5, server_logprobs="processed")
    with pytest.raises(SamplerError, match=r"returns raw log-probs, not rollout.server_logprobs='processed'"
                                           r".*--logprobs-mode processed_logprobs") as e:
        train(cfg, model=_student(cfg, tok, base), tokenizer=tok)
    assert "\n" not in str(e.value) and raw.completions == 1  # one probe, no rollout
    # a server that returns processed log-probs passes the same check and trains
    ok = servers(base, logprobs="processed")
    cfg = _cfg(tmp_path, [ok.url], temperature=0.5, server_logprobs="processed")
    cfg = dataclasses.replace(cfg, steps=1)
    assert train(cfg, model=_student(cfg, tok, base), tokenizer=tok).steps_done == 1


def test_probe_refuses_a_server_with_other_weights(tok, servers):
    s = servers(_tiny(tok, seed=1))
    client = OpenAIPolicy("tiny", base_url=s.url, tokenizer=tok)
    with pytest.raises(SamplerError, match="disagrees with the trainer's model"):
        probe_logprobs(client, _tiny(tok, seed=2), tok, SamplingParams(max_tokens=6, seed=0), "raw")
    d = probe_logprobs(client, _tiny(tok, seed=1), tok, SamplingParams(max_tokens=6, seed=0), "raw")
    assert d["raw"] < 1e-4


# ---- overlap ---------------------------------------------------------------------------------

def _overlap_cfg(tmp_path, name, steps=4):
    return TrainConfig(algo="opd", steps=steps, out_dir=str(tmp_path / name), eval_every=2,
                       eval_at_start=False, checkpoint_every=2, progress=False, tensorboard=False,
                       samples_to_keep=0, teacher_eval=False,
                       model=ModelConfig(name="tiny-random", tiny_hidden=16, lora_rank=4),
                       rollout=RolloutSettings(tasks_per_step=2, samples_per_task=2, max_turns=2,
                                               max_tokens=6, eval_tasks=2, overlap=True,
                                               eval_sampled=False))


def _deterministic(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_overlap_is_one_step_stale_and_resumes_exactly(tmp_path, monkeypatch):
    from agentsd.distill import checkpoint
    from agentsd.distill.trainer import train

    ref = train(_overlap_cfg(tmp_path, "ref"))
    rows = read_metrics(tmp_path / "ref")
    assert [r["rollout/staleness"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert [r["rollout/policy_version"] for r in rows] == [0.0, 0.0, 1.0, 2.0]
    assert ref.steps_done == 4

    # interrupt right after the step-2 checkpoint (which holds step 3's prefetched rollouts)
    save = checkpoint.save_checkpoint

    def save_then_die(run_dir, step, *a, **kw):
        out = save(run_dir, step, *a, **kw)
        if step == 2:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_overlap_cfg(tmp_path, "cut"))
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    state = checkpoint._load_split(checkpoint.latest_checkpoint(tmp_path / "cut"), "state")
    assert state["prefetch"] and '"step": 3' in state["prefetch"]
    resumed = train(_overlap_cfg(tmp_path, "cut"))
    assert resumed.resumed_from == 2
    assert _deterministic(read_metrics(tmp_path / "cut")) == _deterministic(rows)


def test_rollout_stream_records_versions_and_checkpoints_its_prefetch():
    from agentsd.distill.samplers import RolloutStream, Sampler
    from agentsd.trajectory import Trajectory

    class Fake(Sampler):
        name, logprobs = "fake", "raw"

    sampler = Fake(policy=None)
    stream = RolloutStream(sampler, lambda step: ([Trajectory(env_id="x", seed=step)], None),
                           overlap=True, last_step=3)
    [t1], _ = stream.take(1)
    assert t1.meta == {"policy_version": 0, "staleness": 0, "sampler": "fake:raw"}
    stream.prefetch(2)
    stream.after_update(None, 1)  # joins the prefetch, then the sampler follows the update
    assert sampler.version == 1
    again = RolloutStream(sampler, lambda step: pytest.fail("resampled"), overlap=True, last_step=3,
                          pending=stream.pending_state())
    [t2], _ = again.take(2)
    assert (t2.seed, t2.meta["policy_version"], t2.meta["staleness"]) == (2, 0, 1)
    assert stream.metrics()["rollout/staleness"] == 0.0 and again.metrics()["rollout/staleness"] == 1.0
    stream.close()
    again.close()
