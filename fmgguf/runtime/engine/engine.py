"""A loaded model in llama.cpp (through llama-cpp-python, which :mod:`fmgguf.runtime.engine.llama_lib`
imports).

It owns: loading a validated GGUF (llama-cpp-python's model and context wrappers, one context with
``parallel`` slots over a unified KV cache) with the offload options we chose, reading load progress
and the real buffer sizes from llama.cpp's log, and giving memory back on close. Generation runs in the slot scheduler
(:mod:`fmgguf.runtime.engine.slots`): :meth:`Engine.stream` hands it a request and yields its pieces.

Nothing here decides *what* to load or how much to offload: the manager does that.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import ContextOverflowError, EngineError, InsufficientMemoryError
from fmgguf.runtime.engine.generation import GenerationStats  # noqa: F401 - read from here too
from fmgguf.runtime.engine.kv_reuse import KV_REUSE_MIN  # noqa: F401 - re-exported: callers read it here
from fmgguf.runtime.engine.llama_lib import ROUTER, init_backend, lib
from fmgguf.runtime.engine.llama_log import LoadListener
from fmgguf.runtime.engine.load_options import (  # noqa: F401 - LoadOptions & co. are read from here too
    LoadOptions,
    bound_omp_spin,
    context_params,
    kv_type_value,
    load_llama,
    model_params,
    n_slots,
    split_mode_value,
)

if TYPE_CHECKING:
    from fmgguf.runtime.engine.constraints import Constraint
    from fmgguf.runtime.engine.draft_model import DraftModel
    from fmgguf.runtime.engine.llama_lib import LlamaContext, LlamaLib, LlamaModel, llama_model_p
    from fmgguf.runtime.engine.load_options import LlamaKwargs
    from fmgguf.runtime.engine.slot_requests import Request, Sink
    from fmgguf.runtime.engine.slots import Scheduler


log = logging.getLogger(__name__)

_state: dict[str, object] = {}  # malloc_trim, looked up once


def _allocated(buffers: Mapping[str, object]) -> int:
    """The bytes of llama.cpp's buffers as the load log reported them (weights, KV, compute, output)."""
    return sum(n for k in ("model", "kv", "compute", "output", "rs") if isinstance(n := buffers.get(k, 0), int))


def supports_gpu_offload() -> bool:
    """A local GPU to offload to (llama_supports_gpu_offload() is true on any build with the RPC backend)."""
    from fmgguf.runtime.hw.devices import ggml_devices

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


# --- the engine ------------------------------------------------------------------------------------
class Engine:
    """One loaded model: llama.cpp's model and context, the slot scheduler, and what we learned loading."""

    def __init__(self, path: str | Path, options: LoadOptions,
                 progress: Callable[[str, float], None] | None = None) -> None:
        self.path = Path(path)
        self.options = options
        mod = lib()
        if options.rpc_servers:  # probed in Python first: llama.cpp aborts on a worker it cannot reach
            from fmgguf.runtime.rpc.rpc import attach_workers

            attach_workers(options.rpc_servers)
        kw = options.llama_kwargs()
        listener = LoadListener(progress)
        ROUTER.add(listener)
        started = time.perf_counter()
        listener.report("weights", 0.1)
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._slots: Scheduler | None = None
        self._start_lock = threading.Lock()
        try:
            self._load(mod, kw)
        except MemoryError:
            self._free()
            raise self._oom_error(listener, "load") from None
        except (ValueError, RuntimeError) as exc:
            self._free()
            if listener.oom():
                raise self._oom_error(listener, "load") from None
            detail = next((ln.strip() for ln in reversed(listener.lines) if "error" in ln.lower()), str(exc))
            raise EngineError(f"llama.cpp could not load {self.path.name}: {detail}",
                              fix="run `fmgguf inspect FILE` to check the file, or re-download it") from None
        finally:
            ROUTER.remove(listener)
        self.load_s = time.perf_counter() - started
        self.buffers = listener.buffers()
        self._describe(mod)
        if options.draft_path:
            from fmgguf.runtime.engine.draft_model import open_draft

            try:
                self.draft = open_draft(mod, options, self._model.model, self._vocab, self.path.name, ROUTER)
            except BaseException:
                self._free()
                raise
        self.load_log = listener.lines
        self.n_threads = int(kw["n_threads"])
        from fmgguf.runtime.engine.prompt_state import PromptStates

        #: saved slot states of earlier prompts, in host RAM (agents' system prompts); None without one
        self.prompt_states = PromptStates(options.prompt_cache_bytes) if options.prompt_cache_bytes > 0 else None
        listener.report("ready", 1.0)

    def prompt_cache_stats(self) -> dict[str, int]:
        """The host-RAM prompt cache's counters (empty without one)."""
        return {} if self.prompt_states is None else dataclasses.asdict(self.prompt_states.cache.stats())

    def _load(self, mod: LlamaLib, kw: LlamaKwargs) -> None:
        init_backend()
        params, self._split = model_params(mod, kw)
        self._model, self._ctx = load_llama(mod, self.path, params, context_params(mod, kw))

    def _describe(self, mod: LlamaLib) -> None:
        model = self._model
        self.n_ctx = min(int(self.options.n_ctx), int(self._ctx.n_ctx()))
        self.n_ctx_train = int(model.n_ctx_train())
        self.metadata: dict[str, str] = dict(model.metadata() or {})
        self.vocab = self._vocab = model.vocab
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.bos_id = int(mod.llama_vocab_bos(self._vocab))
        self.eos_id = int(mod.llama_vocab_eos(self._vocab))
        self.add_bos = bool(model.add_bos_token())
        self.bos_text = self.token_text(self.bos_id) if self.bos_id >= 0 else ""
        self.eos_text = self.token_text(self.eos_id) if self.eos_id >= 0 else ""
        self.parallel = max(1, int(self.options.parallel))

    # --- facts ---------------------------------------------------------------------------------
    #: :class:`~fmgguf.runtime.engine.engine_api.EngineAPI` facts: this process, token ids
    pid: int | None = None
    tokenizes_in_stream: bool = False
    #: speculative decoding's draft model (:class:`~fmgguf.runtime.engine.draft_model.DraftModel`), None: none
    draft: DraftModel | None = None

    @property
    def slots(self) -> int:
        return self.parallel

    @property
    def lanes(self) -> int:  # the FIM lane slot beside the ``parallel`` ones
        return n_slots(self.parallel) - self.parallel

    @property
    def closed(self) -> bool:
        return self._model is None

    @property
    def alive(self) -> bool:
        return self._model is not None

    def failure(self) -> None:  # in-process, llama.cpp fails by raising (or takes this process with it)
        return None

    @property
    def draft_name(self) -> str | None:
        """The draft model's name (``draft:<name>`` in requests), None without one."""
        return None if self.draft is None else self.draft.name

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template") or None

    def memory_bytes(self) -> int:
        """What llama.cpp reported allocating for this model (weights + KV + compute + output)."""
        total = sum(_allocated(b) for b in (self.buffers, self.draft.buffers if self.draft is not None else {}))
        if total:
            return total
        return int(lib().llama_model_size(self._require().model))

    def model_ptr(self) -> llama_model_p:
        """llama.cpp's ``llama_model *`` (for the scheduler's llama.cpp calls)."""
        return self._require().model

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
        return str(self._require().token_get_text(token))

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
               repeat_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
               stop: Sequence[str] | None = None, seed: int | None = None, priority: bool = False,
               constraint: Constraint | None = None, cancel: threading.Event | None = None,
               speculative: str | None = None) -> Iterator[str]:
        """Yield text pieces for ``tokens``; ``stats`` says how it ended. Other streams of this engine
        run beside it (continuous batching); ``priority`` puts its prompt first, on the FIM lane slot.

        Ends with finish_reason ``stop`` (end-of-generation token or a stop string), ``length``
        (``max_tokens``), ``context`` (the context window is full) or ``cancelled``.
        """
        from fmgguf.runtime.engine.slots import QueueSink

        req = self.request(tokens, stats, QueueSink(), cancel=cancel, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, top_k=top_k, min_p=min_p, repeat_penalty=repeat_penalty,
                           presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, stop=stop,
                           seed=seed, priority=priority, constraint=constraint, speculative=speculative)
        return req.sink.pieces(req, self.submit)  # type: ignore[attr-defined]

    def request(self, tokens: Sequence[int], stats: GenerationStats, sink: Sink, *,
                cancel: threading.Event | None = None, max_tokens: int | None = 256, stop: Sequence[str] | None = None,
                priority: bool = False, constraint: Constraint | None = None, speculative: str | None = None,
                **sampling: float | None) -> Request:
        """A :class:`~fmgguf.runtime.engine.slots.Request` for :meth:`submit` (the arguments of :meth:`stream`)."""
        from fmgguf.runtime.engine.drafting import request_mode
        from fmgguf.runtime.engine.sampling import SamplingParams
        from fmgguf.runtime.engine.slots import Request

        return Request(tokens=self.prompt_tokens(tokens, stats), stats=stats, sink=sink,
                       params=SamplingParams(**sampling).check(), max_tokens=max_tokens, stop=tuple(stop or ()),
                       priority=bool(priority), constraint=constraint, cancel=cancel or threading.Event(),
                       speculative=request_mode(speculative, self.draft_name))

    def prompt_tokens(self, tokens: Sequence[int], stats: GenerationStats) -> list[int]:
        """The prompt as the scheduler takes it (an empty one is the BOS token); ContextOverflowError
        when it leaves no room to generate."""
        tokens = [int(t) for t in tokens]
        stats.started = stats.started or time.perf_counter()
        if not tokens:
            tokens = [self.bos_id if self.bos_id >= 0 else self.eos_id]
        stats.prompt_tokens = len(tokens)
        if self.n_ctx - len(tokens) <= 0:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context window is {self.n_ctx}",
                fix="shorten the prompt or load the model with a larger n_ctx (--ctx)")
        return tokens

    def submit(self, req: Request) -> Scheduler:
        """Queue a :class:`~fmgguf.runtime.engine.slots.Request` for the slots (the scheduler starts on first use)."""
        self._require()
        with self._start_lock:
            slots = self._slots
            if slots is None:
                from fmgguf.runtime.engine.slots import Scheduler

                slots = self._slots = Scheduler(self, self._ctx.ctx, self.options.n_batch, self.parallel)
        slots.submit(req)
        return slots

    # --- errors and teardown -------------------------------------------------------------------
    def oom_error(self, when: str, code: str | None = None) -> InsufficientMemoryError:
        return self._oom_error(None, when, code)

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

    def _require(self) -> LlamaModel:
        model = self._model
        if model is None:
            from fmgguf.errors import ModelNotLoadedError

            raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
        return model

    def _free(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.close()  # running streams end as cancelled
        draft, self.draft = self.draft, None
        if draft is not None:
            draft.close()
        ctx, model = self._ctx, self._model
        self._ctx = self._model = None
        if ctx is not None:
            ctx.close()
        if model is not None:
            model.close()

    def close(self) -> None:
        """Free the model, context and batch now (not whenever the GC gets to it) and trim the heap."""
        self._free()
        self._pieces = {}
        release_memory()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
