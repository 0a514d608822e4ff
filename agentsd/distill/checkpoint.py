"""Checkpoints that survive SIGKILL and resume exactly.

A checkpoint is a folder ``checkpoints/step_000010/`` holding ``trainable.pt`` (the LoRA
adapter or, for full fine-tuning, every trainable tensor), ``optimizer.pt`` and ``state.pt``
(step, RNG states, teacher state, skill-bandit statistics, best held-out score). It is written
into a temporary folder and renamed into place, then ``checkpoints/latest`` is replaced
atomically; a run killed at any instant leaves either the previous or the new checkpoint, never
a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rng_state", "set_rng_state",
           "resolve_init_from", "merge_init_from"]


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


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: str | Path, step: int, model: Any, optimizer: Any,
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the newest ``keep``."""
    import torch

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(_trainable_state(model), tmp / "trainable.pt")
    if hasattr(model, "peft_config"):  # a standard PEFT adapter folder next to the private files
        model.save_pretrained(str(tmp / "adapter"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / "state.pt")
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


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or ``None``."""
    root = Path(run_dir) / "checkpoints"
    ptr = root / "latest"
    if ptr.exists():
        p = root / ptr.read_text().strip()
        if (p / "state.pt").exists():
            return p
    done = sorted(p for p in root.glob("step_*") if (p / "state.pt").exists())
    return done[-1] if done else None


def load_checkpoint(path: str | Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer state into ``model`` / ``optimizer``, restore the RNG states
    and return the saved trainer state (``step``, ``teacher``, ``bandit`` ...)."""
    import torch

    path = Path(path)
    weights = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"checkpoint {path} holds tensors this model lacks ({missing[:3]} ...); "
                         "was it written with another model or LoRA setting?")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu",
                                         weights_only=True))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    set_rng_state(state["rng"])
    return state


# ---------------------------------------------------------------------------------------------
# starting a run from an earlier one

def resolve_init_from(path: str | Path) -> Path:
    """What ``--model.init-from`` points at: a PEFT adapter folder (``adapter_config.json``), a
    checkpoint folder (``trainable.pt``) or a run folder (its latest checkpoint). Raises
    ``ValueError`` naming what was expected; touches no model."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"model.init_from {str(path)!r} does not exist; expected a run folder "
                         "(with checkpoints/), a checkpoint folder or a PEFT adapter folder")
    if (p / "adapter_config.json").exists() or (p / "trainable.pt").exists():
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ValueError(f"model.init_from {str(path)!r} holds no checkpoint (no "
                         "checkpoints/step_*/state.pt, trainable.pt or adapter_config.json); "
                         "point it at a finished run folder")
    return ckpt


def _run_config(ckpt: Path) -> dict[str, Any]:
    import json

    for cand in (ckpt.parent.parent / "config.json", ckpt / "config.json"):
        if cand.exists():
            return json.loads(cand.read_text())
    return {}


def merge_init_from(model: Any, path: str | Path, model_name: str | None = None) -> Any:
    """``model`` (a plain, un-wrapped transformers model) with the weights of an earlier run
    merged in: a LoRA adapter is applied and merged (``merge_and_unload``), full fine-tuned
    tensors are copied. Raises ``ValueError`` when the earlier run used another model."""
    import torch

    from agentsd.distill.models import with_lora

    src = resolve_init_from(path)
    if (src / "adapter_config.json").exists() and not (src / "trainable.pt").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(src)).merge_and_unload()
    cfg = _run_config(src).get("model", {})
    if model_name and cfg.get("name") and cfg["name"] != model_name:
        raise ValueError(f"model.init_from {str(path)!r} was trained on model {cfg['name']!r}, "
                         f"this run uses {model_name!r}; start from a run of the same model")
    weights = torch.load(src / "trainable.pt", map_location="cpu", weights_only=True)
    if cfg.get("lora", True) and any("lora_" in n for n in weights):
        wrapped = with_lora(model, rank=int(cfg.get("lora_rank", 16)),
                            alpha=float(cfg.get("lora_alpha", 32.0)))
        params = dict(wrapped.named_parameters())
        missing = [n for n in weights if n not in params]
        if missing:
            raise ValueError(f"model.init_from {str(path)!r}: its adapter does not fit this model "
                             f"({missing[:2]} ...); was it trained on another model?")
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        return wrapped.merge_and_unload()
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"model.init_from {str(path)!r}: tensors {missing[:2]} ... are not in "
                         "this model; was it trained on another model?")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    return model
