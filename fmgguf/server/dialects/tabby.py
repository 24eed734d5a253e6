"""Tabby's client API (the Tabby IDE extensions point at a URL + token): GET /v1/health, POST
/v1/completions with ``segments`` (routes_openai dispatches on the body: ``segments`` means Tabby,
``prompt`` means OpenAI), POST /v1/events (accepted, not stored) and GET /v1beta/server_setting."""

from __future__ import annotations

import os
import platform

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from fmgguf.server.dialects.core import GenRequest, Sampling, start
from fmgguf.server.dialects.routing import fim_able, loaded_names
from fmgguf.server.schemas import MAX_PROMPT_CHARS
from fmgguf.server.state import state_of

router = APIRouter(tags=["tabby"])
#: Tabby's own server generates at most this many tokens per completion (max_decoding_tokens)
TABBY_MAX_TOKENS = 64


class Snippet(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filepath: str = Field(default="", max_length=4096)
    body: str = Field(default="", max_length=MAX_PROMPT_CHARS)


class Segments(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prefix: str = Field(max_length=MAX_PROMPT_CHARS)
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    filepath: str | None = Field(default=None, max_length=4096)
    git_url: str | None = None
    declarations: list[Snippet] | None = Field(default=None, max_length=256)
    relevant_snippets_from_changed_files: list[Snippet] | None = Field(default=None, max_length=256)
    relevant_snippets_from_recently_opened_files: list[Snippet] | None = Field(default=None, max_length=256)
    clipboard: str | None = None


class TabbyCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    language: str | None = None
    segments: Segments
    user: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0)
    model: str | None = Field(default=None, max_length=300)

    def extra_files(self) -> tuple[tuple[str, str], ...]:
        seg = self.segments
        groups = (seg.relevant_snippets_from_recently_opened_files, seg.relevant_snippets_from_changed_files,
                  seg.declarations)  # least relevant first: the layout keeps the newest (last) when it must cut
        return tuple((s.filepath or "snippet", s.body) for group in groups for s in (group or []) if s.body)


async def tabby_completion(request: Request, body: TabbyCompletion) -> dict:
    """A Tabby completion: its segments become one FIM request with the snippets as repo-level context."""
    from fmgguf.server.dialects.llamacpp import completion_id

    seg = body.segments
    host = request.client.host if request.client else "?"
    req = GenRequest("fim", "tabby", body.model, prompt=seg.prefix, suffix=seg.suffix or "",
                     extra=body.extra_files(), filename=seg.filepath,
                     sampling=Sampling(max_tokens=TABBY_MAX_TOKENS,
                                       temperature=0.1 if body.temperature is None else body.temperature,
                                       seed=None if body.seed is None else body.seed % 2**31),
                     client=f"tabby|{host}|{request.headers.get('user-agent', '')}|{body.user or ''}")
    outcome = await (await start(state_of(request), req)).collect()
    why = {"stop_reason": outcome.stop_reason} if outcome.stop_reason else {}
    return {"id": completion_id(), "choices": [{"index": 0, "text": outcome.text, **why}]}


@router.get("/v1/health")
def health(request: Request) -> dict:
    """Tabby's health state: the completion and chat models, device and version."""
    from fmgguf import __version__

    state = state_of(request)
    manager = state.manager_if_built
    resident = loaded_names(manager)
    fim = next((m for m, _ in resident if fim_able(state, m)), None)
    chat = next((m for m, _ in resident if m in state.catalog and state.catalog.get(m).chat_template), None)
    return {"model": fim or (resident[0][0] if resident else state.settings.default_model),
            "chat_model": chat, "device": "cpu", "arch": platform.machine(),
            "cpu_info": platform.processor() or platform.machine(), "cpu_count": os.cpu_count() or 1,
            "cuda_devices": [], "webserver": False,
            "version": {"build_date": "", "build_timestamp": "", "git_sha": "", "git_describe": f"fmgguf-{__version__}"}}


@router.post("/v1/events")
async def events(request: Request) -> dict:
    """Tabby's usage events (view/select/dismiss): accepted and dropped."""
    await request.body()
    return {}


@router.get("/v1beta/server_setting")
def server_setting() -> dict:
    """Tabby clients ask whether to send usage telemetry: they need not."""
    return {"disable_client_side_telemetry": True}
