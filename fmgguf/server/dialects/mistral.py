"""Mistral's fill-in-the-middle API, POST /v1/fim/completions (minuet-ai.nvim, Tabby's mistral backend):
``prompt`` is the code before the cursor, ``suffix`` after it; answers in the chat-completion shape."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmgguf.server.dialects.core import GenRequest, Outcome, Sampling, fmgguf_error_line, start
from fmgguf.server.schemas import MAX_PROMPT_CHARS, MAX_TOKENS
from fmgguf.server.state import state_of
from fmgguf.server.streaming import sse

router = APIRouter(prefix="/v1", tags=["mistral"])
_FINISH = {"stop": "stop", "length": "length", "context": "length", "limit": "length", "cancelled": "stop"}


class FimBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=300)
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    random_seed: int | None = Field(default=None, ge=0)
    stream: bool = False


def _usage(o: Outcome) -> dict:
    return {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens,
            "total_tokens": o.prompt_tokens + o.completion_tokens}


@router.post("/fim/completions")
async def fim_completions(request: Request, body: FimBody) -> object:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    host = request.client.host if request.client else "?"
    req = GenRequest("fim", "mistral", body.model, prompt=body.prompt, suffix=body.suffix or "",
                     sampling=Sampling(max_tokens=body.max_tokens or 256,
                                       temperature=0.2 if body.temperature is None else body.temperature,
                                       top_p=body.top_p or 1.0, seed=body.random_seed,
                                       stop=tuple(s for s in stop if s)[:16]),
                     stream=body.stream, client=f"mistral|{host}|{request.headers.get('user-agent', '')}")
    gen = await start(state_of(request), req)
    cid, created = uuid.uuid4().hex, int(time.time())
    if not body.stream:
        o = await gen.collect()
        return {"id": cid, "object": "chat.completion", "model": o.model, "created": created, "usage": _usage(o),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": o.text},
                             "finish_reason": _FINISH.get(o.finish_reason, "stop"),
                             **({"stop_reason": o.stop_reason} if o.stop_reason else {})}]}

    def chunk(delta: dict, finish: str | None, usage: dict | None = None) -> dict:
        out = {"id": cid, "object": "chat.completion.chunk", "model": gen.model, "created": created,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return {**out, "usage": usage} if usage else out

    async def events() -> AsyncIterator[str]:
        first = True
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    yield sse(chunk({"role": "assistant", "content": value} if first else {"content": value}, None))
                    first = False
                elif kind == "done":
                    last = chunk({}, _FINISH.get(value.finish_reason, "stop"), _usage(value))
                    if value.stop_reason:
                        last["choices"][0]["stop_reason"] = value.stop_reason
                    yield sse(last)
                else:
                    yield sse({"error": {"message": fmgguf_error_line(value), "type": "server_error"}})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
