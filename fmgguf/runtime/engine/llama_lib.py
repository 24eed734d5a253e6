"""The one module that imports ``llama_cpp``: :func:`lib` loads it on first use with llama.cpp's log routed
to Python logging (never stderr), :func:`init_backend` starts its backend once per process, and the
type names of llama-cpp-python that the engine's helpers annotate with are named here, for type checkers
only. Every module that calls into llama.cpp (the engine, the slots, the samplers, the grammars, the
draft model, the saved prompt states) gets the library from here, so none of them imports another for it.
"""

from __future__ import annotations

import ctypes
import os
import threading
import types
from typing import TYPE_CHECKING

from fmgguf.runtime.engine.llama_log import LogRouter
from fmgguf.runtime.engine.load_options import bound_omp_spin

if TYPE_CHECKING:
    from types import ModuleType as LlamaLib  # what lib() returns: the llama_cpp module

    from llama_cpp import (  # noqa: F401 - named here for the helpers' annotations
        llama_batch,
        llama_context_p,
        llama_context_params,
        llama_memory_t,
        llama_model_p,
        llama_model_params,
        llama_sampler_p,
        llama_vocab_p,
    )
    from llama_cpp._internals import LlamaContext, LlamaModel  # noqa: F401

#: where llama.cpp's log lines go: the engine adds a listener for each load
ROUTER = LogRouter()
_state: dict[str, object] = {}  # the ctypes callback object must stay referenced for the process' life
_state_lock = threading.Lock()


def lib() -> LlamaLib:
    """The ``llama_cpp`` module, imported on first use, with its log routed to our logger."""
    with _state_lock:
        mod = _state.get("lib")
        if isinstance(mod, types.ModuleType):
            return mod
        bound_omp_spin(os.environ)
        import llama_cpp  # noqa: PLC0415 - heavy, and only this module may import it

        callback = llama_cpp.llama_log_callback(ROUTER)
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _state["callback"] = callback
        _state["lib"] = llama_cpp
        return llama_cpp


def init_backend() -> None:
    """``llama_backend_init`` once per process, before the first model loads."""
    mod = lib()
    with _state_lock:
        if not _state.get("backend"):
            mod.llama_backend_init()
            _state["backend"] = True
