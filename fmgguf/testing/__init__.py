"""Test helpers that are real parts: tiny llama.cpp models, their catalog entries, a loopback hub.

Imports are lazy so ``import fmgguf.testing`` costs nothing::

    from fmgguf.testing import build_tiny_model, tiny_card, tiny_repo_files
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {
    "build_tiny_model": "fmgguf.testing.tiny_models",
    "tiny_model_path": "fmgguf.testing.tiny_models",
    "tiny_card": "fmgguf.testing.tiny_cards",
    "tiny_repo_files": "fmgguf.testing.tiny_cards",
    "tiny_spec": "fmgguf.testing.tiny_specs",
    "ARCHES": "fmgguf.testing.tiny_specs",
    "ensure_sdist": "fmgguf.testing.vocab",
    "ensure_vocab": "fmgguf.testing.vocab",
    "smoke_generate": "fmgguf.testing.smoke",
    "cuda_available": "fmgguf.testing.gpu",
    "HubServer": "fmgguf.testing.hub_server",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmgguf.testing' has no attribute {name!r}")
