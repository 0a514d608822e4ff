"""The ``openai`` backend over real HTTP on loopback.

Two servers:

- a small OpenAI-compatible server written here (starlette + uvicorn) that samples from a tiny
  random Llama through the ``hf`` backend and returns token ids the way vLLM does
  (``return_tokens_as_token_ids``); it can also fail on purpose (503s, auth, unknown models) to
  exercise retries and error messages. Always runs.
- a real llama.cpp server serving the SmolLM2 GGUF: llama.cpp's own ``llama-server`` where one
  is built (``AGENTSD_LLAMA_SERVER`` or ``PATH``; ``scripts/build_llama_server.sh``), else the
  one in ``llama-cpp-python`` where that is installed (``pip install 'llama-cpp-python[server]'``);
  both are source builds of many minutes, so neither is in the dev extra; skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from agentsd.policy import HFPolicy, SamplingParams
from agentsd.policy.models import random_model
from agentsd.policy.openai import (
    ModelNotServedError,
    OpenAIAuthError,
    OpenAIBackendError,
    OpenAIPolicy,
)
from agentsd.rollout import rollout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyServer:
    """An OpenAI-compatible completions server over a tiny hf model, with failure injection."""

    def __init__(self, tok):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.policy = HFPolicy(random_model(tok, seed=0), tok, model_id="tiny")
        self.fail_next = 0  # answer this many requests with 503
        self.api_key = "sekret"
        self.requests: list[dict] = []
        self.lock = threading.Lock()

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

        async def completions(request):
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
            body = await request.json()
            with self.lock:
                self.requests.append(body)
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            if body.get("model") != "tiny":
                return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does "
                                               "not exist."}}, status_code=404)
            prompt = body["prompt"]
            if isinstance(prompt, str):
                prompt = tok.encode(prompt, add_special_tokens=False)
            params = SamplingParams(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                                    max_tokens=body.get("max_tokens", 16), seed=body.get("seed"),
                                    stop=tuple(body.get("stop") or ()))
            with self.lock:  # one model, one request at a time
                [g] = self.policy.generate([prompt], params)
            ids = g.token_ids
            if g.finish_reason == "stop" and ids and ids[-1] in self.policy.eos_token_ids:
                ids, lps = ids[:-1], g.logprobs[:-1]  # servers do not return the EOS token
            else:
                lps = g.logprobs
            tokens = ([f"token_id:{t}" for t in ids] if body.get("return_tokens_as_token_ids")
                      else [tok.decode([t]) for t in ids])
            return JSONResponse({"choices": [{"index": 0, "text": tok.decode(ids, skip_special_tokens=True),
                                              "finish_reason": g.finish_reason,
                                              "logprobs": {"tokens": tokens, "token_logprobs": lps}}],
                                 "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids)}})

        app = Starlette(routes=[Route("/v1/models", models),
                                Route("/v1/completions", completions, methods=["POST"])])
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tok):
    s = TinyServer(tok)
    yield s
    s.stop()


def _policy(server, tok, **kw):
    return OpenAIPolicy("tiny", base_url=server.url, api_key="sekret", tokenizer=tok,
                        backoff_s=0.01, **kw)


def test_token_prompts_in_token_ids_out(server, tok):
    pol = _policy(server, tok)
    prompt = tok.encode("Hello there", add_special_tokens=False)
    gens = pol.generate([prompt, prompt], SamplingParams(max_tokens=6, seed=3))
    assert server.requests[-1]["prompt"] == prompt  # the server got our ids, not re-rendered text
    [ref] = server.policy.generate([prompt], SamplingParams(max_tokens=6, seed=3))
    assert gens[0].token_ids == ref.token_ids and gens[0].logprobs == pytest.approx(ref.logprobs)
    assert gens[0].token_ids != gens[1].token_ids  # per-request seeds differ within a batch
    for g in gens:
        assert g.meta["prompt_mode"] == "tokens" and g.meta["token_ids_source"] == "server"
        assert len(g.token_ids) == len(g.logprobs) == 6 and g.finish_reason == "length"


def test_pieces_are_mapped_back_to_ids_when_the_server_returns_text_tokens(server, tok):
    pol = _policy(server, tok)
    ids, lps, source = pol._output_ids(" Hello world", [" Hello", " world"], [-1.0, -2.0])
    assert (source, lps) == ("pieces", [-1.0, -2.0]) and tok.decode(ids) == " Hello world"
    ids, lps, source = pol._output_ids("abc", None, None)
    assert source == "retokenized" and lps == []


def test_retries_on_503_then_succeeds(server, tok):
    pol = _policy(server, tok, max_retries=3)
    server.fail_next = 2
    n = len(server.requests)
    [g] = pol.generate([tok.encode("x")], SamplingParams(max_tokens=2, seed=0))
    assert len(g.token_ids) == 2 and len(server.requests) - n == 3


def test_gives_up_after_retries_with_a_clear_error(server, tok):
    pol = _policy(server, tok, max_retries=1)
    server.fail_next = 5
    with pytest.raises(OpenAIBackendError, match="failed after 2 attempts.*HTTP 503"):
        pol.generate([tok.encode("x")], SamplingParams(max_tokens=2))
    server.fail_next = 0


def test_auth_bad_model_and_unreachable_server_errors(server, tok):
    pol = OpenAIPolicy("tiny", base_url=server.url, api_key="wrong", tokenizer=tok)
    with pytest.raises(OpenAIAuthError, match="OPENAI_API_KEY"):
        pol.generate([tok.encode("x")], SamplingParams(max_tokens=2))
    with pytest.raises(ModelNotServedError, match=r"it serves: \['tiny'\]"):
        OpenAIPolicy("nope", base_url=server.url, api_key="sekret", tokenizer=tok)
    unverified = OpenAIPolicy("nope", base_url=server.url, api_key="sekret", tokenizer=tok,
                              verify_model=False)
    with pytest.raises(ModelNotServedError, match="does not exist"):
        unverified.generate([tok.encode("x")], SamplingParams(max_tokens=2))
    with pytest.raises(OpenAIBackendError, match="cannot reach"):
        OpenAIPolicy("tiny", base_url=f"http://127.0.0.1:{_free_port()}/v1", tokenizer=tok)


def test_rollout_over_http_feeds_exactly_the_stored_sequence(server, tok):
    pol = _policy(server, tok)
    n = len(server.requests)
    trajs = rollout(pol, "Sokoban-Easy-v0", seeds=[0, 1], samples_per_task=2,
                    params=SamplingParams(max_tokens=5, seed=0), max_turns=2)
    assert len(trajs) == 4 and all(t.policy == "openai:tiny" for t in trajs)
    sent = Counter(tuple(r["prompt"]) for r in server.requests[n:])
    expected = Counter()
    for t in trajs:
        prefix: list[int] = []
        for turn in t.turns:
            prefix = prefix + turn.prompt_ids
            expected[tuple(prefix)] += 1
            prefix = prefix + turn.action_ids
            assert len(turn.action_logprobs) == len(turn.action_ids)
            assert turn.info["sampler"] == {"prompt_mode": "tokens", "token_ids_source": "server"}
    assert sent == expected


# ---- a real llama.cpp server: llama.cpp's own llama-server, else llama-cpp-python's ---------

@pytest.fixture(scope="module")
def llama_server(tok, tmp_path_factory):
    from agentsd.policy.llamacpp import LlamaCppError, LlamaServer, find_server_binary
    from agentsd.policy.models import smollm2_gguf_path

    try:
        binary = find_server_binary()
    except LlamaCppError as e:
        binary, why = None, str(e)
    if binary:  # the C++ server (scripts/build_llama_server.sh) on the embedded GGUF as it ships
        server = LlamaServer(binary, parallel=2, ctx_per_slot=2048, threads=2, alias="smollm2")
        server.start(smollm2_gguf_path())
        yield server.url
        server.stop()
        return
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"no llama.cpp server here: {why}; or pip install 'llama-cpp-python[server]' (a long "
                    "source build). The tiny-server tests above cover the HTTP path")

    port = _free_port()
    # a file, not a pipe: llama.cpp logs a lot while loading and would block on a full pipe
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
                             "--port", str(port), "--host", "127.0.0.1", "--model_alias", "smollm2",
                             "--n_ctx", "4096", "--n_threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=log)
    import httpx

    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300  # imports and model load are slow on a busy 2-core machine
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama_cpp.server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail("llama_cpp.server did not come up within 300 s")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_llama_cpp_server_completions(llama_server, tok):
    pol = OpenAIPolicy("smollm2", base_url=llama_server, tokenizer=tok)
    msgs = [{"role": "user", "content": "Say hello."}]
    prompt = tok.encode(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)
    [g] = pol.generate([prompt], SamplingParams(temperature=0, max_tokens=12))
    assert g.text and g.token_ids and g.finish_reason in ("stop", "length")
    assert tok.decode(g.token_ids, skip_special_tokens=True) == g.text
    if g.meta["token_ids_source"] != "retokenized":
        assert len(g.logprobs) == len(g.token_ids) and all(x <= 0 for x in g.logprobs)
    print("llama.cpp server:", g.meta)


def test_llama_cpp_server_rollout(llama_server, tok):
    pol = OpenAIPolicy("smollm2", base_url=llama_server, tokenizer=tok)
    trajs = rollout(pol, "Sokoban-Easy-v0", seeds=[0, 1], params=SamplingParams(max_tokens=24, seed=0),
                    max_turns=2)
    assert [t.stop_reason for t in trajs if t.stop_reason not in ("terminated", "max_turns")] == []
    for t in trajs:
        assert t.turns and all(turn.action_ids for turn in t.turns)
        assert t.token_ids()[: t.prompt_len()] == t.turns[0].prompt_ids


def test_llama_cpp_server_chat(llama_server, tok):
    pol = OpenAIPolicy("smollm2", base_url=llama_server, tokenizer=tok)
    [g] = pol.chat([[{"role": "user", "content": "What is 2+2? Answer briefly."}]],
                   SamplingParams(temperature=0, max_tokens=16))
    assert g.text and g.meta["message"]["role"] == "assistant"
