"""Verified, resumable downloads into the huggingface_hub cache; the local model store; bundles.

``transfer`` is the only module that imports huggingface_hub; everything else here is plain Python.
Names are imported lazily so ``fmgguf.download.records`` (used by ``fmgguf list``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf.download.downloader import ModelDownloader, get_model_downloader  # noqa: F401
    from fmgguf.download.store import FileCheck, Store, VerifyResult  # noqa: F401

_LAZY = {
    "ModelDownloader": "fmgguf.download.downloader:ModelDownloader",
    "get_model_downloader": "fmgguf.download.downloader:get_model_downloader",
    "VerifyResult": "fmgguf.download.store:VerifyResult",
    "FileCheck": "fmgguf.download.store:FileCheck",
    "Store": "fmgguf.download.store:Store",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
