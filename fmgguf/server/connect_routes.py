"""GET /api/connect: the editor settings for this server (the /models page's "Connect your editor" panel)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from fmgguf.errors import InvalidRequestError
from fmgguf.server.editor_config import TOOLS, config_for, pick_roles
from fmgguf.server.json_views import downloaded_pairs
from fmgguf.server.state import state_of

router = APIRouter(prefix="/api", tags=["editors"])


@router.get("/connect")
def connect(request: Request, tool: str | None = Query(None, max_length=40)) -> dict:
    """Settings that point each editor (or ``tool``) at this server, with the right model ids and roles.
    The API key is shown as a placeholder, never echoed."""
    state = state_of(request)
    if tool is not None and tool not in TOOLS:
        raise InvalidRequestError(f"unknown tool {tool!r}", fix=f"use one of {', '.join(TOOLS)}")
    base = str(request.base_url).rstrip("/")
    cur = state.current()
    roles = pick_roles(state.catalog, sorted(downloaded_pairs(state.downloader)), base,
                       "YOUR-API-KEY" if state.api_key else None, [cur["id"]] if cur else [],
                       int((cur or {}).get("n_ctx") or state.settings.default_ctx), settings=state.settings)
    tools = [tool] if tool else list(TOOLS)
    return {"base_url": base, "fim_model": roles.fim, "chat_model": roles.chat,
            "tools": [config_for(t, roles).as_dict() for t in tools]}
