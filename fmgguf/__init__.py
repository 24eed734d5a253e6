"""fmgguf: a local, offline-capable home for open code models (GGUF on llama.cpp).

Public API (imported lazily, so `import fmgguf` stays cheap)::

    from fmgguf import Catalog, get_model_downloader, get_model_manager, get_model_benchmarker
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:  # the lazy names, for type checkers
    from fmgguf import errors  # noqa: F401
    from fmgguf.bench import ModelBenchmarker, get_model_benchmarker  # noqa: F401
    from fmgguf.catalog import Catalog, ModelCard, ModelConfig, ModelProvider  # noqa: F401
    from fmgguf.download import ModelDownloader, get_model_downloader  # noqa: F401
    from fmgguf.runtime import ModelManager, get_model_manager  # noqa: F401
    from fmgguf.settings import Settings, load_settings  # noqa: F401

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Catalog": "fmgguf.catalog:Catalog",
    "ModelCard": "fmgguf.catalog:ModelCard",
    "ModelConfig": "fmgguf.catalog:ModelConfig",
    "ModelProvider": "fmgguf.catalog:ModelProvider",
    "Settings": "fmgguf.settings:Settings",
    "load_settings": "fmgguf.settings:load_settings",
    "ModelDownloader": "fmgguf.download:ModelDownloader",
    "get_model_downloader": "fmgguf.download:get_model_downloader",
    "ModelManager": "fmgguf.runtime:ModelManager",
    "get_model_manager": "fmgguf.runtime:get_model_manager",
    "ModelBenchmarker": "fmgguf.bench:ModelBenchmarker",
    "get_model_benchmarker": "fmgguf.bench:get_model_benchmarker",
    "errors": "fmgguf.errors:",
}

__all__ = ["__version__", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
