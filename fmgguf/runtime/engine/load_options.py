"""How llama.cpp loads a file: :class:`LoadOptions` (chosen by the manager) and the llama.cpp
model and context parameters made from them. The ``llama_cpp`` module is passed in by the engine
(the one module that imports it)."""

from __future__ import annotations

import ctypes
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from fmgguf.errors import EngineError

if TYPE_CHECKING:
    from fmgguf.runtime.engine.llama_lib import (
        LlamaContext,
        LlamaLib,
        LlamaModel,
        llama_context_params,
        llama_model_params,
    )


class _LlamaKwargsBase(TypedDict):
    n_ctx: int
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    n_threads_batch: int
    flash_attn: bool
    main_gpu: int
    use_mmap: bool
    verbose: bool
    n_seq_max: int
    kv_unified: bool


class LlamaKwargs(_LlamaKwargsBase, total=False):
    """llama-cpp-python's ``Llama(...)`` keyword arguments for a :class:`LoadOptions` (the optional ones
    only when set)."""

    tensor_split: list[float]
    split_mode: int
    type_k: int
    type_v: int
    swa_full: bool

#: spins an idle llama.cpp worker thread (OpenMP) makes waiting for the next decode before it sleeps.
#: libgomp's default, 300,000, kept a core busy for ~5 ms after every stream (5.0-6.3 ms of CPU
#: measured on a 2-core EPYC), beside whatever ran next on the machine: another model's first decode
#: (another runner, or this process's engine beside a runner's) was slowed by it. This many (~0.85 ms
#: there) still covers the gap between two tokens (sampling, median 0.44 ms), so generation keeps its pace.
OMP_SPIN_COUNT = "50000"


def bound_omp_spin(env: MutableMapping[str, str]) -> None:
    """Set :data:`OMP_SPIN_COUNT` in ``env`` unless OpenMP's waiting was set there already (libgomp
    reads it once, when llama.cpp's libraries load: for this process, before :func:`lib` imports them)."""
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT


_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


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
    #: generations served at once (slots of the one context; a FIM lane slot comes on top)
    parallel: int = 4
    #: host RAM for saved KV states of earlier prompts (runtime.engine.prompt_cache; 0 = no cache)
    prompt_cache_bytes: int = 0
    #: speculative decoding's draft model (runtime.engine.draft_model): its GGUF, its name in messages
    #: and requests (``draft:<name>``), and its GPU layers (it shares the target's context size and slots)
    draft_path: str | None = None
    draft_name: str | None = None
    draft_gpu_layers: int = 0
    #: the draft's tensor_split when it goes on a GPU: its whole weight on the device the plan chose
    draft_tensor_split: tuple[float, ...] | None = None
    #: a draft ends before a token the draft model is less sure of (llama-server's --draft-p-min)
    draft_p_min: float = 0.75
    #: a draft model drafts only where its measured costs promise this speed-up (0: always; see
    #: runtime.engine.draft_costs)
    draft_min_gain: float = 1.05

    def llama_kwargs(self) -> LlamaKwargs:
        from fmgguf.runtime.hw.threads import choose_threads

        threads = choose_threads(self.n_threads).n_threads
        kw: LlamaKwargs = {
            "n_ctx": int(self.n_ctx), "n_gpu_layers": int(self.n_gpu_layers), "n_batch": int(self.n_batch),
            "n_ubatch": int(self.n_batch), "n_threads": threads, "n_threads_batch": threads,
            "flash_attn": bool(self.flash_attn), "main_gpu": int(self.main_gpu), "use_mmap": self.use_mmap,
            "verbose": False, "n_seq_max": n_slots(self.parallel), "kv_unified": True,
        }
        if self.tensor_split:
            kw["tensor_split"] = [float(x) for x in self.tensor_split]
        if self.split_mode is not None:
            kw["split_mode"] = split_mode_value(self.split_mode)
        if self.type_k is not None:
            kw["type_k"] = kv_type_value(self.type_k)
        if self.type_v is not None:
            kw["type_v"] = kv_type_value(self.type_v)
        if self.swa_full is not None:
            kw["swa_full"] = self.swa_full
        return kw


def n_slots(parallel: int) -> int:
    """Sequences of the context: ``parallel`` slots and, with more than one, a FIM lane slot."""
    p = max(1, int(parallel))
    return p + 1 if p > 1 else 1


def load_llama(mod: LlamaLib, path: Path, params: llama_model_params,
               cparams: llama_context_params) -> tuple[LlamaModel, LlamaContext]:
    """llama-cpp-python's model and context wrappers for ``path`` (ValueError/RuntimeError on failure)."""
    if not path.is_file():
        raise ValueError(f"Model path does not exist: {path}")
    model = mod._internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    try:
        return model, mod._internals.LlamaContext(model=model, params=cparams, verbose=False)
    except BaseException:
        model.close()
        raise


def model_params(mod: LlamaLib, kw: LlamaKwargs) -> tuple[llama_model_params, ctypes.Array[ctypes.c_float] | None]:
    """llama_model_params for ``kw`` (LoadOptions.llama_kwargs) and the array it points to (kept alive)."""
    mp = mod.llama_model_default_params()
    layers = int(kw["n_gpu_layers"])
    mp.n_gpu_layers = 0x7FFFFFFF if layers == -1 else layers
    mp.split_mode = int(kw.get("split_mode", mod.LLAMA_SPLIT_MODE_LAYER))
    mp.main_gpu = int(kw["main_gpu"])
    split = None
    if kw.get("tensor_split"):
        if len(kw["tensor_split"]) > mod.LLAMA_MAX_DEVICES:
            raise EngineError(f"tensor_split has {len(kw['tensor_split'])} entries, llama.cpp takes at most "
                              f"{mod.LLAMA_MAX_DEVICES}", fix="give one entry per device")
        split = (ctypes.c_float * mod.LLAMA_MAX_DEVICES)(*kw["tensor_split"])
        mp.tensor_split = split
    mp.load_mode = mod.LLAMA_LOAD_MODE_MMAP if kw["use_mmap"] else mod.LLAMA_LOAD_MODE_NONE
    return mp, split


def context_params(mod: LlamaLib, kw: LlamaKwargs) -> llama_context_params:
    cp = mod.llama_context_default_params()
    cp.n_ctx = int(kw["n_ctx"])
    cp.n_batch = min(int(kw["n_batch"]), cp.n_ctx)
    cp.n_ubatch = min(int(kw["n_ubatch"]), cp.n_batch)
    cp.n_threads = cp.n_threads_batch = int(kw["n_threads"])
    cp.n_seq_max = int(kw["n_seq_max"])
    cp.kv_unified = bool(kw["kv_unified"])
    cp.flash_attn_type = mod.LLAMA_FLASH_ATTN_TYPE_ENABLED if kw["flash_attn"] else mod.LLAMA_FLASH_ATTN_TYPE_DISABLED
    if "type_k" in kw:
        cp.type_k = kw["type_k"]
    if "type_v" in kw:
        cp.type_v = kw["type_v"]
    if "swa_full" in kw:
        cp.swa_full = kw["swa_full"]
    return cp


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
