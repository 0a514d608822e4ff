"""Checkpoints that survive SIGKILL, resume exactly and never pickle a tensor.

A checkpoint is a folder ``checkpoints/step_000010/`` holding

- ``trainable.safetensors``: the LoRA adapter or, for full fine-tuning, every trainable tensor,
  under the model's parameter names;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's state dict, its tensors in the
  first file and everything else (hyper-parameters, step counts, structure) in the second;
- ``state.json`` + ``state.safetensors``: the trainer state (step, teacher state, skill-bandit
  statistics, ``skills_version``: the run's skill library version with dynamic skills, RNG
  states), JSON with its tensors (teacher snapshot, torch RNG) split off;
- ``adapter/``: with LoRA, a standard PEFT folder (``adapter_config.json`` +
  ``adapter_model.safetensors``) that ``PeftModel.from_pretrained(base, ckpt / "adapter")`` loads.

It is written into a temporary folder and renamed into place, then ``checkpoints/latest`` is
replaced atomically; a run killed at any instant leaves either the previous or the new
checkpoint, never a half-written one. :func:`load_checkpoint` also reads the earlier layout
(``trainable.pt``, ``optimizer.pt``, ``state.pt``) with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rng_state", "set_rng_state",
           "resolve_init_from", "merge_init_from", "load_trainable", "load_weights", "to_json_and_tensors",
           "from_json_and_tensors", "STATE_FILES"]

#: a checkpoint is complete when one of these exists (written last, new layout first)
STATE_FILES = ("state.json", "state.pt")


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    out = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# JSON + safetensors: a nested state with tensors, without pickle

def to_json_and_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """``obj`` (nested dicts/lists/tuples of JSON scalars, tensors and numpy arrays) as a JSON
    value plus the tensors it referenced, keyed by their path (``state/0/exp_avg``).

    JSON loses tuples and non-string keys, both of which state dicts use (``random.getstate()``
    is a tuple, optimizer state is keyed by int), so they are tagged; a tensor becomes
    ``{"__tensor__": path}``. :func:`from_json_and_tensors` is the inverse::

        >>> import torch
        >>> j, t = to_json_and_tensors({"step": 3, "rng": (1, 2), "state": {0: torch.ones(2)}})
        >>> j
        {'step': 3, 'rng': {'__tuple__': [1, 2]}, 'state': {'__items__': [[0, {'__tensor__': 'state/0'}]]}}
        >>> from_json_and_tensors(j, t)["state"][0]
        tensor([1., 1.])
    """
    import numpy as np
    import torch

    tensors: dict[str, Any] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, _join(path, i)) for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, _join(path, i)) for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, _join(path, k)) for k, v in x.items()}
            return {"__items__": [[enc(k, _join(path, f"k{i}")), enc(v, _join(path, k))]
                                  for i, (k, v) in enumerate(x.items())]}
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path or '/'} in a checkpoint "
                        "(JSON scalars, lists, tuples, dicts, tensors and numpy arrays only)")

    return enc(obj, prefix), tensors


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def from_json_and_tensors(obj: Any, tensors: dict[str, Any]) -> Any:
    """The inverse of :func:`to_json_and_tensors`."""
    import numpy as np

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__ndarray__" in x:
            return np.asarray(x["__ndarray__"], dtype=x["dtype"])
        if "__tuple__" in x:
            return tuple(dec(v) for v in x["__tuple__"])
        if "__items__" in x:
            return {dec(k): dec(v) for k, v in x["__items__"]}
        return {k: dec(v) for k, v in x.items()}

    return dec(obj)


def _save_split(obj: Any, folder: Path, name: str) -> None:
    """``obj`` as ``name.json`` + ``name.safetensors`` (see :func:`to_json_and_tensors`)."""
    from safetensors.torch import save_file

    j, tensors = to_json_and_tensors(obj)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(j))


def _load_split(folder: Path, name: str) -> Any:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / f"{name}.safetensors"))
    return from_json_and_tensors(json.loads((folder / f"{name}.json").read_text()), tensors)


def _legacy_load(f: Path) -> Any:
    """An old-layout ``.pt`` file, unpickled with ``weights_only=True`` (numpy RNG arrays are
    the only non-torch objects they hold; those few classes are allowed by name)."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(f, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# save / load

def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True).contiguous()
            for n, p in model.named_parameters() if p.requires_grad}


#: the public id of each embedded model, written as a PEFT adapter's base model (the adapter
#: must not name the folder this machine happened to load the weights from)
PUBLIC_BASE = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
               "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
               "default": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def portable_base(model_name: str) -> str | None:
    """What an adapter of ``model_name`` names as its base: the public id of an embedded model,
    a hub id as given, ``None`` (keep PEFT's own) for a local folder or a test model."""
    if model_name in PUBLIC_BASE:
        return PUBLIC_BASE[model_name]
    if model_name.count("/") == 1 and not Path(model_name).exists():
        return model_name
    return None


def _set_adapter_base(adapter_dir: Path, base: str | None) -> None:
    cfg_path = adapter_dir / "adapter_config.json"
    if base is None or not cfg_path.is_file():
        return
    d = json.loads(cfg_path.read_text())
    d["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(d, indent=2))


def save_checkpoint(run_dir: str | Path, step: int, model: Any, optimizer: Any,
                    state: dict[str, Any], keep: int = 2,
                    full: tuple[dict[str, Any], dict[str, Any]] | None = None,
                    base_model: str | None = None) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``. ``full``:
    the trainable tensors and optimizer state already gathered (FSDP,
    :func:`agentsd.distill.fsdp.checkpoint_tensors`), written instead of ``model``'s and
    ``optimizer``'s own. ``base_model``: what the PEFT adapter names as its base model
    (:func:`portable_base`)."""
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights, optim_state = full or (_trainable_state(model), optimizer.state_dict())
    save_file(weights, str(tmp / "trainable.safetensors"))
    if hasattr(model, "peft_config"):  # a standard PEFT adapter folder next to the private files
        model.save_pretrained(str(tmp / "adapter"))
        _set_adapter_base(tmp / "adapter", base_model)
    _save_split(optim_state, tmp, "optimizer")
    _save_split({**state, "step": step, "rng": rng_state()}, tmp, "state")
    for f in tmp.rglob("*"):  # data on disk before the rename makes it visible
        if not f.is_file():
            continue
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    link_tmp = root / ".latest.tmp"
    link_tmp.write_text(final.name)
    os.replace(link_tmp, root / "latest")
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(p: Path) -> bool:
    return any((p / f).exists() for f in STATE_FILES)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or ``None``."""
    root = Path(run_dir) / "checkpoints"
    ptr = root / "latest"
    if ptr.exists():
        p = root / ptr.read_text().strip()
        if _complete(p):
            return p
    done = sorted(p for p in root.glob("step_*") if _complete(p))
    return done[-1] if done else None


def load_trainable(path: str | Path) -> dict[str, Any]:
    """The trainable tensors of checkpoint folder ``path`` (either layout), on the CPU."""
    path = Path(path)
    if (path / "trainable.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(path / "trainable.safetensors"))
    return _legacy_load(path / "trainable.pt")


def load_weights(path: str | Path, model: Any) -> None:
    """Copy checkpoint ``path``'s trainable tensors into ``model`` (built as the run built it)."""
    _copy_into(model, load_trainable(path), lambda missing: (
        f"checkpoint {path} holds tensors this model lacks ({missing[:3]} ...); "
        "was it written with another model or LoRA setting?"))


def _copy_into(model: Any, weights: dict[str, Any], error: Any) -> None:
    """Copy named tensors into ``model``'s parameters; ``error(missing_names)`` is the message
    when some name is not a parameter of ``model``."""
    import torch

    from agentsd.distill.fsdp import local_like

    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(error(missing))
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(local_like(params[n], t))  # FSDP: this rank's shard


def load_checkpoint(path: str | Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer state into ``model`` / ``optimizer``, restore the RNG states
    and return the saved trainer state (``step``, ``teacher``, ``bandit`` ...). Reads the
    safetensors layout and the earlier ``.pt`` one."""
    from agentsd.distill.fsdp import shard_optimizer_state

    path = Path(path)
    load_weights(path, model)
    if (path / "state.json").exists():
        optimizer.load_state_dict(_load_split(path, "optimizer"))
        state = _load_split(path, "state")
    else:
        optimizer.load_state_dict(_legacy_load(path / "optimizer.pt"))
        state = _legacy_load(path / "state.pt")
    shard_optimizer_state(optimizer)  # FSDP: full moments cut to this rank's shards
    set_rng_state(state["rng"])
    return state


# ---------------------------------------------------------------------------------------------
# starting a run from an earlier one

def resolve_init_from(path: str | Path) -> Path:
    """What ``--model.init-from`` points at: a PEFT adapter folder (``adapter_config.json``), a
    checkpoint folder (``trainable.safetensors`` or ``.pt``) or a run folder (its latest checkpoint). Raises
    ``ValueError`` naming what was expected; touches no model."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"model.init_from {str(path)!r} does not exist; expected a run folder "
                         "(with checkpoints/), a checkpoint folder or a PEFT adapter folder")
    if (p / "adapter_config.json").exists() or _has_trainable(p):
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ValueError(f"model.init_from {str(path)!r} holds no checkpoint (no "
                         "checkpoints/step_*/state.json, trainable.safetensors or adapter_config.json); "
                         "point it at a finished run folder")
    return ckpt


def _has_trainable(p: Path) -> bool:
    return (p / "trainable.safetensors").exists() or (p / "trainable.pt").exists()


def _run_config_file(ckpt: Path) -> Path | None:
    """The ``config.json`` of checkpoint ``ckpt``'s run (its run folder's, else its own)."""
    for cand in (ckpt.parent.parent / "config.json", ckpt / "config.json"):
        if cand.exists():
            return cand
    return None


def _run_config(ckpt: Path) -> dict[str, Any]:
    f = _run_config_file(ckpt)
    return json.loads(f.read_text()) if f else {}


def merge_init_from(model: Any, path: str | Path, model_name: str | None = None) -> Any:
    """``model`` (a plain, un-wrapped transformers model) with the weights of an earlier run
    merged in: a LoRA adapter is applied and merged (``merge_and_unload``), full fine-tuned
    tensors are copied. Raises ``ValueError`` when the earlier run used another model."""
    from agentsd.distill.models import with_lora

    src = resolve_init_from(path)
    if (src / "adapter_config.json").exists() and not _has_trainable(src):
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(src)).merge_and_unload()
    cfg = _run_config(src).get("model", {})
    if model_name and cfg.get("name") and cfg["name"] != model_name:
        raise ValueError(f"model.init_from {str(path)!r} was trained on model {cfg['name']!r}, "
                         f"this run uses {model_name!r}; start from a run of the same model")
    weights = load_trainable(src)
    if cfg.get("lora", True) and any("lora_" in n for n in weights):
        wrapped = with_lora(model, rank=int(cfg.get("lora_rank", 16)),
                            alpha=float(cfg.get("lora_alpha", 32.0)))
        _copy_into(wrapped, weights, lambda missing: (
            f"model.init_from {str(path)!r}: its adapter does not fit this model "
            f"({missing[:2]} ...); was it trained on another model?"))
        return wrapped.merge_and_unload()
    _copy_into(model, weights, lambda missing: (
        f"model.init_from {str(path)!r}: tensors {missing[:2]} ... are not in "
        "this model; was it trained on another model?"))
    return model
