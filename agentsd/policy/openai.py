"""The ``openai`` backend: any OpenAI-compatible server over httpx (vLLM ``serve``, SGLang,
llama.cpp servers).

llama.cpp's ``llama-server`` is recognized from its ``/models`` (``owned_by: llamacpp``, or
``flavor="llamacpp"``): requests then pin its sampler chain to temperature, top-k and top-p (its
defaults add min-p, top-k 40 and penalties), ask for the probabilities the token was drawn from
when ``post_sampling_logprobs`` is set, and read the token ids it returns with each log-prob.

    policy = OpenAIPolicy("smollm2", base_url="http://127.0.0.1:8000/v1")   # tokenizer: smollm2
    gens = policy.generate([prompt_ids], SamplingParams(max_tokens=64))      # completions endpoint
    [reply] = policy.chat([[{"role": "user", "content": "hi"}]], params, tools=env.openai_tools())
    reply.meta["message"]                                                    # assistant message dict

``generate`` (what the rollout engine calls) uses the **completions** endpoint so the prompt is
the engine's own token ids (``"prompt": [ids]``), never re-rendered by the server. What comes back
depends on the server, and each generation says which path was taken in ``meta``:

- ``meta["prompt_mode"]``: ``"tokens"`` when the server accepted token-id prompts; ``"text"``
  when it refused them (the prompt ids are then decoded to text, which the server re-tokenizes, so
  the tokens it saw may differ at the edges).
- ``meta["token_ids_source"]``: ``"server"`` when the server returned token ids (vLLM with
  ``return_tokens_as_token_ids``); ``"pieces"`` when it returned one text piece per token and
  each piece maps back to exactly one id; ``"retokenized"`` when neither worked and the text was
  encoded locally (then ``logprobs`` are the server's only if the lengths agree, else empty).
  The EOS token that ended a ``"stop"`` generation is not returned by servers, so it is not in
  ``token_ids``; the rollout engine's renderer closes the turn with the template's own tokens.

Requests run concurrently (``concurrency``) with a timeout, and are retried with exponential
backoff on 429, 5xx and connection errors (:func:`agentsd.retrying.retrying`). Authentication
failures and model names the server does not serve raise :class:`OpenAIAuthError` /
:class:`ModelNotServedError` with what to do.
"""

from __future__ import annotations

import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentsd.policy.base import Generation, SamplingParams
from agentsd.retrying import retrying

__all__ = ["OpenAIPolicy", "OpenAIPool", "OpenAIBackendError", "OpenAIAuthError", "ModelNotServedError",
           "AdapterRefusedError"]


class OpenAIBackendError(RuntimeError):
    """The server failed a request (after retries) or answered something unusable."""


class OpenAIAuthError(OpenAIBackendError):
    """401/403 from the server."""


class ModelNotServedError(OpenAIBackendError):
    """The server does not serve the requested model name."""


class AdapterRefusedError(OpenAIBackendError):
    """The server would not load (or has no endpoint to load) a LoRA adapter."""


#: what kind of server a client talks to (``auto``: llama.cpp when its ``/models`` says so)
FLAVORS = {"auto", "vllm", "llamacpp", "generic"}
_TOKEN_ID_RE = re.compile(r"^token_id:(\d+)$")
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIPolicy:
    """A :class:`~agentsd.policy.base.Policy` backed by an OpenAI-compatible HTTP server."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 tokenizer: Any = None, concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 0.5, token_prompts: str = "auto",
                 context_length: int | None = None, verify_model: bool = True, flavor: str = "auto",
                 post_sampling_logprobs: bool = False) -> None:
        import httpx

        if token_prompts not in ("auto", "always", "never"):
            raise ValueError(f"token_prompts must be 'auto', 'always' or 'never', got {token_prompts!r}")
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {sorted(FLAVORS)}, got {flavor!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1").rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model_id = f"openai:{model}"
        self.context_length = context_length
        self.max_retries, self.backoff_s, self.concurrency = max_retries, backoff_s, concurrency
        self._token_prompts = token_prompts
        self.flavor = flavor
        self.post_sampling_logprobs = post_sampling_logprobs
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                    headers={"Authorization": f"Bearer {self.api_key}"},
                                    limits=httpx.Limits(max_connections=concurrency))
        self.tokenizer = self._load_tokenizer(tokenizer)
        if verify_model:
            self._verify_model()

    # ---- public ------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One completion per prompt (token ids in), requests in parallel."""
        if not prompts:
            return []
        jobs = [(p, None if params.seed is None else params.seed + i) for i, p in enumerate(prompts)]
        with ThreadPoolExecutor(min(self.concurrency, len(jobs))) as pool:
            return list(pool.map(lambda j: self._complete(j[0], params, j[1]), jobs))

    def chat(self, conversations: list[list[dict[str, Any]]], params: SamplingParams,
             tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        """One chat completion per conversation (the server renders the template). ``text`` is the
        reply's content; ``meta["message"]`` the assistant message (with ``tool_calls`` when the
        model called tools), ready for ``env.step``. Token ids are re-tokenized locally."""
        jobs = [(c, None if params.seed is None else params.seed + i) for i, c in enumerate(conversations)]
        with ThreadPoolExecutor(max(1, min(self.concurrency, len(jobs)))) as pool:
            return list(pool.map(lambda j: self._chat(j[0], params, tools, j[1]), jobs))

    def load_adapter(self, name: str, path: str) -> None:
        """Load the PEFT adapter folder ``path`` (as the *server* sees it) under ``name`` through
        vLLM's ``/v1/load_lora_adapter``; later requests with ``model=name`` sample from it.
        Raises :class:`AdapterRefusedError` naming the cause and the fix."""
        r = self._post_raw("/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if r.status_code < 400:
            return
        msg = _error_message(r)
        if self.flavor == "llamacpp":
            raise AdapterRefusedError(
                f"{self.base_url} is a llama.cpp server, which cannot load a LoRA adapter while it "
                f"runs (HTTP {r.status_code}); use --rollout.sampler llamacpp, which starts its own "
                "llama-server processes and restarts them on every update")
        if r.status_code in (404, 405):
            raise AdapterRefusedError(
                f"{self.base_url} has no /load_lora_adapter endpoint (HTTP {r.status_code}); start "
                "vLLM with --enable-lora --max-lora-rank R and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
        raise AdapterRefusedError(
            f"{self.base_url} refused LoRA adapter {name!r} from {path} (HTTP {r.status_code}: {msg}); "
            "check that vLLM's --max-lora-rank is >= the adapter's rank, that the server can read "
            "that folder (same path on a shared filesystem: --rollout.adapter-dir) and that it "
            "serves the adapter's base model")

    def unload_adapter(self, name: str) -> None:
        """Unload adapter ``name`` (best effort: an old adapter left loaded only costs memory)."""
        try:
            self._post_raw("/unload_lora_adapter", {"lora_name": name})
        except OpenAIBackendError:
            pass

    def close(self) -> None:
        self._client.close()

    # ---- completions -------------------------------------------------------------------------
    def _body(self, params: SamplingParams, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                                "temperature": params.temperature, "top_p": params.top_p}
        if params.top_k or self.flavor == "llamacpp":  # llama.cpp's default would be 40
            body["top_k"] = params.top_k  # an extension vLLM, SGLang and llama.cpp accept
        if self.flavor == "llamacpp":
            # llama.cpp's default chain adds min-p, penalties, ...: sample from exactly
            # softmax(logits / T) cut by top-k and top-p, in the order transformers applies them
            body["samplers"] = ["temperature", "top_k", "top_p"]
            body["post_sampling_probs"] = self.post_sampling_logprobs
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = int(seed)
        return body

    def _complete(self, prompt: list[int], params: SamplingParams, seed: int | None) -> Generation:
        body = self._body(params, seed) | {"logprobs": 1, "return_tokens_as_token_ids": True}
        mode = "text" if self._token_prompts == "never" else "tokens"
        if mode == "tokens":
            try:
                data = self._post("/completions", body | {"prompt": list(prompt)})
            except OpenAIBackendError as e:
                if self._token_prompts == "always" or not _rejects_token_prompt(e):
                    raise
                with self._lock:
                    self._token_prompts = "never"  # remember: this server wants text
                mode = "text"
        if mode == "text":
            text_prompt = self.tokenizer.decode(prompt, skip_special_tokens=False)
            data = self._post("/completions", body | {"prompt": text_prompt})
        choice = _first_choice(data)
        text = choice.get("text") or ""
        lp = choice.get("logprobs") or {}
        if isinstance(lp.get("content"), list) and all("id" in x for x in lp["content"]):
            # llama.cpp: one entry per sampled token with its id, and "logprob" (pre-sampling)
            # or "prob" (post_sampling_probs: the distribution it was drawn from)
            ids = [int(x["id"]) for x in lp["content"]]
            logprobs = [float(x["logprob"]) if "logprob" in x else math.log(max(float(x["prob"]), 1e-45))
                        for x in lp["content"]]
            source = "server"
        else:
            ids, logprobs, source = self._output_ids(text, lp.get("tokens"), lp.get("token_logprobs"))
        if source != "retokenized":
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Generation(ids, logprobs, text, _finish(choice.get("finish_reason")),
                          meta={"prompt_mode": mode, "token_ids_source": source,
                                "usage": data.get("usage")})

    def _output_ids(self, text: str, tokens: list[str] | None, logprobs: list[float] | None
                    ) -> tuple[list[int], list[float], str]:
        lps = [float(x) if x is not None else 0.0 for x in (logprobs or [])]
        if tokens:
            m = [_TOKEN_ID_RE.match(t or "") for t in tokens]
            if all(m):
                return [int(x.group(1)) for x in m], lps, "server"
            ids = []
            for piece in tokens:
                enc = self.tokenizer.encode(piece, add_special_tokens=False) if piece else []
                if len(enc) != 1:
                    break
                ids.append(enc[0])
            else:
                if self.tokenizer.decode(ids, skip_special_tokens=False) == text:
                    return ids, lps, "pieces"
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return ids, (lps if len(lps) == len(ids) else []), "retokenized"

    # ---- chat ----------------------------------------------------------------------------------
    def _chat(self, messages: list[dict[str, Any]], params: SamplingParams,
              tools: list[dict[str, Any]] | None, seed: int | None) -> Generation:
        body = self._body(params, seed) | {"messages": messages, "logprobs": True}
        if tools:
            body["tools"] = tools
        data = self._post("/chat/completions", body)
        choice = _first_choice(data)
        msg = dict(choice.get("message") or {})
        content = msg.get("content") or ""
        ids = list(self.tokenizer.encode(content, add_special_tokens=False))
        lp_items = ((choice.get("logprobs") or {}).get("content")) or []
        lps = [float(x.get("logprob", 0.0)) for x in lp_items]
        message = {"role": "assistant", "content": content}
        if msg.get("tool_calls"):
            message["tool_calls"] = msg["tool_calls"]
        return Generation(ids, lps if len(lps) == len(ids) else [], content,
                          _finish(choice.get("finish_reason")),
                          meta={"message": message, "tool_calls": msg.get("tool_calls") or [],
                                "token_ids_source": "retokenized", "usage": data.get("usage")})

    # ---- HTTP ------------------------------------------------------------------------------------
    def _post_raw(self, path: str, body: dict[str, Any]) -> Any:
        """POST with retries on connection errors only; the response whatever its status."""
        import httpx

        transport = (httpx.TransportError, httpx.TimeoutException)
        try:
            return retrying(self.max_retries + 1, backoff_s=self.backoff_s,
                            on_exception=transport)(self._client.post, path, json=body)
        except transport as e:
            raise OpenAIBackendError(f"{self.base_url}{path} did not answer after {self.max_retries + 1} "
                                     f"attempts ({type(e).__name__}: {e}); is the server running at "
                                     f"{self.base_url}?") from e

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on connection errors and transient statuses (waiting what the
        server's ``Retry-After`` says, at most 30 s, when it names seconds); the JSON answer."""
        import httpx

        transport = (httpx.TransportError, httpx.TimeoutException)

        def transient(r: Any) -> bool:
            # llama-cpp-python answers request validation errors with HTTP 500: not transient
            return r.status_code in _RETRY_STATUS and "validation error" not in r.text[:500].lower()

        def retry_after(state: Any) -> float | None:
            ra = None if state.outcome.failed else state.outcome.result().headers.get("retry-after")
            return min(float(ra), 30.0) if ra and ra.replace(".", "", 1).isdigit() else None

        def failed(last: str) -> OpenAIBackendError:
            return OpenAIBackendError(f"{self.base_url}{path} failed after {self.max_retries + 1} "
                                      f"attempts; last error: {last}. Is the server running and "
                                      f"reachable at {self.base_url}?")

        try:
            r = retrying(self.max_retries + 1, backoff_s=self.backoff_s, on_exception=transport,
                         on_result=transient, wait=retry_after)(self._client.post, path, json=body)
        except transport as e:
            raise failed(f"{type(e).__name__}: {e}") from e
        if r.status_code < 400:
            try:
                return r.json()
            except ValueError as e:
                raise OpenAIBackendError(f"{self.base_url}{path} answered non-JSON: "
                                         f"{r.text[:200]!r}") from e
        if transient(r):
            raise failed(f"HTTP {r.status_code}: {r.text[:200]}")
        raise self._http_error(path, r)

    def _http_error(self, path: str, r: Any) -> OpenAIBackendError:
        msg = _error_message(r)
        if r.status_code in (401, 403):
            return OpenAIAuthError(f"{self.base_url} refused the credentials (HTTP {r.status_code}: "
                                   f"{msg}); pass api_key=... / --api-key or set OPENAI_API_KEY")
        if r.status_code == 404 and "model" in msg.lower() or (
                r.status_code == 400 and re.search(r"model.*(not exist|not found|unknown)", msg, re.I)):
            served = self._served_models()
            return ModelNotServedError(f"{self.base_url} does not serve model {self.model!r} ({msg}); "
                                       f"it serves: {served or 'unknown'}; pass one of those as the model")
        return OpenAIBackendError(f"{self.base_url}{path} answered HTTP {r.status_code}: {msg}")

    def _served_models(self) -> list[str] | None:
        try:
            r = self._client.get("/models")
            if r.status_code == 200:
                return [m.get("id") for m in r.json().get("data", [])]
        except Exception:  # noqa: BLE001 - only used to improve an error message
            pass
        return None

    def _verify_model(self) -> None:
        import httpx

        try:
            r = self._client.get("/models")
        except httpx.HTTPError as e:
            raise OpenAIBackendError(f"cannot reach an OpenAI-compatible server at {self.base_url} "
                                     f"({type(e).__name__}: {e}); start one (e.g. `vllm serve MODEL` "
                                     f"or `python -m llama_cpp.server --model FILE.gguf`) or fix "
                                     f"base_url") from e
        if r.status_code in (401, 403):
            raise self._http_error("/models", r)
        if r.status_code != 200:
            return  # servers without /models: let the first request tell
        data = r.json().get("data", [])
        served = [m.get("id") for m in data]
        if self.flavor == "auto" and any(m.get("owned_by") == "llamacpp" for m in data):
            self.flavor = "llamacpp"
        if served and self.model not in served:
            raise ModelNotServedError(f"{self.base_url} does not serve model {self.model!r}; it "
                                      f"serves: {served}; pass one of those as the model")

    def _load_tokenizer(self, tokenizer: Any) -> Any:
        from agentsd.policy.models import ModelNotFoundError, load_tokenizer

        if tokenizer is not None and not isinstance(tokenizer, str):
            return tokenizer
        try:
            return load_tokenizer(tokenizer or self.model)
        except ModelNotFoundError as e:
            raise ModelNotFoundError(
                f"the openai backend renders prompts locally and needs the served model's "
                f"tokenizer; {e}. Pass tokenizer=NAME_OR_PATH (--tokenizer) naming it") from e


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices") or []
    if not choices:
        raise OpenAIBackendError(f"the server answered without choices: {str(data)[:200]}")
    return choices[0]


def _finish(reason: Any) -> str:
    return {"stop": "stop", "length": "length", "tool_calls": "stop", "eos": "stop"}.get(
        str(reason), "abort" if reason else "stop")


def _error_message(r: Any) -> str:
    try:
        d = r.json()
        e = d.get("error", d.get("detail", d))
        if isinstance(e, dict):
            return str(e.get("message", e))[:300]
        return str(e)[:300]
    except ValueError:
        return r.text[:300]


def _rejects_token_prompt(e: Exception) -> bool:
    # servers that only take text prompts answer 400/422 (llama-cpp-python: 500 with a
    # validation error) about the prompt's type
    s = str(e)
    return ("HTTP 400" in s or "HTTP 422" in s or "validation error" in s.lower()) and "prompt" in s.lower()


class OpenAIPool:
    """Several OpenAI-compatible servers as one :class:`~agentsd.policy.base.Policy`: prompt
    ``i`` of a batch goes to server ``i % len(servers)``, all requests in flight at once. The
    per-request seed is ``params.seed + i`` whatever the number of servers, so a batch samples
    the same tokens from one server or from four identical ones.

        pool = OpenAIPool([OpenAIPolicy("m", base_url=u, tokenizer=tok) for u in urls])
        gens = pool.generate(prompts, params)
    """

    def __init__(self, clients: list[OpenAIPolicy]) -> None:
        if not clients:
            raise ValueError("OpenAIPool needs at least one server")
        self.clients = clients
        self.tokenizer = clients[0].tokenizer
        self.context_length = clients[0].context_length

    @property
    def model_id(self) -> str:
        return self.clients[0].model_id

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One completion per prompt, spread round-robin over the servers."""
        if not prompts:
            return []
        n = len(self.clients)
        jobs = [(self.clients[i % n], p, None if params.seed is None else params.seed + i)
                for i, p in enumerate(prompts)]
        width = min(sum(c.concurrency for c in self.clients), len(jobs))
        with ThreadPoolExecutor(width) as pool:
            return list(pool.map(lambda j: j[0]._complete(j[1], params, j[2]), jobs))

    def use_model(self, name: str) -> None:
        """Send later requests with ``model=name`` (e.g. a freshly loaded adapter)."""
        for c in self.clients:
            c.model, c.model_id = name, f"openai:{name}"

    def close(self) -> None:
        for c in self.clients:
            c.close()
