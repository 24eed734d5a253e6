"""The app factory: one FastAPI app from explicit settings and components, and its one error handler."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from fmgguf import __version__
from fmgguf.errors import FmggufError, http_status_for
from fmgguf.server.state import ServerState

if TYPE_CHECKING:
    from fmgguf.bench import ModelBenchmarker
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.settings import Settings

log = logging.getLogger("fmgguf.server")
STATIC_DIR = Path(__file__).parent / "static"
#: paths anyone may read without the API key: the page, its assets, the schema
_PUBLIC_PREFIXES = ("/static/", "/openapi.json", "/docs", "/redoc", "/healthz")
#: liveness checks that answer without the key (llama.cpp's /health is public there too)
_PUBLIC_PATHS = ("/", "/models", "/health")


def create_app(settings: "Settings", manager: "ModelManager | None" = None, downloader: "ModelDownloader | None" = None,
               benchmarker: "ModelBenchmarker | None" = None, catalog: "Catalog | None" = None, *,
               api_key: str | None = None, max_queue: int = 64) -> FastAPI:
    """Build the server app. Components left out are built from ``settings`` when first needed.

    ``api_key``: when set, every /api and /v1 request needs ``Authorization: Bearer <key>``.
    ``max_queue``: generation requests allowed to wait for each model, behind the ones it is running
    (more get 429); the same bound applies to requests waiting behind a switch or a benchmark.
    """
    state = ServerState(settings, manager=manager, downloader=downloader, benchmarker=benchmarker,
                        catalog=catalog, api_key=api_key, max_queue=max_queue)
    app = FastAPI(
        title="fmgguf", version=__version__,
        description="Model management for open code models (GGUF on llama.cpp) and an OpenAI-compatible API.",
    )
    app.state.fmgguf = state

    _install_error_handlers(app)
    _install_auth(app, state)

    from fmgguf.server.routes_bench import router as bench_router
    from fmgguf.server.routes_models import router as models_router
    from fmgguf.server.routes_openai import router as openai_router

    app.include_router(models_router)
    app.include_router(bench_router)
    app.include_router(openai_router)
    from fmgguf.server.dialects import install as install_dialects

    install_dialects(app)  # Ollama, llama.cpp, Tabby, Mistral FIM; /metrics

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/models")

    @app.api_route("/models", methods=["GET", "HEAD"], include_in_schema=False)
    def models_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict:
        """Liveness: answers while generations run."""
        return {"ok": True, "version": __version__, "auth": state.api_key is not None}

    return app


# --- errors: the one table, one handler -----------------------------------------------------------
def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def error_response(request: Request, status: int, payload: dict, headers: dict | None = None) -> JSONResponse:
    """Our errors as JSON: ``{"error", "message", "fix", ...}``; on /v1 the OpenAI shape as well."""
    from fmgguf.server.dialects import error_body

    dialect = error_body(request.url.path, status, payload)
    if dialect is not None:
        body = dialect
    elif _is_openai(request):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": payload.get("message", ""), "type": kind, "code": payload.get("error"),
                          "param": payload.get("param"), "fix": payload.get("fix")}}
    else:
        body = payload
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FmggufError)
    async def fmgguf_error(request: Request, exc: FmggufError) -> JSONResponse:
        status = http_status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.one_line())
        headers = {"Retry-After": str(exc.details.get("retry_after", 1))} if status in (429, 503) else None
        return error_response(request, status, exc.to_dict(), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        bad_json = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if bad_json is not None:  # not a schema problem: the body could not be parsed at all
            loc = bad_json.get("loc", ())
            where = f", char {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
            reason = str((bad_json.get("ctx") or {}).get("error") or "malformed")
            payload = {"error": "InvalidRequestError", "message": f"request body is not valid JSON ({reason}{where})",
                       "fix": "send a JSON object with 'Content-Type: application/json' (the schema is at /openapi.json)",
                       "param": None}
            return error_response(request, 400, payload)
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        first = exc.errors()[0] if exc.errors() else {}
        payload = {"error": "InvalidRequestError", "message": "invalid request: " + "; ".join(problems),
                   "fix": "correct the request (the schema is at /openapi.json)",
                   "param": ".".join(str(p) for p in first.get("loc", ())[1:]) or None}
        return error_response(request, 422, payload)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}
        payload = {"error": names.get(exc.status_code, "HTTPError"), "message": str(exc.detail),
                   "fix": "see /openapi.json for the endpoints" if exc.status_code in (404, 405) else None}
        return error_response(request, exc.status_code, payload, exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # a bug: log it, answer one line
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        payload = {"error": type(exc).__name__, "message": f"internal error: {' '.join(str(exc).split())[:300]}",
                   "fix": "see the server log and report the bug"}
        return error_response(request, 500, payload)


# --- auth ------------------------------------------------------------------------------------------
def _install_auth(app: FastAPI, state: ServerState) -> None:
    app.add_middleware(_RequireKey, state=state)


class _RequireKey:
    """The API key check as a plain ASGI middleware: a request it lets through goes straight on
    (Starlette's ``@app.middleware("http")`` relays every streamed chunk through a task and a memory
    stream, a cost per token on every SSE stream)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.state.api_key
        if scope["type"] != "http" or key is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        if request.method == "OPTIONS" or path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _presented_key(request)
        if not token or not secrets.compare_digest(token.encode(), key.encode()):
            payload = {"error": "Unauthorized", "message": "this server needs an API key",
                       "fix": "send the header 'Authorization: Bearer <key>' with the key given to `fmgguf serve --api-key`"}
            await error_response(request, 401, payload, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _presented_key(request: Request) -> str:
    """The key in whichever form the client sends it: ``Authorization: Bearer`` (OpenAI, Continue,
    llama.vscode, Tabby, the ollama client's headers) or ``Token``, ``x-api-key`` (Anthropic-style
    tools), ``api-key`` (Azure-style clients)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "") or request.headers.get("api-key", "")
