"""A read-only, hub-compatible mirror (``fmgguf mirror serve DIR|BUNDLE``): air-gapped machines pull
through ``HF_ENDPOINT`` from one machine that holds the files.

Importing this package is cheap; the parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf.mirror.server import MirrorServer  # noqa: F401
    from fmgguf.mirror.sources import MirrorFile, MirrorRepo, load_source  # noqa: F401

_LAZY = {
    "MirrorServer": "fmgguf.mirror.server:MirrorServer",
    "MirrorRepo": "fmgguf.mirror.sources:MirrorRepo",
    "MirrorFile": "fmgguf.mirror.sources:MirrorFile",
    "load_source": "fmgguf.mirror.sources:load_source",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
