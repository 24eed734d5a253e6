"""Runtime: GGUF inspection, memory fit, the llama.cpp engine and the model manager.

Importing this package is cheap: the manager (and llama_cpp behind it) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf.runtime.engine.generation import GenerationResult, GenerationStream  # noqa: F401
    from fmgguf.runtime.manager import ModelManager, SwitchResult, get_model_manager  # noqa: F401
    from fmgguf.runtime.runner.loading import LoadedModel  # noqa: F401

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
