"""Verified, resumable downloads into the huggingface_hub cache; the local model store; bundles.

``transfer`` is the only module that imports huggingface_hub; everything else here is plain Python.
Names are imported lazily so ``fmgguf.download.records`` (used by ``fmgguf list``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "ModelDownloader": "fmgguf.download.downloader",
    "get_model_downloader": "fmgguf.download.downloader",
    "VerifyResult": "fmgguf.download.downloader",
    "FileCheck": "fmgguf.download.downloader",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmgguf.download' has no attribute {name!r}")
