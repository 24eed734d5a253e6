"""Runtime: GGUF inspection, memory fit, the llama.cpp engine and the model manager.

Importing this package is cheap: the manager (and llama_cpp behind it) load on first use.
"""

from __future__ import annotations

from fmgguf._util import lazy_exports

_LAZY = {
    "ModelManager": "fmgguf.runtime.manager:ModelManager",
    "get_model_manager": "fmgguf.runtime.manager:get_model_manager",
    "SwitchResult": "fmgguf.runtime.manager:SwitchResult",
    "GenerationResult": "fmgguf.runtime.engine.generation:GenerationResult",
    "GenerationStream": "fmgguf.runtime.engine.generation:GenerationStream",
    "LoadedModel": "fmgguf.runtime.runner.loading:LoadedModel",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
