"""Hugging Face checkpoint → GGUF (F16, Q8_0, Q4_K_M) and a catalog entry, with llama.cpp's own tools.

Used by ``fmgguf convert`` and ``scripts/convert/convert.py``. Heavy imports (llama_cpp, torch via the
converter subprocess) happen only inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

__all__ = ["convert_checkpoint", "ConvertResult", "DEFAULT_QUANTS"]

if TYPE_CHECKING:
    from fmgguf.convert.pipeline import DEFAULT_QUANTS, ConvertResult, convert_checkpoint

__getattr__ = lazy_exports(__name__, {name: f"fmgguf.convert.pipeline:{name}" for name in __all__})
