"""llama.cpp's ``llama-server`` as a rollout engine that follows the trainer's weights.

llama.cpp cannot load new weights into a running server, so following the student means: write the
student's current weights into a GGUF file, then (re)start ``llama-server`` processes on it. Both
halves are here:

- :func:`write_gguf` copies a *base* GGUF file (its metadata, tokenizer and every tensor it is
  not given, byte for byte, quantized or not) and replaces the tensors it is given (the student's
  weights, Hugging Face names) with their values in F32 or F16; :func:`write_lora_gguf` writes a
  PEFT LoRA adapter as a llama.cpp LoRA file for such a base. Names go from Hugging Face to GGUF
  through ``gguf``'s own tensor-name map; the query and key projections of ``llama``-architecture
  files are permuted the way llama.cpp's converter lays them out (transformers un-permutes them
  when it reads the file);
- :class:`LlamaServer` runs one ``llama-server`` on a free local port with a fixed number of
  parallel slots, waits for ``/health``, restarts it on a new file, and stops it (also when the
  trainer dies: the server gets SIGTERM from the kernel when its parent exits).

The binary is ``$AGENTSD_LLAMA_SERVER``, else ``llama-server`` on ``PATH``;
``scripts/build_llama_server.sh`` builds it from the llama.cpp sources that PyPI's
``llama-cpp-python`` sdist carries (CPU, about 10-40 minutes on two cores).

    base = write_gguf(base_weights(model), model_gguf, "run/sampler/base.gguf", "f16")  # once
    server = LlamaServer(find_server_binary(), parallel=8, threads=2)
    server.start(base, lora=write_lora_gguf(model, base, "run/sampler/lora-v3.gguf"))
    ...                                      # http://127.0.0.1:PORT/v1, OpenAI-compatible
    server.start(base, lora=write_lora_gguf(model, base, "run/sampler/lora-v4.gguf"))  # restart
    server.stop()
    # a fully fine-tuned student: write_gguf(merged_hf_weights(model), model_gguf, out) per update
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LlamaCppError", "find_server_binary", "write_gguf", "write_lora_gguf", "lora_weights",
           "base_weights", "LlamaServer", "BUILD_HINT", "SERVED_NAME"]

#: how to get a ``llama-server`` binary (every "not found" error says it)
BUILD_HINT = ("build one with `bash scripts/build_llama_server.sh` (llama.cpp from PyPI's "
              "llama-cpp-python sources, CPU) and set AGENTSD_LLAMA_SERVER=/path/to/llama-server, "
              "or put llama-server on PATH")

#: the model name the managed servers answer to (``--alias``)
SERVED_NAME = "agentsd-student"

# architectures whose q/k projections llama.cpp's converter permutes (rotary pairs interleaved)
_PERMUTE_QK = {"llama"}
# architectures whose written GGUF was checked against the trainer's own log-probs
# (tests/test_llamacpp.py); others differ in ways the writer does not model (gemma's norm offset,
# phi3's fused QKV, qwen's biases), so they are refused rather than served wrong
_SUPPORTED = {"llama"}


class LlamaCppError(RuntimeError):
    """No binary, a GGUF the student does not fit, or a server that would not start; the message
    names the cause and the fix."""


def find_server_binary(explicit: str = "") -> str:
    """``explicit``, else ``$AGENTSD_LLAMA_SERVER``, else ``llama-server`` on ``PATH``."""
    cand = explicit or os.environ.get("AGENTSD_LLAMA_SERVER", "")
    if cand:
        p = Path(cand).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        raise LlamaCppError(f"llama-server binary {cand!r} does not exist or is not executable; {BUILD_HINT}")
    found = shutil.which("llama-server")
    if not found:
        raise LlamaCppError(f"no llama-server binary found; {BUILD_HINT}")
    return found


# ---------------------------------------------------------------------------------------------
# GGUF

class _Base:
    """What the writers need from a base GGUF file, parsed once per file version (gguf's reader
    takes seconds on a 49k-token vocabulary)."""

    def __init__(self, path: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(str(path))
        f = reader.fields
        self.arch = str(f["general.architecture"].contents())
        if self.arch not in _SUPPORTED:
            raise LlamaCppError(f"{path.name}: GGUF architecture {self.arch!r} is not supported by the "
                                f"llamacpp sampler (supported: {', '.join(sorted(_SUPPORTED))}); use "
                                "--rollout.sampler hf or openai")
        self.n_head = int(f[f"{self.arch}.attention.head_count"].contents())
        kv = f.get(f"{self.arch}.attention.head_count_kv")
        self.n_head_kv = int(kv.contents()) if kv is not None else self.n_head
        arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[self.arch]
        self.names = gguf.get_tensor_name_map(arch_enum, int(f[f"{self.arch}.block_count"].contents()))
        self.tensors = {t.name: t for t in reader.tensors}
        # innermost dimension last, as torch and numpy order them (GGUF lists it first)
        self.shapes = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in reader.tensors}
        self.kv: list[tuple[str, Any, Any, Any]] = []
        for key, field in f.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            vtype = gguf.GGUFValueType(field.types[0])
            sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
            self.kv.append((key, field.contents(), vtype, sub))

    def gguf_name(self, hf: str) -> str | None:
        name = self.names.get_name(hf, try_suffixes=(".weight", ".bias"))
        return name if name in self.shapes else None

    def to_llama_cpp_rows(self, name: str, a: Any) -> Any:
        """``a`` with its rows in llama.cpp's order for tensor ``name`` (q/k: rotary pairs)."""
        if self.arch in _PERMUTE_QK and name.endswith("attn_q.weight"):
            return _permute_rows(a, self.n_head)
        if self.arch in _PERMUTE_QK and name.endswith("attn_k.weight"):
            return _permute_rows(a, self.n_head_kv)
        return a


@functools.lru_cache(maxsize=4)
def _read_base_cached(path: str, mtime_ns: int, size: int) -> _Base:
    return _Base(Path(path))


def _read_base(path: Path) -> _Base:
    st = path.stat()
    return _read_base_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _write_atomically(out: Path, fill: Any, arch: str) -> Path:
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch)
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _permute_rows(w: Any, n_head: int) -> Any:
    # Hugging Face keeps each head's rotary pairs as (first half, second half); llama.cpp's
    # "normal" rope wants them interleaved: view rows as (head, 2, half) and swap the last two
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(named_tensors: Iterable[tuple[str, Any]], base: str | Path, out: str | Path,
               dtype: str = "f32") -> Path:
    """Write ``out``: the GGUF file ``base`` with every tensor named in ``named_tensors``
    (Hugging Face names, e.g. ``model.layers.0.self_attn.q_proj.weight``; torch tensors or numpy
    arrays) replaced by that value in ``dtype`` (``f32`` or ``f16``; 1-D tensors stay F32). Every
    other tensor and all metadata are copied as they are. Raises :class:`LlamaCppError` for a
    name ``base`` has no tensor for, a shape that differs, or an architecture not supported.
    Written to a temporary file in ``out``'s folder and renamed, so readers never see half a file."""
    import gguf
    import numpy as np

    if dtype not in ("f32", "f16"):
        raise LlamaCppError(f"GGUF dtype must be 'f32' or 'f16', got {dtype!r}")
    base, out = Path(base), Path(out)
    b = _read_base(base)
    tied = "output.weight" not in b.shapes
    new: dict[str, Any] = {}
    for hf, value in named_tensors:
        if tied and hf == "lm_head.weight":
            continue  # the output head is token_embd in a tied GGUF
        name = b.gguf_name(hf)
        if name is None:
            raise LlamaCppError(f"{base.name} has no tensor for the student's {hf!r}: is it the GGUF "
                                "of the student's base model?")
        a = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value, np.float32)
        if a.shape != b.shapes[name]:
            raise LlamaCppError(f"{base.name}: tensor {name} has shape {b.shapes[name]}, the student's {hf} "
                                f"{a.shape}: not the student's base model")
        a = b.to_llama_cpp_rows(name, a)
        new[name] = np.ascontiguousarray(a.astype(np.float16 if dtype == "f16" and a.ndim > 1 else np.float32))
    file_type = int(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    def fill(w: Any) -> None:
        for key, value, vtype, sub in b.kv:
            w.add_key_value(key, file_type if key == "general.file_type" else value, vtype, sub_type=sub)
        for name, t in b.tensors.items():
            if name in new:
                w.add_tensor(name, new[name])
            else:
                w.add_tensor(name, t.data, raw_dtype=t.tensor_type)

    return _write_atomically(out, fill, b.arch)


def _lora_modules(model: Any) -> list[tuple[str, Any]]:
    from agentsd.policy.vllm import hf_name

    return [(hf_name(n), m) for n, m in model.named_modules()
            if hasattr(m, "base_layer") and "default" in (getattr(m, "lora_A", None) or {})]


def base_weights(model: Any) -> list[tuple[str, Any]]:
    """``(hf_name, tensor)`` of every weight of a PEFT ``model`` *without* its adapter (the frozen
    base the adapter sits on; after ``--model.init-from`` that base is no longer the GGUF file's):
    the adapted projections' ``base_layer`` weights and every other non-LoRA parameter."""
    from agentsd.policy.vllm import hf_name

    # named_parameters lists a tied weight once (the head shares the embedding)
    return [(hf_name(n), p.detach()) for n, p in model.named_parameters() if "lora_" not in n]


def lora_weights(model: Any) -> tuple[list[tuple[str, Any, Any]], float]:
    """``([(hf_name, A, B)], alpha)`` of a PEFT ``model``'s ``default`` LoRA adapter (``A``: rank x
    in, ``B``: out x rank), with ``alpha`` such that ``alpha / rank`` is PEFT's scaling. Raises
    :class:`LlamaCppError` for adapters llama.cpp cannot apply (rank-stabilized or per-module
    scaling)."""
    out, scales = [], set()
    for name, m in _lora_modules(model):
        out.append((name + ".weight", m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach()))
        scales.add((float(m.scaling["default"]), int(m.r["default"])))
    if not out:
        raise LlamaCppError("the student has no LoRA adapter to write")
    if len(scales) != 1:
        raise LlamaCppError(f"LoRA modules differ in scaling or rank ({sorted(scales)}); llama.cpp "
                            "applies one alpha per adapter file")
    [(scaling, rank)] = scales
    return out, scaling * rank


def write_lora_gguf(model: Any, base: str | Path, out: str | Path) -> Path:
    """Write ``model``'s LoRA adapter as a llama.cpp LoRA GGUF (``general.type = adapter``,
    tensors ``<base tensor>.lora_a`` / ``.lora_b`` in F32) that applies to the GGUF ``base``
    (``llama-server -m base --lora out``). Query/key ``B`` rows are permuted as in
    :func:`write_gguf`. Written to a temporary file and renamed."""
    import gguf
    import numpy as np

    base, out = Path(base), Path(out)
    b = _read_base(base)
    pairs, alpha = lora_weights(model)
    tensors = []
    for hf, a, bm in pairs:
        name = b.gguf_name(hf)
        if name is None:
            raise LlamaCppError(f"{base.name} has no tensor for the adapted {hf!r}: is it the GGUF "
                                "of the student's base model?")
        a_np, b_np = a.float().cpu().numpy(), bm.float().cpu().numpy()
        if b.shapes[name] != (b_np.shape[0], a_np.shape[1]):
            raise LlamaCppError(f"{base.name}: tensor {name} has shape {b.shapes[name]}, the adapter "
                                f"of {hf} ({b_np.shape[0]}, {a_np.shape[1]}): not the student's base model")
        tensors.append((name + ".lora_a", np.ascontiguousarray(a_np, np.float32)))
        tensors.append((name + ".lora_b", np.ascontiguousarray(b.to_llama_cpp_rows(name, b_np), np.float32)))

    def fill(w: Any) -> None:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for name, t in tensors:
            w.add_tensor(name, t)

    return _write_atomically(out, fill, b.arch)


# ---------------------------------------------------------------------------------------------
# the server process

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LlamaServer:
    """One local ``llama-server`` process with ``parallel`` slots of ``ctx_per_slot`` tokens,
    serving whatever GGUF file it was last :meth:`start` ed on as model ``alias`` (default
    :data:`SERVED_NAME`).
    Each slot keeps its KV cache between requests, and llama.cpp gives a request the slot whose
    cached prompt shares the most with it, so the next turn of an episode re-uses its history."""

    def __init__(self, binary: str, *, parallel: int = 8, ctx_per_slot: int = 4096, threads: int = 0,
                 startup_timeout_s: float = 120.0, extra_args: Sequence[str] = (),
                 alias: str = SERVED_NAME) -> None:
        if parallel < 1 or ctx_per_slot < 16:
            raise LlamaCppError(f"llama-server needs parallel >= 1 and ctx_per_slot >= 16, got "
                                f"{parallel} and {ctx_per_slot}")
        self.binary = binary
        self.parallel, self.ctx_per_slot = parallel, ctx_per_slot
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self.alias = alias
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: Any = None
        self._peak_kb = 0

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, model_path: str | Path, lora: str | Path | None = None) -> list[str]:
        return [self.binary, "-m", str(model_path), *(["--lora", str(lora)] if lora else []),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--alias", self.alias, "-np", str(self.parallel),
                "-c", str(self.parallel * self.ctx_per_slot), "-t", str(self.threads),
                "-tb", str(self.threads), "--no-webui", *self.extra_args]

    def start(self, model_path: str | Path, lora: str | Path | None = None) -> None:
        """Serve ``model_path`` with the LoRA GGUF ``lora`` applied (when given), stopping the
        current process first; returns once ``/health``
        answers 200. Raises :class:`LlamaCppError` with the tail of the server's log when it
        exits or does not become healthy within ``startup_timeout_s``."""
        import httpx

        self.stop()
        self.port = _free_port()
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.command(model_path, lora), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                rc = self.proc.returncode
                self.stop()
                raise LlamaCppError(f"llama-server exited with code {rc} while loading {Path(model_path).name}; "
                                    f"its log ends: {tail}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise LlamaCppError(f"llama-server did not become healthy within {self.startup_timeout_s:.0f} s "
                                    f"on {Path(model_path).name}; its log ends: {tail}")
            time.sleep(0.1)

    def log_tail(self, n: int = 600) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - n))
        return self._log.read().decode(errors="replace").strip().replace("\n", " | ")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); a no-op when none runs."""
        if self.proc is not None:
            self._peak_kb = max(self._peak_kb, self._hwm_kb())
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _hwm_kb(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
                return next((int(x.split()[1]) for x in f if x.startswith("VmHWM:")), 0)
        except (OSError, AttributeError):
            return 0

    def peak_rss_mb(self) -> float:
        """The largest peak RSS of any process this object started (Linux ``VmHWM``), in MiB."""
        return max(self._peak_kb, self._hwm_kb() if self.proc is not None else 0) / 1024

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
