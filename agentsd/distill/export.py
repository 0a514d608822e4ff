"""``agentsd export``: a trained run as files other tools load without agentsd.

- ``agentsd export RUN_DIR --merge OUT``: a Hugging Face model folder (the adapter merged into
  the base weights, safetensors, ``config.json``, tokenizer) that
  ``AutoModelForCausalLM.from_pretrained(OUT)`` loads and whose logits are the trained
  student's; it also works for the embedded GGUF model ``smollm2`` (dequantized weights are
  saved as plain floats);
- ``agentsd export RUN_DIR OUT``: a copy of the checkpoint's PEFT adapter folder, for
  ``PeftModel.from_pretrained(base, OUT)`` on the run's base model.

``RUN_DIR`` is a run folder (its latest checkpoint) or one checkpoint folder. The student is
rebuilt exactly as the trainer built it (the run's ``config.json``: model, ``init_from`` merge,
LoRA settings, seed) on the CPU and the checkpoint's tensors are loaded into it, so full
fine-tuning and runs started from an earlier run export the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["find_checkpoint", "load_student", "export_merged", "export_adapter", "register"]


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``path`` names: itself, or a run folder's latest checkpoint. Raises
    ``ValueError`` saying what is missing and what to do."""
    from agentsd.distill.checkpoint import _complete, latest_checkpoint

    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder; pass a run folder written by "
                         "'agentsd train --out-dir RUN_DIR' or one of its checkpoints/step_* folders")
    if _complete(p):
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ValueError(f"run {str(path)!r} has no checkpoint (no checkpoints/step_*/state.json): "
                         "train it until its first checkpoint (--checkpoint-every N, and always at "
                         "the last step) or resume it with the same 'agentsd train --out-dir'")
    return ckpt


def _run_config(ckpt: Path) -> Any:
    """The run's :class:`TrainConfig`, with the device forced to the CPU (a run trained on a
    GPU exports anywhere)."""
    from agentsd.distill.checkpoint import _run_config_file
    from agentsd.distill.config import TrainConfig, config_from_dict

    f = _run_config_file(ckpt)
    if f is None:
        raise ValueError(f"checkpoint {ckpt} has no config.json in its run folder "
                         f"({ckpt.parent.parent}); export needs it to rebuild the base model")
    d = json.loads(f.read_text())
    d.setdefault("model", {})["device"] = "cpu"
    return config_from_dict(TrainConfig, d)


def load_student(ckpt: str | Path) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, cfg)``: checkpoint ``ckpt``'s student, rebuilt as the trainer built
    it, on the CPU, in eval mode."""
    from agentsd.distill.checkpoint import load_weights
    from agentsd.distill.trainer import build_student

    ckpt = Path(ckpt)
    cfg = _run_config(ckpt)
    # no dropout at export time; the weights do not depend on it
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora_dropout=0.0))
    model, tok = build_student(cfg)
    load_weights(ckpt, model)
    return model.eval(), tok, cfg


def _fresh_out(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ValueError(f"output {str(out)!r} already exists and is not empty; pass a new "
                             "folder or --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out`` (replacing it), so a killed export leaves no
    half-written model where a loader would find it."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)


def export_merged(run_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the merged Hugging Face model folder of ``run_dir``'s checkpoint to ``out``."""
    from agentsd.policy.models import drop_gguf_quantization, resolve_model

    ckpt = find_checkpoint(run_dir)
    out = _fresh_out(out, force)
    model, tok, cfg = load_student(ckpt)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if cfg.model.name != "tiny-random" and resolve_model(cfg.model.name).source == "gguf":
        drop_gguf_quantization(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _provenance(tmp, ckpt, cfg, merged=True)
        tmp.chmod(0o755)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_adapter(run_dir: str | Path, out: str | Path, force: bool = False) -> Path:
    """Copy ``run_dir``'s checkpoint adapter folder (PEFT) to ``out``."""
    ckpt = find_checkpoint(run_dir)
    src = ckpt / "adapter"
    if not (src / "adapter_config.json").exists():
        raise ValueError(f"checkpoint {ckpt} has no PEFT adapter (the run fine-tuned all weights, "
                         "model.lora=false); export the whole model with --merge")
    out = _fresh_out(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        _provenance(tmp, ckpt, _run_config(ckpt), merged=False)
        tmp.chmod(0o755)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _provenance(folder: Path, ckpt: Path, cfg: Any, merged: bool) -> None:
    state = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").exists() else {}
    (folder / "agentsd_export.json").write_text(json.dumps({
        "checkpoint": str(ckpt.resolve()), "step": state.get("step"), "algo": cfg.algo,
        "base_model": cfg.model.name, "init_from": cfg.model.init_from, "merged": merged}, indent=1))


# ---------------------------------------------------------------------------------------------
# the command

def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write a run's student as a Hugging Face model (--merge) or "
                                      "PEFT adapter folder",
                       description="Write a run's latest checkpoint (or the checkpoint folder "
                                   "given) as a Hugging Face model folder with --merge "
                                   "(AutoModelForCausalLM.from_pretrained loads it; also for the "
                                   "embedded GGUF model), else as a copy of its PEFT adapter folder "
                                   "(PeftModel.from_pretrained(base, OUT)).")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="run folder (its latest checkpoint) or a checkpoints/step_* folder")
    p.add_argument("out", metavar="OUT", help="folder to write (must be new or empty)")
    p.add_argument("--merge", action="store_true",
                   help="merge the adapter into the base weights and write a full model folder "
                        "(default: copy the PEFT adapter folder)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    import sys

    fn = export_merged if args.merge else export_adapter
    out = fn(args.run_dir, args.out, force=args.force)
    print(json.dumps({"out": str(out), "merged": bool(args.merge)}))
    print(f"load it with: {_how_to_load(out, args.merge)}", file=sys.stderr)
    return 0


def _how_to_load(out: Path, merged: bool) -> str:
    if merged:
        return f"AutoModelForCausalLM.from_pretrained({str(out)!r})"
    return f"PeftModel.from_pretrained(base_model, {str(out)!r})"
