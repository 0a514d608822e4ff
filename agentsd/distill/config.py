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
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsd.distill.config_fields import _check, _f, check_fields
from agentsd.distill.config_loss import LossConfig, TeacherConfig
from agentsd.distill.samplers import LOGPROBS, SAMPLERS
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
                              "smollm2 tokenizer (tests, smoke runs)",
                   nonempty=True, note="(a model name, path or hub id)")
    lora: bool = _f(True, "train a LoRA adapter (false: full fine-tuning)")
    lora_rank: int = _f(16, "LoRA rank", kind=int, ge=1)
    lora_alpha: float = _f(32.0, "LoRA scaling numerator (scale = alpha / rank)", gt=0)
    lora_dropout: float = _f(0.0, "LoRA dropout (the teacher always runs with dropout off)",
                             ge=0, lt=1)
    dtype: str = _f("auto", "parameter dtype: auto (bf16 autocast on CUDA with bf16, else "
                            "fp32), fp32 or bf16", choices=("auto", "fp32", "bf16"))
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
    tiny_hidden: int = _f(32, "hidden size of the 'tiny-random' model", kind=int, ge=1)
    tiny_layers: int = _f(2, "layers of the 'tiny-random' model", kind=int, ge=1)
    fsdp: bool = _f(False, "full fine-tuning under torchrun: shard the student's weights, "
                           "gradients and optimizer state across the processes (FSDP2, a unit per "
                           "decoder layer) instead of a whole copy in each; needs model.lora=false; "
                           "a no-op in one process")

    def __post_init__(self) -> None:
        check_fields(self)
        _check(not (self.fsdp and self.lora), "ModelConfig", "fsdp",
               "shards full fine-tuning only (a LoRA adapter is small: plain data parallelism "
               "under torchrun is the tool); add --model.lora false or drop --model.fsdp", self.fsdp)
        _check_device(self.device)
        if self.init_from:
            from agentsd.distill.checkpoint import resolve_init_from

            resolve_init_from(self.init_from)  # a bad folder fails here, before a model loads


@dataclass(frozen=True)
class RolloutSettings:
    """On-policy sampling: which env, how many tasks and samples per step, limits."""

    env: str = _f("Sokoban-Easy-v0", "registered env id to train on", nonempty=True,
                  note="(a registered env id)")
    tasks_per_step: int = _f(4, "distinct tasks (train-split seeds) per step", kind=int, ge=1)
    samples_per_task: int = _f(4, "samples per task (the GRPO group size G)", kind=int, ge=1)
    max_turns: int = _f(4, "turn limit per episode", kind=int, ge=1)
    max_tokens: int = _f(64, "max sampled tokens per turn", kind=int, ge=1)
    max_episode_tokens: int = _f(2048, "prompt + action token budget per episode", kind=int, ge=1)
    temperature: float = _f(1.0, "sampling temperature for training rollouts", ge=0)
    top_p: float = _f(1.0, "nucleus sampling for training rollouts", gt=0, le=1)
    eval_tasks: int = _f(8, "held-out (test split) tasks per evaluation", kind=int, ge=1)
    eval_temperature: float = _f(0.0, "sampling temperature for evaluation (0 = greedy)", ge=0)
    eval_sampled: bool = _f(True, "also evaluate at temperature 1 (eval/success_t1): greedy "
                                  "success alone hides a policy that is right only sometimes")
    sampler: str = _f("hf", "what samples the training rollouts: hf (transformers in this "
                            "process), vllm (in-process vLLM engine, weights pushed after every "
                            "update; GPU) or openai (OpenAI-compatible servers, --rollout.servers; "
                            "the LoRA adapter is loaded through /v1/load_lora_adapter after every "
                            "update) or llamacpp (local llama.cpp servers this run starts, "
                            "restarted on the student's weights written as GGUF after every update)",
                    choices=tuple(sorted(SAMPLERS)))
    servers: tuple[str, ...] = _f((), "openai sampler: server base URLs (e.g. "
                                      "http://127.0.0.1:8000/v1), requests spread across them")
    server_model: str = _f("", "openai sampler: the base model name the servers serve (default: "
                               "the first one each server lists)")
    server_logprobs: str = _f("raw", "openai sampler: which log-probs the servers return: raw "
                                     "(vLLM's default) or processed (vLLM --logprobs-mode "
                                     "processed_logprobs); temperature != 1 or top-p < 1 needs "
                                     "processed. Checked against the trainer's model on start",
                            choices=tuple(sorted(LOGPROBS)))
    server_check: bool = _f(True, "openai sampler: on start, sample a few tokens from each server "
                                  "and check their log-probs against the trainer's model")
    server_timeout_s: float = _f(300.0, "openai sampler: seconds per request", gt=0)
    adapter_dir: str = _f("", "openai sampler: folder the adapter is saved into for the servers "
                              "to load (they must read it at the same path; default "
                              "<out_dir>/sampler_adapter)")
    llamacpp_bin: str = _f("", "llamacpp sampler: the llama-server binary (default: "
                               "$AGENTSD_LLAMA_SERVER, else llama-server on PATH; "
                               "scripts/build_llama_server.sh builds one)")
    llamacpp_gguf: str = _f("", "llamacpp sampler: GGUF file of the student's base model (default: "
                                "the model's own GGUF, e.g. the embedded smollm2)")
    llamacpp_servers: int = _f(1, "llamacpp sampler: local llama-server processes, requests spread "
                                  "across them", kind=int, ge=1)
    llamacpp_threads: int = _f(0, "llamacpp sampler: threads per server (0: the trainer's torch "
                                  "thread count)", kind=int, ge=0,
                               note="(0: the trainer's torch thread count)")
    llamacpp_ctx: int = _f(0, "llamacpp sampler: context tokens per parallel slot (0: "
                              "max_episode_tokens + max_tokens + 256, the most an episode holds)",
                           kind=int, ge=0, note="(0: the episode budget)")
    llamacpp_parallel: int = _f(16, "llamacpp sampler: parallel slots per server; its KV cache is "
                                    "parallel x ctx tokens (SmolLM2: 23 KB a token in f16)",
                                kind=int, ge=1)
    llamacpp_dtype: str = _f("f16", "llamacpp sampler: f16 | f32, how the served weights are "
                                    "written (a LoRA adapter file is always f32)",
                             choices=("f16", "f32"))
    vllm_gpu_memory: float = _f(0.3, "vllm sampler: share of GPU memory the engine may take",
                                gt=0, le=1)
    overlap: bool = _f(False, "sample step k+1's rollouts while step k updates (one step "
                              "off-policy, corrected by the importance weight; staleness in "
                              "rollout/staleness). hf: a second copy of the model and a thread, "
                              "no faster on a CPU; meant for the server samplers and GPUs")

    def __post_init__(self) -> None:
        check_fields(self)
        from agentsd.distill.samplers import check_settings

        object.__setattr__(self, "servers", tuple(self.servers) if not isinstance(self.servers, str)
                           else tuple(u for u in self.servers.split(",") if u))
        check_settings(self)


@dataclass(frozen=True)
class DemoConfig:
    """Demonstrations for ``algo='sft'`` (the warm start)."""

    source: str = _f("oracle", "oracle (each env's oracle on train seeds) or a trajectory file "
                               "(.jsonl/.parquet; its successful episodes)",
                     nonempty=True, note="('oracle' or a trajectory file)")
    teacher_frac: float = _f(0.5, "share of demos rendered in the teacher's context (skills + the "
                                  "per-turn reference reply), so the teacher learns to use it",
                             ge=0, le=1)
    split: str = _f("train", "oracle demos: the env split whose seeds *and* kwargs they are drawn "
                             "from (e.g. ToolWorld-Lite-v0's 'warm': templates never trained or "
                             "evaluated on); never the held-out 'test' split",
                    nonempty=True, note="(a split of the env)")

    def __post_init__(self) -> None:
        check_fields(self)
        _check(self.split != "test",
               "DemoConfig", "split", "must name a split of the env other than the held-out "
               "'test' split (demos from it would train on the evaluation tasks)", self.split)
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
                               "started)", kind=int, ge=0)
    window: int = _f(4, "how many recent steps' rollouts a refresh summarizes (those not "
                        "summarized by an earlier refresh)", kind=int, ge=1)
    summarizer: str = _f("deterministic", "deterministic (offline, no model) | llm (the "
                                          "trainer's own model, in process) | openai (an "
                                          "OpenAI-compatible server: skills.base_url, skills.model)",
                         choices=SKILL_SUMMARIZERS)
    base_url: str = _f("", "openai summarizer: the server's base URL (e.g. http://127.0.0.1:8000/v1)")
    model: str = _f("", "openai summarizer: the model name the server serves")
    max_new: int = _f(0, "most skills one refresh adds (0 = no cap; merged and replaced skills "
                         "do not count)", kind=int, ge=0)
    llm_max_tokens: int = _f(400, "llm/openai summarizer: tokens per answer", kind=int, ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
        _check(self.summarizer != "openai" or bool(self.base_url and self.model), "SkillsConfig",
               "summarizer", "'openai' needs --skills.base-url and --skills.model (or use "
               "--skills.summarizer deterministic)", self.summarizer)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and batching."""

    lr: float = _f(1e-4, "AdamW learning rate", gt=0)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    beta1: float = _f(0.9, "AdamW beta1", ge=0, lt=1)
    beta2: float = _f(0.999, "AdamW beta2", ge=0, lt=1)
    grad_clip: float = _f(1.0, "max global gradient norm (0 = off)", ge=0)
    min_grad_norm: float = _f(1e-5, "skip the optimizer step when the global gradient norm is at "
                                    "most this. AdamW scales any gradient to a step of about lr "
                                    "per weight, so rounding noise (a teacher that reads the "
                                    "same as the student gave a norm of 3e-6) moved the weights "
                                    "at random and broke a no-context control; 0 skips only "
                                    "exact zeros", ge=0)
    lr_schedule: str = _f("constant", "learning rate over the run: constant, or linear decay to 0 "
                                      "at the last step (a short warm start then ends on a "
                                      "settled model instead of wherever the last step left it)",
                          choices=("constant", "linear"))
    max_tokens_per_micro_batch: int = _f(4096, "padded tokens per forward/backward micro-batch "
                                                "(gradients accumulate over micro-batches)",
                                         kind=int, ge=1)
    updates_per_step: int = _f(1, "optimizer updates per rollout batch (>1 makes later updates "
                                  "off-policy; the IS weight corrects for it)", kind=int, ge=1)
    share_prefix: bool = _f(True, "compute the identical token prefixes of a micro-batch's rows "
                                  "once (system prompt, tools, task; a teacher's step-wise "
                                  "history) and reuse their keys/values, for the student (with "
                                  "gradients) and the teacher; the same numbers to float32 "
                                  "round-off (false: the unshared path)")
    share_prefix_min_tokens: int = _f(1024, "share only a forward that saves at least this many "
                                            "tokens (a smaller saving does not pay for the extra "
                                            "forwards; such forwards stay bit-identical to the "
                                            "unshared path)", kind=int, ge=0)
    memory_budget_gb: float = _f(0.0, "memory the update may use (GB): picks the micro-batch "
                                      "size (when max_tokens_per_micro_batch is left at its "
                                      "default) and gradient checkpointing (when too few tokens "
                                      "fit without it); 0 = auto, half the available RAM or 80% "
                                      "of the free GPU memory; < 0 = off (the flags as given)",
                                kind=float, note="of GB (0 = auto, < 0 = off)")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``algo`` picks the objective; everything else is shared, so the
    baselines run on the same code path."""

    algo: str = _f("opd", "opd (teacher sees skills + hints) | opsd (hints only) | grpo | rft | "
                          "sft (demonstrations; the warm start)", choices=ALGOS)
    steps: int = _f(20, "optimizer steps (one rollout batch each)", kind=int, ge=1)
    seed: int = _f(0, "run seed (task choice, sampling, initialization)", kind=int)
    out_dir: str = _f("runs/opd", "run folder (metrics, checkpoints, report)")
    eval_every: int = _f(5, "held-out evaluation every N steps (and at the end); 0 = only at "
                            "the end", kind=int, ge=0)
    eval_at_start: bool = _f(True, "evaluate once before training (step 0)")
    eval_at_end: bool = _f(True, "evaluate after the last step (off: a warm start whose model "
                                 "the next run evaluates at its step 0 anyway)")
    checkpoint_every: int = _f(5, "checkpoint every N steps (and at the end)", kind=int, ge=1)
    keep_checkpoints: int = _f(2, "checkpoints kept on disk (oldest deleted first)", kind=int, ge=1)
    resume: bool = _f(True, "resume from the latest checkpoint in out_dir if there is one")
    tensorboard: bool = _f(True, "also write TensorBoard events (if tensorboard is installed)")
    progress: bool = _f(True, "show progress bars")
    samples_to_keep: int = _f(4, "scored trajectories saved per evaluation for the report",
                              kind=int, ge=0)
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
        check_fields(self)
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
