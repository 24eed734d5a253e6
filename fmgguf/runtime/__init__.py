"""Runtime: GGUF inspection, memory fit, the llama.cpp engine and the model manager.

Importing this package is cheap: the manager (and llama_cpp behind it) load on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ModelManager": "fmgguf.runtime.manager:ModelManager",
    "get_model_manager": "fmgguf.runtime.manager:get_model_manager",
    "SwitchResult": "fmgguf.runtime.manager:SwitchResult",
    "GenerationResult": "fmgguf.runtime.generation:GenerationResult",
    "GenerationStream": "fmgguf.runtime.generation:GenerationStream",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    import importlib

    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fmgguf.runtime' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
