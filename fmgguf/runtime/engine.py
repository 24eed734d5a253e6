"""The one module that talks to llama.cpp (through llama-cpp-python).

It owns: loading a validated GGUF into a ``llama_cpp.Llama`` with the offload options we chose,
routing llama.cpp's own log to Python logging (never stderr), reading load progress and the real
buffer sizes from that log, the token-level generation loop (UTF-8-safe streaming, stop strings,
end-of-generation tokens, cancellation, the context-window stop), and giving memory back on close.

Nothing here decides *what* to load or how much to offload: the manager does that.
"""

from __future__ import annotations

import codecs
import ctypes
import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmgguf.errors import ContextOverflowError, EngineError, InsufficientMemoryError
from fmgguf.runtime.llama_log import LoadListener, LogRouter

log = logging.getLogger(__name__)

#: the shortest run of cached tokens moved in the KV cache rather than decoded again (llama.cpp's --cache-reuse)
KV_REUSE_MIN = 64

_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


_ROUTER = LogRouter()
_state: dict[str, Any] = {}  # the ctypes callback object must stay referenced for the process' life
_state_lock = threading.Lock()


def lib() -> Any:
    """The ``llama_cpp`` module, imported on first use, with its log routed to our logger."""
    with _state_lock:
        mod = _state.get("lib")
        if mod is None:
            import llama_cpp as mod  # noqa: PLC0415 - heavy, and only this module may import it

            callback = mod.llama_log_callback(_ROUTER)
            mod.llama_log_set(callback, ctypes.c_void_p(0))
            _state["callback"] = callback
            _state["lib"] = mod
        return mod


def supports_gpu_offload() -> bool:
    """A local GPU to offload to (llama_supports_gpu_offload() is true on any build with the RPC backend)."""
    from fmgguf.runtime.devices import ggml_devices

    lib()
    return any(d.kind in ("GPU", "IGPU") and d.backend != "RPC" for d in ggml_devices())


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim)."""
    gc.collect()
    trim = _state.get("malloc_trim")
    if trim is None:
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
            trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            trim = False
        _state["malloc_trim"] = trim
    if trim:
        trim(0)


# --- options and results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadOptions:
    """Everything that decides how llama.cpp loads a file (all chosen by the caller)."""

    n_ctx: int = 4096
    n_gpu_layers: int = 0
    n_threads: int | None = None
    n_batch: int = 512
    flash_attn: bool = False
    type_k: str | None = None
    type_v: str | None = None
    tensor_split: tuple[float, ...] | None = None
    main_gpu: int = 0
    split_mode: str | int | None = None
    use_mmap: bool = True
    swa_full: bool | None = None
    #: RPC workers ("host:port") attached before loading, in tensor_split order (ahead of local GPUs)
    rpc_servers: tuple[str, ...] | None = None

    def llama_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "n_ctx": int(self.n_ctx), "n_gpu_layers": int(self.n_gpu_layers), "n_batch": int(self.n_batch),
            "n_ubatch": int(self.n_batch), "n_threads": self.n_threads, "n_threads_batch": self.n_threads,
            "flash_attn": bool(self.flash_attn), "main_gpu": int(self.main_gpu), "use_mmap": self.use_mmap,
            "verbose": False,
        }
        if self.tensor_split:
            kw["tensor_split"] = [float(x) for x in self.tensor_split]
        if self.split_mode is not None:
            kw["split_mode"] = split_mode_value(self.split_mode)
        for name in ("type_k", "type_v"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = kv_type_value(value)
        if self.swa_full is not None:
            kw["swa_full"] = self.swa_full
        return kw


def kv_type_value(name: str | int) -> int:
    if isinstance(name, int):
        return name
    key = str(name).lower()
    if key not in _KV_TYPES:
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError(f"KV cache type {name!r} is unknown", fix=f"use one of {', '.join(_KV_TYPES)}")
    return _KV_TYPES[key]


def split_mode_value(mode: str | int) -> int:
    if isinstance(mode, int):
        return mode
    table = {"none": 0, "layer": 1, "row": 2, "tensor": 3}
    key = str(mode).lower()
    if key not in table:
        from fmgguf.errors import InvalidRequestError

        raise InvalidRequestError(f"split mode {mode!r} is unknown", fix="use none, layer, row or tensor")
    return table[key]


@dataclass
class GenerationStats:
    """Filled in by :meth:`Engine.stream` while it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    started: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    cached_tokens: int = 0


# --- the engine ------------------------------------------------------------------------------------
class Engine:
    """One loaded model: a ``llama_cpp.Llama`` plus what we learned while loading it."""

    def __init__(self, path: str | Path, options: LoadOptions,
                 progress: Callable[[str, float], None] | None = None) -> None:
        self.path = Path(path)
        self.options = options
        mod = lib()
        if options.rpc_servers:  # probed in Python first: llama.cpp aborts on a worker it cannot reach
            from fmgguf.runtime.rpc import attach_workers

            attach_workers(options.rpc_servers)
        listener = LoadListener(progress)
        _ROUTER.add(listener)
        started = time.perf_counter()
        listener.report("weights", 0.1)
        try:
            self._llama = mod.Llama(model_path=str(self.path), **options.llama_kwargs())
        except MemoryError:
            raise self._oom_error(listener, "load") from None
        except (ValueError, RuntimeError) as exc:
            if listener.oom():
                raise self._oom_error(listener, "load") from None
            detail = next((ln.strip() for ln in reversed(listener.lines) if "error" in ln.lower()), str(exc))
            raise EngineError(f"llama.cpp could not load {self.path.name}: {detail}",
                              fix="run `fmgguf inspect FILE` to check the file, or re-download it") from None
        finally:
            _ROUTER.remove(listener)
        self.load_s = time.perf_counter() - started
        self.buffers = listener.buffers()
        self.load_log = listener.lines
        self._lock = threading.Lock()
        llm = self._llama
        self.n_ctx = min(int(options.n_ctx), int(llm.n_ctx()))
        self.n_ctx_train = int(llm._model.n_ctx_train())
        self.metadata: dict[str, str] = dict(getattr(llm, "metadata", {}) or {})
        self._vocab = llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.bos_id = int(llm.token_bos())
        self.eos_id = int(llm.token_eos())
        self.add_bos = bool(llm._model.add_bos_token())
        self.bos_text = self.token_text(self.bos_id) if self.bos_id >= 0 else ""
        self.eos_text = self.token_text(self.eos_id) if self.eos_id >= 0 else ""
        listener.report("ready", 1.0)

    # --- facts ---------------------------------------------------------------------------------
    #: :class:`~fmgguf.runtime.engine_api.EngineAPI` facts: this process, one stream at a time, token ids
    pid: int | None = None
    slots: int = 1
    tokenizes_in_stream: bool = False

    @property
    def closed(self) -> bool:
        return self._llama is None

    @property
    def alive(self) -> bool:
        return self._llama is not None

    def failure(self) -> None:  # in-process, llama.cpp fails by raising (or takes this process with it)
        return None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template") or None

    def memory_bytes(self) -> int:
        """What llama.cpp reported allocating for this model (weights + KV + compute + output)."""
        b = self.buffers
        total = sum(int(b.get(k, 0)) for k in ("model", "kv", "compute", "output", "rs"))
        if total:
            return total
        llm = self._require()
        return int(lib().llama_model_size(llm._model.model))

    def fim_token_ids(self) -> dict[str, int]:
        """FIM tokens as llama.cpp's vocab knows them (GGUF keys, else its own string table)."""
        mod, vocab = lib(), self._vocab
        out = {}
        for key, fn in (("prefix", mod.llama_vocab_fim_pre), ("suffix", mod.llama_vocab_fim_suf),
                        ("middle", mod.llama_vocab_fim_mid)):
            tok = int(fn(vocab))
            if tok >= 0:
                out[key] = tok
        return out

    # --- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return list(self._require().tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def special_token_id(self, text: str) -> int | None:
        """The id of ``text`` if it is exactly one (special) token of this vocab."""
        ids = self.tokenize(text, add_bos=False, special=True)
        if len(ids) == 1 and self.token_text(ids[0]) == text:
            return ids[0]
        return None

    def token_text(self, token: int) -> str:
        return str(self._require()._model.token_get_text(token))

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        mod = lib()
        buf = ctypes.create_string_buffer(64)
        n = mod.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = mod.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        data = buf.raw[: max(n, 0)]
        self._pieces[token] = data
        return data

    def is_eog(self, token: int) -> bool:
        hit = self._eog.get(token)
        if hit is None:
            hit = self._eog[token] = bool(lib().llama_vocab_is_eog(self._vocab, token))
        return hit

    # --- generation ----------------------------------------------------------------------------
    def stream(self, tokens: Sequence[int], stats: GenerationStats, *, max_tokens: int | None = 256,
               temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
               repeat_penalty: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
               cancel: threading.Event | None = None, priority: bool = False) -> Iterator[str]:
        """Yield text pieces for ``tokens``; ``stats`` says how it ended. ``priority`` (FIM) matters
        where several streams share the model; one stream at a time, it changes nothing.

        Ends with finish_reason ``stop`` (end-of-generation token or a stop string), ``length``
        (``max_tokens``), ``context`` (the context window is full) or ``cancelled``.
        """
        llm = self._require()
        tokens = list(tokens)
        n_prompt = len(tokens)
        stats.prompt_tokens = n_prompt
        stats.started = stats.started or time.perf_counter()
        if n_prompt == 0:
            tokens = [self.bos_id if self.bos_id >= 0 else self.eos_id]
            n_prompt = stats.prompt_tokens = 1
        room = self.n_ctx - n_prompt
        if room <= 0:
            raise ContextOverflowError(
                f"the prompt is {n_prompt} tokens but the context window is {self.n_ctx}",
                fix="shorten the prompt or load the model with a larger n_ctx (--ctx)")
        limit = room if not max_tokens or max_tokens <= 0 else min(int(max_tokens), room)
        stops = [s for s in (stop or []) if s]
        hold = max((len(s) for s in stops), default=0)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        llm.set_seed(int(seed) if seed is not None else random.randint(0, 2**31 - 1))
        pending = ""
        # KV prefix reuse: what the context already holds for the start of this prompt is kept, only
        # the rest is decoded (an editor's next FIM request on the same file differs near the cursor)
        stats.cached_tokens = cached = self._keep_common_prefix(llm, tokens)
        gen = llm.generate(tokens[cached:], top_k=top_k, top_p=top_p, min_p=min_p, temp=float(temperature),
                           repeat_penalty=repeat_penalty, reset=False)
        finish = None
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                try:
                    token = next(gen)
                except StopIteration:
                    finish = "stop"
                    break
                if stats.first_token_at is None:
                    stats.first_token_at = time.perf_counter()
                if self.is_eog(token):
                    finish = "stop"
                    break
                stats.completion_tokens += 1
                text = decoder.decode(self.piece(token))
                if text:
                    if not stops:
                        yield text
                    else:
                        pending += text
                        cut = _find_stop(pending, stops)
                        if cut is not None:
                            if pending[:cut]:
                                yield pending[:cut]
                            pending = ""
                            finish = "stop"
                            break
                        keep = _stop_prefix_len(pending, stops, hold)
                        if len(pending) > keep:
                            yield pending[: len(pending) - keep]
                            pending = pending[len(pending) - keep:]
                if stats.completion_tokens >= limit:
                    finish = "length" if max_tokens and 0 < max_tokens <= room else "context"
                    break
        except MemoryError:
            raise self._oom_error(None, "generation") from None
        except RuntimeError as exc:
            if "llama_decode returned" in str(exc):
                code = str(exc).rsplit(" ", 1)[-1]
                if code == "1":
                    raise ContextOverflowError("llama.cpp found no room left in the KV cache",
                                               fix="load the model with a larger n_ctx or shorten the prompt") from None
                if code == "-2":  # GGML_STATUS_ALLOC_FAILED or no memory for the batch
                    raise self._oom_error(None, "generation", code=code) from None
            raise EngineError(f"llama.cpp failed while generating: {exc}",
                              fix="reload the model (`unload` then load) and try again") from None
        finally:
            gen.close()
            stats.finish_reason = finish or "cancelled"
            stats.finished_at = time.perf_counter()
        tail = pending + decoder.decode(b"", final=True)
        if tail and finish != "cancelled":
            yield tail

    @staticmethod
    def _keep_common_prefix(llm: Any, tokens: Sequence[int]) -> int:
        """Trim the KV cache to the longest prefix it shares with ``tokens`` and return its length.

        At least the last prompt token is always decoded again (its logits choose the first new
        token). Where the cache cannot be trimmed (some recurrent or sliding-window models) it is
        cleared and the whole prompt decoded."""
        import numpy as np  # noqa: PLC0415 - llama_cpp's own dependency

        held = int(llm.n_tokens)
        limit = min(held, len(tokens) - 1)
        n = 0
        if limit > 0:
            diff = np.nonzero(llm.input_ids[:limit] != np.asarray(tokens[:limit], dtype=llm.input_ids.dtype))[0]
            n = int(diff[0]) if len(diff) else limit
        if n > 0:
            n = Engine._shift_chunks(llm, tokens, n)
        if n <= 0 or not llm._ctx.kv_cache_seq_rm(-1, n, -1):
            llm.reset()
            return 0
        llm.n_tokens = n
        return n

    @staticmethod
    def _shift_chunks(llm: Any, tokens: Sequence[int], n: int) -> int:
        """llama.cpp's cache reuse, after the common prefix ``n``: where text was removed from the prompt
        (an editor's oldest context chunk dropped, the window over a long file moved), runs of at least
        :data:`KV_REUSE_MIN` cached tokens that the new prompt has next are moved down in the KV cache
        instead of being decoded again. Returns how many leading prompt tokens the cache now holds."""
        held, limit = int(llm.n_tokens), len(tokens) - 1
        mem = getattr(llm._ctx, "memory", None)
        if held - n < KV_REUSE_MIN or limit - n < KV_REUSE_MIN or mem is None or not lib().llama_memory_can_shift(mem):
            return n
        cache = llm.input_ids[:held].tolist()
        head_c = head_p = n
        while head_c < held and head_p < limit:
            m = 0
            while head_c + m < held and head_p + m < limit and cache[head_c + m] == tokens[head_p + m]:
                m += 1
            if m < KV_REUSE_MIN:
                head_c += 1
                continue
            llm._ctx.kv_cache_seq_rm(0, head_p, head_c)
            llm._ctx.kv_cache_seq_shift(0, head_c, head_c + m, head_p - head_c)
            llm.input_ids[head_p: head_p + m] = cache[head_c: head_c + m]
            head_c, head_p = head_c + m, head_p + m
        return head_p

    # --- errors and teardown -------------------------------------------------------------------
    def _oom_error(self, listener: LoadListener | None, when: str, code: str | None = None) -> InsufficientMemoryError:
        opts = self.options
        what = "loading the model" if when == "load" else "generating"
        reason = f" (llama_decode returned {code})" if code else ""
        gpu = f"n_gpu_layers={opts.n_gpu_layers}, " if opts.n_gpu_layers else ""
        fix = (f"loaded with {gpu}n_ctx={opts.n_ctx}: run `fmgguf fit` for the numbers, then use a smaller quant "
               f"(e.g. Q4_K_M), fewer GPU layers (--gpu-layers {max(opts.n_gpu_layers // 2, 0)}) or a shorter "
               f"context (--ctx {max(opts.n_ctx // 2, 256)})")
        return InsufficientMemoryError(f"out of memory while {what} {self.path.name}{reason}", fix=fix,
                                       n_ctx=opts.n_ctx, n_gpu_layers=opts.n_gpu_layers)

    def _require(self) -> Any:
        llm = getattr(self, "_llama", None)
        if llm is None:
            from fmgguf.errors import ModelNotLoadedError

            raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
        return llm

    def close(self) -> None:
        """Free the model, context and batch now (not whenever the GC gets to it) and trim the heap."""
        llm = getattr(self, "_llama", None)
        self._llama = None
        self._pieces = {}
        if llm is not None:
            llm.close()
            del llm
        release_memory()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: Sequence[str], hold: int) -> int:
    """Length of the longest tail of ``text`` that could still become a stop string."""
    for n in range(min(hold - 1, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
