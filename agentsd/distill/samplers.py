"""Who samples the training rollouts, how it follows the trainer's weights, and sampling one step
ahead of the update.

``--rollout.sampler`` picks the engine (one factory, :func:`build_sampler`):

- ``hf``: transformers in the trainer's process, on the student itself (today's default path);
- ``vllm``: the in-process vLLM engine; after every update the student's weights are pushed into
  it (LoRA projections merged and renamed to Hugging Face names, :func:`~agentsd.policy.vllm.merged_hf_weights`);
- ``openai``: one or more OpenAI-compatible servers (``--rollout.servers URL[,URL]``, requests
  spread round-robin); after every update the adapter is saved as a PEFT folder and loaded on
  every server through vLLM's ``/v1/load_lora_adapter``, then requests name that adapter as model;
- ``llamacpp``: local llama.cpp servers the run starts itself (:class:`LlamaCppSampler`); after
  every update the student is written as GGUF (a LoRA student: a small adapter file over the base
  GGUF) and the servers restart on it. The fast sampler on a CPU.

Every sampler says which **log-prob convention** it returns (:data:`LOGPROBS`), and it is checked
against what the trainer's importance weight ``ρ = πθ / π_sampler`` needs: the trainer scores the
student with ``log_softmax(logits / T)``, so at ``T ≠ 1``, top-p < 1 or top-k > 0 the sampler must
report the log-probs of the distribution it drew from (``processed``); a ``raw`` sampler there
is refused before any work with a one-line error naming the fix. The ``openai`` sampler also
*measures* the convention on start: it samples a few tokens at the training settings, scores them
with the trainer's own model both ways, and refuses a server whose numbers match neither (another
model, or an adapter that did not load) or match the other convention.

``--rollout.overlap`` (:class:`RolloutStream`) samples step k+1's rollouts in a thread while step
k updates, with the weights from before that update: one step off-policy, corrected by the same
importance weight. Each trajectory records ``meta["policy_version"]`` (updates its sampler's
weights had seen) and ``meta["staleness"]`` (updates behind the weights it trains), and the
metrics ``rollout/staleness``. The prefetched rollouts are saved in the checkpoint, so a resumed
run equals an uninterrupted one. With the ``hf`` sampler the thread samples from a snapshot copy
of the student (memory x2); on a CPU the two threads share the same cores and the step is not
faster; the option is meant for the server samplers and GPUs.

    sampler = build_sampler(cfg, model, tokenizer, policy, run_dir)   # after a resume's load
    stream = RolloutStream(sampler, roll, cfg.rollout.overlap, cfg.steps, state.get("prefetch"))
    for step ...:
        trajs, summary = stream.take(step)   # sampled now, or during the last update
        stream.prefetch(step + 1)            # overlap: start the next step's sampling ...
        update(...)                          # ... while this runs
        stream.after_update(model, step)     # join it, push the new weights to the sampler
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agentsd.trajectory import Trajectory

__all__ = ["SAMPLERS", "LOGPROBS", "SamplerError", "needs_processed", "check_logprobs",
           "check_settings", "preflight", "build_sampler", "Sampler", "HFSampler", "VLLMSampler",
           "OpenAISampler", "LlamaCppSampler", "base_gguf", "processed_logprobs", "probe_logprobs", "RolloutStream"]

#: sampler name -> what it is
SAMPLERS = {
    "hf": "transformers in the trainer's process (the student itself)",
    "vllm": "the in-process vLLM engine, weights pushed after every update (GPU)",
    "openai": "OpenAI-compatible servers (vLLM serve), the LoRA adapter loaded after every update",
    "llamacpp": "local llama.cpp servers this run starts on a GGUF of the student, restarted after "
                "every update (CPU)",
}

#: log-prob conventions a sampler can return
LOGPROBS = {
    "processed": "log-probs of the distribution the token was drawn from (after temperature, "
                 "top-k and top-p, renormalized): hf; vLLM with logprobs_mode=processed_logprobs",
    "raw": "log_softmax of the model's logits, before temperature and truncation: vLLM's default",
}


class SamplerError(RuntimeError):
    """A sampler that cannot serve this run; the message names the cause and the fix."""


def needs_processed(temperature: float, top_p: float, top_k: int = 0) -> bool:
    """Whether raw and processed log-probs differ at these settings (greedy scores at T = 1)."""
    return (temperature not in (0.0, 1.0)) or top_p < 1.0 or top_k > 0


def check_logprobs(sampler: str, convention: str, temperature: float, top_p: float,
                   top_k: int = 0) -> None:
    """Refuse a sampler whose log-probs would make the importance weights wrong.

    >>> check_logprobs("openai", "raw", 1.0, 1.0)      # raw == processed at T=1, top-p 1
    >>> check_logprobs("openai", "raw", 0.7, 1.0)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    SamplerError: raw log-probs at temperature 0.7 need processed ones
    """
    if convention not in LOGPROBS:
        raise SamplerError(f"unknown log-prob convention {convention!r}; one of {sorted(LOGPROBS)}")
    if convention == "raw" and needs_processed(temperature, top_p, top_k):
        fix = ("start vLLM with --logprobs-mode processed_logprobs and pass "
               "--rollout.server-logprobs processed" if sampler == "openai" else
               "use vLLM >= 0.10.2 (logprobs_mode=processed_logprobs)")
        raise SamplerError(f"rollout.sampler={sampler!r} returns raw log-probs but "
                           f"rollout.temperature={temperature}, top_p={top_p} need the sampling "
                           f"distribution's (processed) ones for exact importance weights: {fix}, "
                           "or train at temperature 1 and top-p 1")


def check_settings(rs: Any) -> None:
    """Config-time checks of a ``RolloutSettings``' sampler fields that relate fields (no
    network, no model); ``sampler`` and ``server_logprobs`` are declared choices."""
    if rs.sampler == "openai":
        if not rs.servers:
            raise ValueError("RolloutSettings.servers: rollout.sampler='openai' needs at least one "
                             "server, e.g. --rollout.servers http://127.0.0.1:8000/v1")
        bad = [u for u in rs.servers if not str(u).startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"RolloutSettings.servers must be http(s) URLs, got {bad}")
        try:
            check_logprobs("openai", rs.server_logprobs, rs.temperature, rs.top_p)
        except SamplerError as e:
            raise ValueError(f"RolloutSettings.server_logprobs: {e}") from None


def preflight(cfg: Any, world_size: int = 1) -> None:
    """Checks of this machine and the network, run by the trainer before any model is loaded
    (not at config time: a run's config must still load where it cannot run, e.g. for export):
    vLLM is installed for ``vllm``; for ``openai`` every server answers ``/models`` (and serves
    ``rollout.server_model``) and the run trains a LoRA adapter (what the servers can load)."""
    rs = cfg.rollout
    if rs.overlap and world_size > 1:
        raise SamplerError("rollout.overlap under torchrun is not supported yet (each rank's "
                           "prefetched rollouts would have to be checkpointed); drop --rollout.overlap")
    if rs.sampler == "vllm" and cfg.algo != "sft":
        from agentsd.policy.vllm import vllm_missing_message

        msg = vllm_missing_message()
        if msg:
            raise SamplerError(f"rollout.sampler='vllm': {msg}")
    if rs.sampler == "llamacpp" and cfg.algo != "sft":
        from agentsd.policy.llamacpp import LlamaCppError, find_server_binary

        try:
            find_server_binary(rs.llamacpp_bin)
            base_gguf(cfg)
        except LlamaCppError as e:
            raise SamplerError(f"rollout.sampler='llamacpp': {e}") from None
    if rs.sampler != "openai" or cfg.algo == "sft":
        return
    if not cfg.model.lora:
        raise SamplerError("rollout.sampler='openai' loads the trained LoRA adapter into the servers; "
                           "full fine-tuning (model.lora=false) needs --rollout.sampler hf or vllm")
    import httpx

    for url in rs.servers:
        try:
            r = httpx.get(url.rstrip("/") + "/models", timeout=10.0)
        except httpx.HTTPError as e:
            raise SamplerError(f"rollout server {url} does not answer ({type(e).__name__}); start it "
                               "(vllm serve MODEL --enable-lora --max-lora-rank R, with "
                               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) or fix --rollout.servers") from None
        if r.status_code == 200 and rs.server_model:
            served = [m.get("id") for m in r.json().get("data", [])]
            if served and rs.server_model not in served:
                raise SamplerError(f"rollout server {url} serves {served}, not "
                                   f"rollout.server_model={rs.server_model!r}; pass one of those")


# ---------------------------------------------------------------------------------------------
# samplers

class Sampler:
    """What the trainer needs from a sampler: a policy to roll out with, the log-prob convention
    it returns, and ``sync`` to follow the trainer's weights (``version`` = updates seen)."""

    name = ""
    logprobs = "processed"

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        #: what held-out evaluation runs on: the sampler itself (it follows every update)
        self.eval_policy = policy
        self.version = 0

    def sync(self, model: Any, version: int) -> None:
        """Make the next rollouts sample from ``model`` as it is now (after ``version`` updates)."""
        self.version = version

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close is not None:
            close()


class HFSampler(Sampler):
    """The student in this process: the trainer's own policy (nothing to sync), or with
    ``snapshot`` (overlap) a copy that samples while the student updates, refreshed by copying
    the trainable tensors after each update."""

    name = "hf"

    def __init__(self, policy: Any, snapshot: bool = False) -> None:
        super().__init__(policy)  # evaluation stays on the trainer's own policy
        self.snapshot = snapshot
        if snapshot:
            from agentsd.policy.hf import HFPolicy

            frozen = copy.deepcopy(policy.model)
            frozen.requires_grad_(False)
            # its own tokenizer too: the main thread renders teacher rows while this one samples
            self.policy = HFPolicy(frozen, copy.deepcopy(policy.tokenizer), model_id=policy.model_id,
                                   eos_token_ids=policy.eos_token_ids,
                                   context_length=policy.context_length)

    def sync(self, model: Any, version: int) -> None:
        import torch

        if self.snapshot:
            dst = dict(self.policy.model.named_parameters())
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if p.requires_grad:
                        dst[n].copy_(p)
        self.version = version


class VLLMSampler(Sampler):
    """The in-process vLLM engine; ``sync`` pushes the merged weights."""

    name = "vllm"

    def __init__(self, cfg: Any) -> None:
        from agentsd.policy.vllm import VLLMPolicy

        rs = cfg.rollout
        super().__init__(VLLMPolicy(cfg.model.name, seed=cfg.seed,
                                    gpu_memory_utilization=rs.vllm_gpu_memory))
        self.logprobs = self.policy.logprobs
        self._pushed = False
        check_logprobs("vllm", self.logprobs, rs.temperature, rs.top_p)

    def sync(self, model: Any, version: int) -> None:
        # the first push carries every weight (model.init_from may have changed any of them);
        # later ones only the LoRA-merged projections, the only weights an update changes
        self.policy.push_weights(model, changed_only=self._pushed)
        self._pushed = True
        self.version = version


class OpenAISampler(Sampler):
    """OpenAI-compatible servers; ``sync`` saves the PEFT adapter (the format of a checkpoint's
    ``adapter/`` folder) and loads it on every server under a fresh name."""

    name = "openai"

    def __init__(self, cfg: Any, tokenizer: Any, adapter_dir: Path) -> None:
        from agentsd.policy.openai import OpenAIPolicy, OpenAIPool

        rs = cfg.rollout
        clients = [OpenAIPolicy(rs.server_model or _served_model(u), base_url=u, tokenizer=tokenizer,
                                timeout_s=rs.server_timeout_s) for u in rs.servers]
        super().__init__(OpenAIPool(clients))
        self.logprobs = rs.server_logprobs
        self.adapter_dir = adapter_dir
        self.prefix = f"agentsd-{uuid.uuid4().hex[:6]}"  # a resumed run never meets its old names
        self.loaded: str | None = None

    def sync(self, model: Any, version: int) -> None:
        name = f"{self.prefix}-v{version}"
        folder = self.adapter_dir / name
        tmp = self.adapter_dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))  # as save_checkpoint writes <ckpt>/adapter
        tmp.rename(folder)
        for c in self.policy.clients:
            c.load_adapter(name, str(folder.resolve()))
        old = self.loaded
        self.policy.use_model(name)
        self.loaded = name
        if old:
            for c in self.policy.clients:
                c.unload_adapter(old)
            shutil.rmtree(self.adapter_dir / old, ignore_errors=True)
        self.version = version


class LlamaCppSampler(Sampler):
    """Local llama.cpp servers (:mod:`agentsd.policy.llamacpp`) that this run starts and stops.
    ``sync`` writes the student for llama.cpp and restarts every server on it: a LoRA student as
    its base weights (adapter off; after ``model.init_from``, the merged base) written once into a
    copy of the model's GGUF in ``rollout.llamacpp_dtype``, plus a small LoRA GGUF per update; a
    fully fine-tuned student as a whole GGUF per update. (The model's own quantized file is not
    served as is: its quantized matmuls put the server 0.05-0.08 nats per token away from the
    trainer's dequantized weights, and they are not faster on a CPU than F16.) The servers return
    the log-probs of the distribution they sampled from (``post_sampling_probs``: processed),
    sampling with temperature, top-k and top-p only."""

    name = "llamacpp"
    logprobs = "processed"

    def __init__(self, cfg: Any, tokenizer: Any, folder: Path) -> None:
        import math

        import torch

        from agentsd.policy.llamacpp import LlamaServer, find_server_binary

        rs = cfg.rollout
        self.cfg, self.tokenizer, self.folder = cfg, tokenizer, folder
        self.gguf = base_gguf(cfg)
        per = math.ceil(max(rs.tasks_per_step * rs.samples_per_task, rs.eval_tasks) / rs.llamacpp_servers)
        binary = find_server_binary(rs.llamacpp_bin)
        # the KV cache is parallel x ctx tokens, allocated up front: a slot needs one episode
        ctx = rs.llamacpp_ctx or rs.max_episode_tokens + rs.max_tokens + 256
        self.servers = [LlamaServer(binary, parallel=min(per, rs.llamacpp_parallel), ctx_per_slot=ctx,
                                    threads=rs.llamacpp_threads or torch.get_num_threads())
                        for _ in range(rs.llamacpp_servers)]
        self.base: Path | None = None  # a LoRA student's base GGUF, written by the first sync
        self.served: Path | None = None  # the file the last sync wrote (adapter or whole student)
        super().__init__(None)  # the policy, a pool over the servers' new ports, comes with every sync

    def sync(self, model: Any, version: int) -> None:
        from agentsd.policy.llamacpp import SERVED_NAME, base_weights, write_gguf, write_lora_gguf
        from agentsd.policy.openai import OpenAIPolicy, OpenAIPool
        from agentsd.policy.vllm import merged_hf_weights

        rs = self.cfg.rollout
        if hasattr(model, "peft_config"):
            if self.base is None:  # the adapter's base, as this process holds it, written once
                self.base = write_gguf(base_weights(model), self.gguf, self.folder / "base.gguf",
                                       rs.llamacpp_dtype)
            path, lora = self.base, write_lora_gguf(model, self.base, self.folder / f"lora-v{version}.gguf")
        else:
            path, lora = write_gguf(merged_hf_weights(model), self.gguf,
                                    self.folder / f"student-v{version}.gguf", rs.llamacpp_dtype), None
        for server in self.servers:
            server.start(path, lora)
        if self.policy is not None:
            self.policy.close()
        self.policy = self.eval_policy = OpenAIPool([
            OpenAIPolicy(SERVED_NAME, base_url=s.url, tokenizer=self.tokenizer, flavor="llamacpp",
                         post_sampling_logprobs=True, verify_model=False, timeout_s=rs.server_timeout_s,
                         concurrency=s.parallel) for s in self.servers])
        previous, self.served = self.served, lora or path
        if previous is not None and previous != self.served:
            previous.unlink(missing_ok=True)
        self.version = version

    def close(self) -> None:
        if self.policy is not None:
            self.policy.close()
        for server in self.servers:
            server.stop()
        for f in (self.served, self.base):
            if f is not None:
                f.unlink(missing_ok=True)


def base_gguf(cfg: Any) -> Path:
    """The GGUF file of the student's base model: ``rollout.llamacpp_gguf``, else the model's own
    GGUF file (the embedded ``smollm2``); :class:`~agentsd.policy.llamacpp.LlamaCppError` naming
    the fix otherwise."""
    from agentsd.policy.llamacpp import LlamaCppError

    if cfg.rollout.llamacpp_gguf:
        p = Path(cfg.rollout.llamacpp_gguf).expanduser()
        if not p.is_file():
            raise LlamaCppError(f"rollout.llamacpp_gguf={str(p)!r} is not a file")
        return p
    if cfg.model.name != "tiny-random":
        from agentsd.policy.models import resolve_model

        ref = resolve_model(cfg.model.name)
        if ref.gguf_file:
            return Path(ref.path) / ref.gguf_file
    raise LlamaCppError(f"model {cfg.model.name!r} has no GGUF file; convert it with llama.cpp's "
                        "convert_hf_to_gguf.py and pass --rollout.llamacpp-gguf FILE")


def _served_model(url: str) -> str:
    import httpx

    try:
        data = httpx.get(url.rstrip("/") + "/models", timeout=10.0).json().get("data") or []
    except (httpx.HTTPError, ValueError) as e:
        raise SamplerError(f"rollout server {url} does not list its models ({type(e).__name__}); "
                           "pass --rollout.server-model NAME") from None
    if not data:
        raise SamplerError(f"rollout server {url} lists no model; pass --rollout.server-model NAME")
    return data[0]["id"]


def build_sampler(cfg: Any, model: Any, tokenizer: Any, policy: Any, run_dir: Path,
                  version: int = 0) -> Sampler:
    """The configured sampler, already following ``model`` (which has seen ``version`` updates:
    0, or a resumed checkpoint's step) and, for ``openai``, with its log-prob convention
    measured against ``model``. ``policy`` is the trainer's in-process policy over ``model``."""
    rs = cfg.rollout
    sampler: Sampler
    if rs.sampler == "hf" or cfg.algo == "sft":
        sampler = HFSampler(policy, snapshot=rs.overlap and cfg.algo != "sft")
        sampler.version = version
        return sampler
    if rs.sampler == "vllm":
        sampler = VLLMSampler(cfg)  # checks the engine's log-prob convention once it is built
    elif rs.sampler == "llamacpp":
        folder = run_dir / "sampler_gguf"
        folder.mkdir(parents=True, exist_ok=True)
        sampler = LlamaCppSampler(cfg, copy.deepcopy(tokenizer), folder)
    else:
        check_logprobs("openai", rs.server_logprobs, rs.temperature, rs.top_p)
        folder = Path(rs.adapter_dir) if rs.adapter_dir else run_dir / "sampler_adapter"
        folder.mkdir(parents=True, exist_ok=True)
        sampler = OpenAISampler(cfg, copy.deepcopy(tokenizer), folder)  # used from the prefetch thread
    try:
        sampler.sync(model, version)
        if rs.sampler in ("openai", "llamacpp") and rs.server_check:
            from agentsd.policy.base import SamplingParams

            params = SamplingParams(temperature=rs.temperature, top_p=rs.top_p, max_tokens=8, seed=cfg.seed)
            for client in sampler.policy.clients:
                probe_logprobs(client, model, tokenizer, params, sampler.logprobs)
    except Exception:
        sampler.close()
        raise
    return sampler


# ---------------------------------------------------------------------------------------------
# the log-prob probe

def processed_logprobs(logits_TV: Any, ids_T: Any, temperature: float, top_p: float = 1.0,
                       top_k: int = 0) -> Any:
    """Log-probs of ``ids_T`` under the distribution a sampler draws from: ``logits / T``, then
    top-k, then top-p (a token is dropped when the mass before it reaches ``top_p``),
    renormalized. ``temperature=0`` (greedy) scores at T = 1. Shapes: ``logits_TV`` (T, V),
    ``ids_T`` (T,) -> (T,)."""
    import torch

    x = logits_TV.float() / (temperature if temperature > 0 else 1.0)
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        srt, order = torch.sort(x, dim=-1, descending=True)
        p = torch.softmax(srt, dim=-1)
        srt = srt.masked_fill(p.cumsum(-1) - p >= top_p, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(-1, order, srt)
    return torch.log_softmax(x, dim=-1).gather(-1, ids_T[:, None])[:, 0]


def probe_logprobs(client: Any, model: Any, tokenizer: Any, params: Any, declared: str,
                   tol: float = 0.1) -> dict[str, float]:
    """Sample a few tokens from ``client`` at ``params`` and score them with ``model`` both ways;
    raise :class:`SamplerError` when the server's log-probs match neither convention (mean
    absolute difference above ``tol`` nats: another model, or weights that did not load) or
    match the other one than ``declared``. Returns the two distances."""
    import torch

    prompt = tokenizer.encode("Sokoban: push every box onto a goal. Your move:", add_special_tokens=False)
    [g] = client.generate([prompt], params)
    if not g.token_ids or len(g.logprobs) != len(g.token_ids):
        raise SamplerError(f"rollout server {client.base_url} returned no per-token log-probs "
                           "(needs the completions endpoint with logprobs and token ids: vLLM serve)")
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        ids = torch.tensor([prompt + g.token_ids], device=dev)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    finally:
        if was_training:
            model.train()
    tgt = ids[0, len(prompt):]
    server = torch.tensor(g.logprobs, device=dev)
    d = {"raw": float((processed_logprobs(logits, tgt, 1.0) - server).abs().mean()),
         "processed": float((processed_logprobs(logits, tgt, params.temperature, params.top_p,
                                                params.top_k) - server).abs().mean())}
    best = min(d, key=d.get)
    where = f"rollout server {client.base_url} (model {client.model!r})"
    if d[best] > tol:
        raise SamplerError(f"{where} disagrees with the trainer's model (mean |Δ log-prob| raw "
                           f"{d['raw']:.3f}, processed {d['processed']:.3f} nats): it must serve "
                           "the student's base model (with model.init_from, the merged export: "
                           "agentsd export RUN --merge OUT) and load its adapter")
    if best != declared and abs(d["raw"] - d["processed"]) > tol / 2:
        raise SamplerError(f"{where} returns {best} log-probs, not rollout.server_logprobs="
                           f"{declared!r} (mean |Δ| raw {d['raw']:.3f}, processed "
                           f"{d['processed']:.3f}): pass --rollout.server-logprobs {best}, or "
                           "restart vLLM with --logprobs-mode processed_logprobs")
    return d


# ---------------------------------------------------------------------------------------------
# overlap

class RolloutStream:
    """Each step's rollouts, sampled at the start of the step or (``overlap``) during the previous
    step's update; see the module docstring. ``roll(step)`` samples step ``step``'s rollouts with
    ``sampler.policy`` and returns ``(trajectories, summary)``; ``pending`` is a checkpoint's
    :meth:`pending_state`."""

    def __init__(self, sampler: Sampler, roll: Callable[[int], tuple[list[Trajectory], Any]],
                 overlap: bool, last_step: int, pending: str | None = None) -> None:
        self.sampler, self.roll, self.overlap, self.last_step = sampler, roll, overlap, last_step
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agentsd-prefetch") if overlap else None
        self._future: Future | None = None
        self._future_meta: tuple[int, int, float] = (0, 0, 0.0)
        self._ready: tuple[int, int, list[Trajectory]] | None = None
        self._metrics: dict[str, float] = {}
        if pending:
            d = json.loads(pending)
            self._ready = (int(d["step"]), int(d["version"]),
                           [Trajectory.from_dict(t) for t in d["trajs"]])

    def take(self, step: int) -> tuple[list[Trajectory], Any]:
        """Step ``step``'s trajectories (trained by weights that have seen ``step - 1`` updates),
        each with ``meta["policy_version"]``, ``meta["staleness"]`` and ``meta["sampler"]``
        (name and log-prob convention)."""
        summary = None
        if self._ready is not None and self._ready[0] == step:
            _, version, trajs = self._ready
            self._ready = None
        else:
            t0 = time.perf_counter()
            version = self.sampler.version
            trajs, summary = self.roll(step)
            self._metrics["time/sampling_s"] = time.perf_counter() - t0
        for t in trajs:
            t.meta["policy_version"] = version
            t.meta["staleness"] = step - 1 - version
            t.meta["sampler"] = f"{self.sampler.name}:{self.sampler.logprobs}"  # e.g. openai:raw
        self._metrics["rollout/policy_version"] = float(version)
        self._metrics["rollout/staleness"] = float(step - 1 - version)
        return trajs, summary

    def prefetch(self, step: int) -> None:
        """With overlap, start sampling step ``step``'s rollouts now, with the current sampler
        weights (a no-op past the last step or without overlap)."""
        if self._pool is None or step > self.last_step:
            return
        self._future_meta = (step, self.sampler.version, time.perf_counter())
        self._future = self._pool.submit(self.roll, step)

    def after_update(self, model: Any, version: int) -> None:
        """Wait for the prefetch (its weights must not change under it), then push ``model``
        (``version`` updates) to the sampler."""
        if self._future is not None:
            t0 = time.perf_counter()
            trajs, _ = self._future.result()
            step, v, started = self._future_meta
            self._ready = (step, v, trajs)
            self._future = None
            self._metrics["time/prefetch_wait_s"] = time.perf_counter() - t0
            self._metrics["time/sampling_s"] = time.perf_counter() - started
        t0 = time.perf_counter()
        self.sampler.sync(model, version)
        # following the update: a server's adapter load, llama.cpp's write + restart (0 for hf)
        self._metrics["time/sampler_sync_s"] = time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        """``rollout/policy_version``, ``rollout/staleness`` and timings of the last step
        (``time/sampling_s``, ``time/prefetch_wait_s``, ``time/sampler_sync_s``)."""
        return dict(self._metrics)

    def pending_state(self) -> str | None:
        """The prefetched rollouts not yet trained on, as JSON for the checkpoint (``None`` when
        there are none)."""
        if self._ready is None:
            return None
        step, version, trajs = self._ready
        return json.dumps({"step": step, "version": version, "trajs": [t.to_dict() for t in trajs]})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.sampler.close()
