"""`fmgguf serve`: the model-management REST API, the OpenAI-compatible API and the /models page.

Build the app with :func:`create_app` (a factory: no module globals) and run it with
:func:`fmgguf.server.runner.serve`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`fmgguf.server.app.create_app` (imported lazily: FastAPI is an optional extra)."""
    from fmgguf.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)
