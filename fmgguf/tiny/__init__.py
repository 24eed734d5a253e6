"""Tiny but real llama.cpp models built here: random weights over a real tokenizer (Qwen2's, GPT-2's, …),
written as GGUF, with a catalog card and hub-style repository files for each.

The demo falls back to one when no real model can be had offline, and the tests build their models
with it (through :mod:`fmgguf.testing`, which re-exports these names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf.tiny.tiny_cards import tiny_card, tiny_repo_files  # noqa: F401
    from fmgguf.tiny.tiny_models import build_tiny_model, tiny_model_path  # noqa: F401
    from fmgguf.tiny.tiny_specs import ARCHES, tiny_spec  # noqa: F401
    from fmgguf.tiny.vocab import ensure_vocab  # noqa: F401

#: name -> "module:attribute", imported on first use (fmgguf.testing re-exports these too)
EXPORTS: dict[str, str] = {
    "build_tiny_model": "fmgguf.tiny.tiny_models:build_tiny_model",
    "tiny_model_path": "fmgguf.tiny.tiny_models:tiny_model_path",
    "tiny_card": "fmgguf.tiny.tiny_cards:tiny_card",
    "tiny_repo_files": "fmgguf.tiny.tiny_cards:tiny_repo_files",
    "tiny_spec": "fmgguf.tiny.tiny_specs:tiny_spec",
    "ARCHES": "fmgguf.tiny.tiny_specs:ARCHES",
    "ensure_vocab": "fmgguf.tiny.vocab:ensure_vocab",
}

__all__ = list(EXPORTS)

__getattr__ = lazy_exports(__name__, EXPORTS)
