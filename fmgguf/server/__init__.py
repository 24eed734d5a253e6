"""`fmgguf serve`: the model-management REST API, the OpenAI-compatible API and the /models page.

Build the app with :func:`create_app` (a factory: no module globals) and run it with
:func:`fmgguf.server.runner.serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmgguf._util import lazy_exports

if TYPE_CHECKING:
    from fmgguf.server.app import create_app

__all__ = ["create_app"]

#: :func:`fmgguf.server.app.create_app`, imported on first use (FastAPI is an optional extra)
__getattr__ = lazy_exports(__name__, {"create_app": "fmgguf.server.app:create_app"})
