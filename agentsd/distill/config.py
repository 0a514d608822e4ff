"""Trainer configuration: frozen dataclasses that validate themselves, nested by concern.

A bad value fails at construction, before any model is loaded, with a message naming the field::

    >>> LossConfig(kind="jsd", alpha=2.0)
    Traceback (most recent call last):
    ...
    ValueError: LossConfig.alpha must be in [0, 1] (0 forward KL, 1 reverse KL), got 2.0

:mod:`agentsd.distill.flags` exposes every field as a ``--section.field`` flag (tyro) with
``--help`` text taken from the field's ``help`` metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsd.distill.config_fields import _check, _f, _nonneg, _pos_int
from agentsd.distill.config_loss import LossConfig, TeacherConfig
from agentsd.hints import TeacherContextConfig

__all__ = ["ModelConfig", "RolloutSettings", "LossConfig", "TeacherConfig", "OptimConfig",
           "DemoConfig", "SkillsConfig", "TrainConfig", "ALGOS", "config_to_dict", "config_from_dict",
           "read_config_file", "load_config", "resolve_device"]

#: training algorithms, all on the same loop: skill-conditioned OPD, plain OPSD (hints only),
#: GRPO on the env reward, rejection-sampling fine-tuning on successful samples, supervised
#: fine-tuning on demonstrations (the warm start)
ALGOS = ("opd", "opsd", "grpo", "rft", "sft")


def _check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that this machine has (torch is imported only
    for a CUDA request)."""
    import re

    _check(isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is not None,
           "ModelConfig", "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'", device)
    if device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= n:
            raise ValueError(f"ModelConfig.device {device!r}: this machine has "
                             f"{n or 'no'} CUDA device{'s' if n != 1 else ''} visible to torch "
                             f"{torch.__version__}; use --model.device cpu (or auto)")


def _probe_env(env_id: str, read: Any) -> Any:
    """``read(env)`` on ``env_id`` reset to its first train task; an unknown env id (or a
    failing env) raises a ``ValueError`` naming ``TrainConfig.rollout.env``."""
    import agentsd

    try:
        probe = agentsd.make(env_id)
        probe.reset(seed=agentsd.split_seeds(env_id, "train", 1)[0])
        out = read(probe)
        probe.close()
    except Exception as e:  # noqa: BLE001 - an unknown env id gets the registry's error
        raise ValueError(f"TrainConfig.rollout.env {env_id!r}: {e}") from e
    return out


def _env_has_reference(env_id: str) -> bool:
    """Whether ``env_id`` gives a reference step (``oracle_action()``) on a train task."""
    return _probe_env(env_id, lambda env: env.oracle_action() is not None)


#: views that ``env.privileged()`` fills (the others come from the oracle or the trainer)
_ENV_VIEWS = ("answer", "solution", "plan", "next_step", "hidden_tests", "notes")
#: views that ``TeacherContextConfig.exposure`` reveals in part (ATESD's reveal ratio)
_PARTLY_SHOWN = ("plan", "solution", "next_step")


def _env_views(env_id: str) -> set[str]:
    """The views ``env_id``'s ``privileged()`` fills on a train task."""
    p = _probe_env(env_id, lambda env: env.privileged())
    return {v for v in _ENV_VIEWS if getattr(p, v, None) not in (None, "", [], ())}


def _turn_limit(rollout: Any) -> int:
    """Turns an episode can have: ``rollout.max_turns`` capped by the env's own limit."""
    import agentsd

    try:
        own = agentsd.spec(rollout.env).max_turns
    except Exception as e:  # noqa: BLE001 - an unknown env id gets the registry's error
        raise ValueError(f"TrainConfig.rollout.env {rollout.env!r}: {e}") from e
    return min(rollout.max_turns, own) if own else rollout.max_turns


def resolve_device(device: str) -> str:
    """The torch device ``ModelConfig.device`` names (``auto``: ``cuda`` when available); under
    torchrun, ``auto`` and ``cuda`` mean this process's GPU (``cuda:LOCAL_RANK``)."""
    import os

    if device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


@dataclass(frozen=True)
class ModelConfig:
    """Which student to train and how."""

    name: str = _f("smollm2", "model: a short name (smollm2), a local path or hub id; "
                              "'tiny-random' builds a small random-weight Llama with the "
                              "smollm2 tokenizer (tests, smoke runs)")
    lora: bool = _f(True, "train a LoRA adapter (false: full fine-tuning)")
    lora_rank: int = _f(16, "LoRA rank")
    lora_alpha: float = _f(32.0, "LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = _f(0.0, "LoRA dropout (the teacher always runs with dropout off)")
    dtype: str = _f("auto", "parameter dtype: auto (bf16 autocast on CUDA with bf16, else "
                            "fp32), fp32 or bf16")
    device: str = _f("auto", "where the student, teacher scoring and losses run: auto (cuda "
                             "when a GPU is visible, else cpu), cpu, cuda or cuda:N")
    init_from: str = _f("", "start from an earlier run: a run folder (its latest checkpoint) or "
                            "a PEFT adapter folder; its adapter is merged into the base weights "
                            "and this run trains a fresh adapter on top (so the 'frozen' teacher "
                            "is the warm-started model)")
    gradient_checkpointing: bool = _f(False, "recompute each decoder layer's activations in "
                                             "the backward pass: activation memory of about one "
                                             "layer instead of all, for roughly a third more "
                                             "compute (long sequences, large micro-batches)")
    tiny_hidden: int = _f(32, "hidden size of the 'tiny-random' model")
    tiny_layers: int = _f(2, "layers of the 'tiny-random' model")
    fsdp: bool = _f(False, "full fine-tuning under torchrun: shard the student's weights, "
                           "gradients and optimizer state across the processes (FSDP2, a unit per "
                           "decoder layer) instead of a whole copy in each; needs model.lora=false; "
                           "a no-op in one process")

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and bool(self.name.strip()), "ModelConfig", "name",
               "must be a non-empty model name", self.name)
        _check(not (self.fsdp and self.lora), "ModelConfig", "fsdp",
               "shards full fine-tuning only (a LoRA adapter is small: plain data parallelism "
               "under torchrun is the tool); add --model.lora false or drop --model.fsdp", self.fsdp)
        _pos_int("ModelConfig", self, "lora_rank", "tiny_hidden", "tiny_layers")
        _check(self.lora_alpha > 0, "ModelConfig", "lora_alpha", "must be > 0", self.lora_alpha)
        _check(0 <= self.lora_dropout < 1, "ModelConfig", "lora_dropout", "must be in [0, 1)",
               self.lora_dropout)
        _check(self.dtype in ("auto", "fp32", "bf16"), "ModelConfig", "dtype",
               "must be 'auto', 'fp32' or 'bf16'", self.dtype)
        _check_device(self.device)
        if self.init_from:
            from agentsd.distill.checkpoint import resolve_init_from

            resolve_init_from(self.init_from)  # a bad folder fails here, before a model loads


@dataclass(frozen=True)
class RolloutSettings:
    """On-policy sampling: which env, how many tasks and samples per step, limits."""

    env: str = _f("Sokoban-Easy-v0", "registered env id to train on")
    tasks_per_step: int = _f(4, "distinct tasks (train-split seeds) per step")
    samples_per_task: int = _f(4, "samples per task (the GRPO group size G)")
    max_turns: int = _f(4, "turn limit per episode")
    max_tokens: int = _f(64, "max sampled tokens per turn")
    max_episode_tokens: int = _f(2048, "prompt + action token budget per episode")
    temperature: float = _f(1.0, "sampling temperature for training rollouts")
    top_p: float = _f(1.0, "nucleus sampling for training rollouts")
    eval_tasks: int = _f(8, "held-out (test split) tasks per evaluation")
    eval_temperature: float = _f(0.0, "sampling temperature for evaluation (0 = greedy)")
    eval_sampled: bool = _f(True, "also evaluate at temperature 1 (eval/success_t1): greedy "
                                  "success alone hides a policy that is right only sometimes")
    sampler: str = _f("hf", "what samples the training rollouts: hf (transformers in this "
                            "process), vllm (in-process vLLM engine, weights pushed after every "
                            "update; GPU) or openai (OpenAI-compatible servers, --rollout.servers; "
                            "the LoRA adapter is loaded through /v1/load_lora_adapter after every "
                            "update) or llamacpp (local llama.cpp servers this run starts, "
                            "restarted on the student's weights written as GGUF after every update)")
    servers: tuple[str, ...] = _f((), "openai sampler: server base URLs (e.g. "
                                      "http://127.0.0.1:8000/v1), requests spread across them")
    server_model: str = _f("", "openai sampler: the base model name the servers serve (default: "
                               "the first one each server lists)")
    server_logprobs: str = _f("raw", "openai sampler: which log-probs the servers return: raw "
                                     "(vLLM's default) or processed (vLLM --logprobs-mode "
                                     "processed_logprobs); temperature != 1 or top-p < 1 needs "
                                     "processed. Checked against the trainer's model on start")
    server_check: bool = _f(True, "openai sampler: on start, sample a few tokens from each server "
                                  "and check their log-probs against the trainer's model")
    server_timeout_s: float = _f(300.0, "openai sampler: seconds per request")
    adapter_dir: str = _f("", "openai sampler: folder the adapter is saved into for the servers "
                              "to load (they must read it at the same path; default "
                              "<out_dir>/sampler_adapter)")
    llamacpp_bin: str = _f("", "llamacpp sampler: the llama-server binary (default: "
                               "$AGENTSD_LLAMA_SERVER, else llama-server on PATH; "
                               "scripts/build_llama_server.sh builds one)")
    llamacpp_gguf: str = _f("", "llamacpp sampler: GGUF file of the student's base model (default: "
                                "the model's own GGUF, e.g. the embedded smollm2)")
    llamacpp_servers: int = _f(1, "llamacpp sampler: local llama-server processes, requests spread "
                                  "across them")
    llamacpp_threads: int = _f(0, "llamacpp sampler: threads per server (0: the trainer's torch "
                                  "thread count)")
    llamacpp_ctx: int = _f(0, "llamacpp sampler: context tokens per parallel slot (0: "
                              "max_episode_tokens + max_tokens + 256, the most an episode holds)")
    llamacpp_parallel: int = _f(16, "llamacpp sampler: parallel slots per server; its KV cache is "
                                    "parallel x ctx tokens (SmolLM2: 23 KB a token in f16)")
    llamacpp_dtype: str = _f("f16", "llamacpp sampler: f16 | f32, how the served weights are "
                                    "written (a LoRA adapter file is always f32)")
    vllm_gpu_memory: float = _f(0.3, "vllm sampler: share of GPU memory the engine may take")
    overlap: bool = _f(False, "sample step k+1's rollouts while step k updates (one step "
                              "off-policy, corrected by the importance weight; staleness in "
                              "rollout/staleness). hf: a second copy of the model and a thread, "
                              "no faster on a CPU; meant for the server samplers and GPUs")

    def __post_init__(self) -> None:
        _pos_int("RolloutSettings", self, "tasks_per_step", "samples_per_task", "max_turns",
                 "max_tokens", "max_episode_tokens", "eval_tasks", "llamacpp_servers", "llamacpp_parallel")
        _check(self.llamacpp_ctx >= 0, "RolloutSettings", "llamacpp_ctx", "must be >= 0 (0: the "
               "episode budget)", self.llamacpp_ctx)
        _check(self.llamacpp_threads >= 0, "RolloutSettings", "llamacpp_threads", "must be >= 0 "
               "(0: the trainer's torch thread count)", self.llamacpp_threads)
        _check(self.llamacpp_dtype in ("f32", "f16"), "RolloutSettings", "llamacpp_dtype",
               "must be f32 or f16", self.llamacpp_dtype)
        _nonneg("RolloutSettings", self, "temperature", "eval_temperature")
        _check(0 < self.top_p <= 1, "RolloutSettings", "top_p", "must be in (0, 1]", self.top_p)
        _check(isinstance(self.env, str) and bool(self.env), "RolloutSettings", "env",
               "must be a registered env id", self.env)
        from agentsd.distill.samplers import check_settings

        object.__setattr__(self, "servers", tuple(self.servers) if not isinstance(self.servers, str)
                           else tuple(u for u in self.servers.split(",") if u))
        check_settings(self)


@dataclass(frozen=True)
class DemoConfig:
    """Demonstrations for ``algo='sft'`` (the warm start)."""

    source: str = _f("oracle", "oracle (each env's oracle on train seeds) or a trajectory file "
                               "(.jsonl/.parquet; its successful episodes)")
    teacher_frac: float = _f(0.5, "share of demos rendered in the teacher's context (skills + the "
                                  "per-turn reference reply), so the teacher learns to use it")
    split: str = _f("train", "oracle demos: the env split whose seeds *and* kwargs they are drawn "
                             "from (e.g. ToolWorld-Lite-v0's 'warm': templates never trained or "
                             "evaluated on); never the held-out 'test' split")

    def __post_init__(self) -> None:
        _check(isinstance(self.source, str) and bool(self.source), "DemoConfig", "source",
               "must be 'oracle' or a trajectory file", self.source)
        _check(isinstance(self.split, str) and bool(self.split) and self.split != "test",
               "DemoConfig", "split", "must name a split of the env other than the held-out "
               "'test' split (demos from it would train on the evaluation tasks)", self.split)
        _check(0 <= self.teacher_frac <= 1, "DemoConfig", "teacher_frac", "must be in [0, 1]",
               self.teacher_frac)
        if self.source != "oracle":
            from agentsd.demos import load_demos

            load_demos(self.source)  # missing or empty file: fail before a model loads


#: summarizers a run's skill refresh can use (:mod:`agentsd.distill.skill_refresh`)
SKILL_SUMMARIZERS = ("deterministic", "llm", "openai")
#: teacher views measured acting at step 0 (``teacher_eval_views``)
ADVANTAGE_VIEWS = ("skills", "hints", "both")


@dataclass(frozen=True)
class SkillsConfig:
    """Dynamic skills (Skill-SD): every ``refresh_every`` steps the student's recent rollouts
    are summarized into the run's library, one saved version per refresh
    (``<run>/skills_versions/vNNN``); see :mod:`agentsd.distill.skill_refresh`."""

    refresh_every: int = _f(0, "summarize the student's recent rollouts into the run's skill "
                               "library every N steps (0 = off: the library stays as the run "
                               "started)")
    window: int = _f(4, "how many recent steps' rollouts a refresh summarizes (those not "
                        "summarized by an earlier refresh)")
    summarizer: str = _f("deterministic", "deterministic (offline, no model) | llm (the "
                                          "trainer's own model, in process) | openai (an "
                                          "OpenAI-compatible server: skills.base_url, skills.model)")
    base_url: str = _f("", "openai summarizer: the server's base URL (e.g. http://127.0.0.1:8000/v1)")
    model: str = _f("", "openai summarizer: the model name the server serves")
    max_new: int = _f(0, "most skills one refresh adds (0 = no cap; merged and replaced skills "
                         "do not count)")
    llm_max_tokens: int = _f(400, "llm/openai summarizer: tokens per answer")

    def __post_init__(self) -> None:
        for n in ("refresh_every", "max_new"):
            v = getattr(self, n)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 0, "SkillsConfig", n,
                   "must be an int >= 0", v)
        _pos_int("SkillsConfig", self, "window", "llm_max_tokens")
        _check(self.summarizer in SKILL_SUMMARIZERS, "SkillsConfig", "summarizer",
               f"must be one of {SKILL_SUMMARIZERS}", self.summarizer)
        _check(self.summarizer != "openai" or bool(self.base_url and self.model), "SkillsConfig",
               "summarizer", "'openai' needs --skills.base-url and --skills.model (or use "
               "--skills.summarizer deterministic)", self.summarizer)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and batching."""

    lr: float = _f(1e-4, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    grad_clip: float = _f(1.0, "max global gradient norm (0 = off)")
    lr_schedule: str = _f("constant", "learning rate over the run: constant, or linear decay to 0 "
                                      "at the last step (a short warm start then ends on a "
                                      "settled model instead of wherever the last step left it)")
    max_tokens_per_micro_batch: int = _f(4096, "padded tokens per forward/backward micro-batch "
                                                "(gradients accumulate over micro-batches)")
    updates_per_step: int = _f(1, "optimizer updates per rollout batch (>1 makes later updates "
                                  "off-policy; the IS weight corrects for it)")
    share_prefix: bool = _f(True, "compute the identical token prefixes of a micro-batch's rows "
                                  "once (system prompt, tools, task; a teacher's step-wise "
                                  "history) and reuse their keys/values, for the student (with "
                                  "gradients) and the teacher; the same numbers to float32 "
                                  "round-off (false: the unshared path)")
    share_prefix_min_tokens: int = _f(1024, "share only a forward that saves at least this many "
                                            "tokens (a smaller saving does not pay for the extra "
                                            "forwards; such forwards stay bit-identical to the "
                                            "unshared path)")
    memory_budget_gb: float = _f(0.0, "memory the update may use (GB): picks the micro-batch "
                                      "size (when max_tokens_per_micro_batch is left at its "
                                      "default) and gradient checkpointing (when too few tokens "
                                      "fit without it); 0 = auto, half the available RAM or 80% "
                                      "of the free GPU memory; < 0 = off (the flags as given)")

    def __post_init__(self) -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), "OptimConfig", "lr", "must be > 0", self.lr)
        _nonneg("OptimConfig", self, "weight_decay", "grad_clip")
        for n in ("beta1", "beta2"):
            _check(0 <= getattr(self, n) < 1, "OptimConfig", n, "must be in [0, 1)", getattr(self, n))
        _pos_int("OptimConfig", self, "max_tokens_per_micro_batch", "updates_per_step")
        _check(isinstance(self.share_prefix_min_tokens, int) and self.share_prefix_min_tokens >= 0,
               "OptimConfig", "share_prefix_min_tokens", "must be an int >= 0",
               self.share_prefix_min_tokens)
        _check(math.isfinite(self.memory_budget_gb), "OptimConfig", "memory_budget_gb",
               "must be a finite number of GB (0 = auto, < 0 = off)", self.memory_budget_gb)
        _check(self.lr_schedule in ("constant", "linear"), "OptimConfig", "lr_schedule",
               "must be 'constant' or 'linear'", self.lr_schedule)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``algo`` picks the objective; everything else is shared, so the
    baselines run on the same code path."""

    algo: str = _f("opd", "opd (teacher sees skills + hints) | opsd (hints only) | grpo | rft | "
                          "sft (demonstrations; the warm start)")
    steps: int = _f(20, "optimizer steps (one rollout batch each)")
    seed: int = _f(0, "run seed (task choice, sampling, initialization)")
    out_dir: str = _f("runs/opd", "run folder (metrics, checkpoints, report)")
    eval_every: int = _f(5, "held-out evaluation every N steps (and at the end); 0 = only at "
                            "the end")
    eval_at_start: bool = _f(True, "evaluate once before training (step 0)")
    eval_at_end: bool = _f(True, "evaluate after the last step (off: a warm start whose model "
                                 "the next run evaluates at its step 0 anyway)")
    checkpoint_every: int = _f(5, "checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(2, "checkpoints kept on disk (oldest deleted first)")
    resume: bool = _f(True, "resume from the latest checkpoint in out_dir if there is one")
    tensorboard: bool = _f(True, "also write TensorBoard events (if tensorboard is installed)")
    progress: bool = _f(True, "show progress bars")
    samples_to_keep: int = _f(4, "scored trajectories saved per evaluation for the report")
    model: ModelConfig = _f(ModelConfig(), "model")
    rollout: RolloutSettings = _f(RolloutSettings(), "rollouts")
    loss: LossConfig = _f(LossConfig(), "loss")
    teacher: TeacherConfig = _f(TeacherConfig(), "teacher")
    optim: OptimConfig = _f(OptimConfig(), "optimizer")
    demos: DemoConfig = _f(DemoConfig(), "demonstrations (algo=sft)")
    teacher_eval: bool = _f(True, "opd/opsd: before training, let the teacher context act on the "
                                  "held-out tasks and report its success and parse rate "
                                  "(teacher/eval_*), warning when it is below the student's")
    teacher_eval_views: tuple[str, ...] = _f(ADVANTAGE_VIEWS, "with teacher_eval: the teacher views "
                                              "also measured acting at step 0, each against the "
                                              "student (teacher/advantage/<view>): skills (skills "
                                              "only), hints (the configured non-skill views), both; "
                                              "views the context lacks are skipped; empty = off")
    skills: SkillsConfig = _f(SkillsConfig(), "dynamic skills (Skill-SD refresh)")

    def __post_init__(self) -> None:
        _check(self.algo in ALGOS, "TrainConfig", "algo", f"must be one of {ALGOS}", self.algo)
        _pos_int("TrainConfig", self, "steps", "checkpoint_every", "keep_checkpoints")
        _check(isinstance(self.eval_every, int) and self.eval_every >= 0, "TrainConfig",
               "eval_every", "must be an int >= 0", self.eval_every)
        _check(isinstance(self.seed, int), "TrainConfig", "seed", "must be an int", self.seed)
        _check(isinstance(self.samples_to_keep, int) and self.samples_to_keep >= 0, "TrainConfig",
               "samples_to_keep", "must be an int >= 0", self.samples_to_keep)
        if self.algo == "grpo" and self.rollout.samples_per_task < 2:
            raise ValueError("TrainConfig.rollout.samples_per_task must be >= 2 for algo='grpo' "
                             "(group-relative advantages need a group)")
        if self.loss.success_routing and self.rollout.samples_per_task < 2:
            raise ValueError("SRPO success routing (loss.success_routing) needs a group to route "
                             f"within: rollout.samples_per_task >= 2, got {self.rollout.samples_per_task}")
        if self.algo == "sft" and self.demos.source == "oracle":
            import agentsd

            try:
                probe = agentsd.make(self.rollout.env)
                probe.reset(seed=agentsd.split_seeds(self.rollout.env, "train", 1)[0])
                has_oracle = probe.oracle_action() is not None
                probe.close()
            except Exception as e:  # noqa: BLE001 - an unknown env id gets the registry's error
                raise ValueError(f"TrainConfig.rollout.env {self.rollout.env!r}: {e}") from e
            if not has_oracle:
                raise ValueError(f"TrainConfig.algo='sft' with demos.source='oracle': env "
                                 f"{self.rollout.env} has no oracle; pass --demos.source FILE")
        if self.uses_teacher and not [v for v in self.teacher_views().views]:
            raise ValueError(f"TrainConfig.teacher.context.views leaves the {self.algo} teacher "
                             "nothing to see beyond the task (add 'plan', 'notes' or 'skills')")
        self._check_skills_and_demos()
        self._check_family()

    def _check_skills_and_demos(self) -> None:
        """The teacher-eval views, a skill refresh's teacher and the demos' split."""
        views = (tuple(self.teacher_eval_views) if not isinstance(self.teacher_eval_views, str)
                 else (self.teacher_eval_views,))
        object.__setattr__(self, "teacher_eval_views", views)
        _check(all(v in ADVANTAGE_VIEWS for v in views) and len(set(views)) == len(views),
               "TrainConfig", "teacher_eval_views", f"must list distinct names of {ADVANTAGE_VIEWS}",
               views)
        if self.skills.refresh_every and not (self.uses_teacher
                                              and "skills" in self.teacher_views().views):
            raise ValueError("TrainConfig.skills.refresh_every needs a teacher that reads skills "
                             "(--algo opd with 'skills' in --teacher.context.views); set "
                             "--skills.refresh-every 0 or add them")
        if self.algo == "sft" and self.demos.source == "oracle" and self.demos.split != "train":
            import agentsd

            try:
                splits = agentsd.spec(self.rollout.env).splits
            except Exception as e:  # noqa: BLE001 - an unknown env id gets the registry's error
                raise ValueError(f"TrainConfig.rollout.env {self.rollout.env!r}: {e}") from e
            _check(self.demos.split in splits, "TrainConfig", "demos.split",
                   f"is not a split of {self.rollout.env} (it has: {', '.join(sorted(splits))})",
                   self.demos.split)

    def _check_family(self) -> None:
        """SOD, π-Distill, TRACE, feedback teachers, several teachers, ATESD: each method that
        needs something the env or the config does not provide fails here, in one line naming
        it (one check per method: :mod:`agentsd.distill.family`)."""
        from agentsd.distill.family import check_family

        check_family(self)

    @property
    def uses_teacher(self) -> bool:
        return self.algo in ("opd", "opsd")

    def teacher_views(self) -> TeacherContextConfig:
        """The teacher context actually used: OPSD drops skills, OPD keeps them."""
        ctx = self.teacher.context
        if self.algo == "opsd":
            return dataclasses.replace(ctx, views=tuple(v for v in ctx.views if v != "skills"))
        return ctx


# ---------------------------------------------------------------------------------------------
# dict / file round trips (command-line flags: agentsd.distill.flags)

def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Build ``cls`` from a (possibly partial) nested dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(where + k for k in unknown)}; "
                         f"{cls.__name__} has: {', '.join(sorted(names))}")
    kw = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = config_from_dict(t, v, f"{where}{k}.")
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The (possibly partial) nested dict in a JSON or YAML config file."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        d = yaml.safe_load(text) or {}
    else:
        d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"config file {path}: expected a mapping of field names, got {type(d).__name__}")
    return d


def load_config(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON or YAML file (partial: missing fields keep defaults)."""
    return config_from_dict(TrainConfig, read_config_file(path))
