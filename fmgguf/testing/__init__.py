"""Test helpers that are real parts: tiny llama.cpp models (built by :mod:`fmgguf.tiny`), their catalog
entries, a loopback hub.

Imports are lazy so ``import fmgguf.testing`` costs nothing::

    from fmgguf.testing import build_tiny_model, tiny_card, tiny_repo_files
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports
from fmgguf.tiny import EXPORTS as TINY_EXPORTS

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf.testing.bad_models import BAD_KINDS, build_bad_model, raw_llama_outcome  # noqa: F401
    from fmgguf.testing.gpu import cuda_available  # noqa: F401
    from fmgguf.testing.hub_server import HubServer  # noqa: F401
    from fmgguf.testing.smoke import smoke_generate  # noqa: F401
    from fmgguf.tiny.tiny_cards import tiny_card, tiny_repo_files  # noqa: F401
    from fmgguf.tiny.tiny_models import build_tiny_model, tiny_model_path  # noqa: F401
    from fmgguf.tiny.tiny_specs import ARCHES, tiny_spec  # noqa: F401
    from fmgguf.tiny.vocab import ensure_sdist, ensure_vocab  # noqa: F401

_LAZY: dict[str, str] = {
    **TINY_EXPORTS,
    "ensure_sdist": "fmgguf.tiny.vocab:ensure_sdist",
    "smoke_generate": "fmgguf.testing.smoke:smoke_generate",
    "cuda_available": "fmgguf.testing.gpu:cuda_available",
    "HubServer": "fmgguf.testing.hub_server:HubServer",
    "BAD_KINDS": "fmgguf.testing.bad_models:BAD_KINDS",
    "build_bad_model": "fmgguf.testing.bad_models:build_bad_model",
    "raw_llama_outcome": "fmgguf.testing.bad_models:raw_llama_outcome",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
