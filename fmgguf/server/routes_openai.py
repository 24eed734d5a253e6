"""The OpenAI-compatible API: /v1/models, /v1/completions (``suffix`` = fill-in-the-middle; a body with
``segments`` is Tabby's completion), /v1/chat/completions and /v1/embeddings (refused: nothing here
embeds), with SSE streaming and usage counts, for editor plugins and the `openai` client.

Requests become the dialect layer's one request type (fmgguf.server.dialects.core); the model is chosen
there by the ``model`` field and the request's role (FIM or chat).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from fmgguf._util import JsonObject
from fmgguf.server.dialects.core import Generation, GenRequest, Outcome, Sampling, ToolCall, start
from fmgguf.server.dialects.routing import fim_able, loaded_names
from fmgguf.server.dialects.tooling import (
    openai_message,
    openai_response_format,
    openai_stream_call,
    openai_tool_choice,
    openai_tools,
)
from fmgguf.server.json_views import downloaded_pairs
from fmgguf.server.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, _OpenAIBody
from fmgguf.server.state import ServerState, state_of
from fmgguf.server.streaming import error_payload, sse

router = APIRouter(prefix="/v1", tags=["openai"])
M = TypeVar("M", bound=BaseModel)
DEFAULT_MAX_TOKENS = 256
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_FINISH = {"stop": "stop", "tool_calls": "tool_calls", "length": "length", "context": "length", "limit": "length", "cancelled": "stop"}


def _usage(result: Outcome) -> dict:
    p, c = result.prompt_tokens, result.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def _local_quants(state: ServerState) -> dict[str, list[str]]:
    """model id -> the quants of it in the local store (sorted)."""
    out: dict[str, list[str]] = {}
    for model_id, quant in sorted(downloaded_pairs(state.downloader)):
        out.setdefault(model_id, []).append(quant)
    return out


@router.get("/models")
def list_models(request: Request) -> dict:
    """One entry per distinct usable ``model`` value, the resident models first (most recently used first).

    OpenAI clients show this list as the models to pick from, so each entry must be a different choice:
    a model with one quant on disk (or only the loaded one) is listed by its bare ``id``; a model with
    several quants on disk is listed once per quant as ``id:QUANT`` (the bare id still works in requests:
    it means the loaded quant, else the catalog default, else the first quant on disk). Never both forms.
    """
    state = state_of(request)
    now = int(state.started_at)
    local = _local_quants(state)
    manager = state.manager_if_built
    resident = loaded_names(manager)
    for mid, quant in resident:
        quants = local.setdefault(mid, [])
        if quant and str(quant) not in quants:
            quants.append(str(quant))
    loaded_quant = {mid: str(q) for mid, q in reversed(resident) if q}
    ids: list[str] = []
    order = list(dict.fromkeys([m for m, _ in resident] + list(local)))
    for model_id in order:
        quants = local[model_id]
        if len(quants) <= 1:
            ids.append(model_id)
            continue
        if model_id in loaded_quant:  # the loaded quant first
            quants = sorted(quants, key=lambda q: q != loaded_quant[model_id])
        ids.extend(f"{model_id}:{q}" for q in quants)
    return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "fmgguf",
                                        "capabilities": _capabilities(state, i.partition(":")[0])} for i in ids]}


def _capabilities(state: ServerState, model_id: str) -> list[str]:
    """Ollama's words: ``completion``, ``insert`` (fill-in-the-middle, by the one FIM rule), ``chat``, ``tools``."""
    from fmgguf.runtime.tools.tools import tools_supported
    from fmgguf.server.dialects.ollama_models import capabilities

    if model_id in state.catalog:
        card = state.catalog.get(model_id)
        caps = capabilities(card, insert=fim_able(state, model_id))
        chat = card.chat_template not in (None, "none")
    else:  # a file loaded by path: what the load found (the same rules, on its vocabulary and template)
        cur = state.current() or {}
        ours = cur.get("id") == model_id
        chat = ours and bool(cur.get("chat_template"))
        caps = ["completion"] + (["insert"] if ours and cur.get("fim") else [])
        caps += ["tools"] if chat and tools_supported(str(cur.get("chat_template")), None) else []
    return caps[:1] + [c for c in caps[1:] if c == "insert"] + (["chat"] if chat else []) + \
        [c for c in caps[1:] if c != "insert"]


def _sampling(body: _OpenAIBody) -> Sampling:
    return Sampling(max_tokens=body.token_limit(DEFAULT_MAX_TOKENS),
                    temperature=0.2 if body.temperature is None else body.temperature,
                    top_p=0.95 if body.top_p is None else body.top_p, stop=tuple(body.stop_list() or ()),
                    seed=None if body.seed is None else body.seed % (2**31), presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty, speculative=body.speculative)


def _client(request: Request, body: _OpenAIBody) -> str:
    host = request.client.host if request.client else "?"
    return f"openai|{host}|{request.headers.get('user-agent', '')}|{body.model or ''}"


def _validated(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None


async def _json(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos if isinstance(exc, json.JSONDecodeError) else 0),
                                       "msg": "JSON decode error", "ctx": {"error": str(exc).split(":")[0]}}]) from None


_COMPLETION_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": CompletionRequest.model_json_schema()}}}}


@router.post("/completions", openapi_extra=_COMPLETION_BODY)
async def completions(request: Request) -> object:
    """Text completion; with ``suffix`` it fills in the middle (the model's own FIM tokens). A body with
    ``segments`` (Tabby's IDE clients) is a Tabby completion."""
    data = await _json(request)
    if isinstance(data, dict) and "segments" in data and "prompt" not in data:
        from fmgguf.server.dialects.tabby import TabbyCompletion, tabby_completion

        return await tabby_completion(request, _validated(TabbyCompletion, data))
    body: CompletionRequest = _validated(CompletionRequest, data)
    state = state_of(request)
    if body.suffix is not None:
        req = GenRequest("fim", "openai", body.model, prompt=body.prompt, suffix=body.suffix,
                         sampling=_sampling(body), stream=bool(body.stream), client=_client(request, body))
    else:
        req = GenRequest("prompt", "openai", body.model, prompt=body.prompt, sampling=_sampling(body),
                         stream=bool(body.stream))
    gen = await start(state, req)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.stream:
        o = await gen.collect()
        text = (body.prompt + o.text) if body.echo else o.text
        return {"id": cid, "object": "text_completion", "created": created, "model": o.model,
                "choices": [{"text": text, "index": 0, "logprobs": None,
                             "finish_reason": _FINISH.get(o.finish_reason, "stop"), **_why(o)}],
                "usage": _usage(o)}

    def chunk(text: str, finish: str | None) -> dict:
        return {"id": cid, "object": "text_completion", "created": created, "model": gen.model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    return _stream(gen, body, chunk, lambda usage: {"id": cid, "object": "text_completion", "created": created,
                                                    "model": gen.model, "choices": [], "usage": usage})


def _chat_request(body: ChatRequest) -> GenRequest:
    tools = openai_tools(body.tools)
    return GenRequest("chat", "openai", body.model, messages=tuple(openai_message(m) for m in body.messages),
                      sampling=_sampling(body), stream=bool(body.stream), tools=tools,
                      tool_choice=openai_tool_choice(body.tool_choice, bool(tools)),
                      parallel_tool_calls=body.parallel_tool_calls is not False,
                      response_format=openai_response_format(body.response_format))


@router.post("/chat/completions")
async def chat_completions(request: Request, body: ChatRequest) -> object:
    """Chat with the model (its chat template); ``tools`` through the template, calls back as
    ``tool_calls``; ``response_format`` JSON enforced by a grammar."""
    state = state_of(request)
    gen = await start(state, _chat_request(body))
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.stream:
        o = await gen.collect()
        message: JsonObject = {"role": "assistant", "content": o.text or (None if o.tool_calls else "")}
        if o.tool_calls:
            message["tool_calls"] = [c.openai() for c in o.tool_calls]
        return {"id": cid, "object": "chat.completion", "created": created, "model": o.model,
                "choices": [{"index": 0, "message": message,
                             "logprobs": None, "finish_reason": _FINISH.get(o.finish_reason, "stop")}],
                "usage": _usage(o)}
    first, calls = [True], [0]

    def chunk(text: str | ToolCall, finish: str | None) -> dict:
        delta: JsonObject = {}
        if first[0]:
            delta["role"] = "assistant"
            first[0] = False
        if isinstance(text, ToolCall):
            delta["tool_calls"] = [openai_stream_call(calls[0], text)]
            calls[0] += 1
        elif finish is None:
            delta["content"] = text
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": gen.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    return _stream(gen, body, chunk, lambda usage: {"id": cid, "object": "chat.completion.chunk", "created": created,
                                                    "model": gen.model, "choices": [], "usage": usage})


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest) -> dict:
    """Refused with a clear 400: no model served here makes embeddings."""
    from fmgguf.server.dialects.ollama import embeddings_refusal

    raise embeddings_refusal(body.model)


def _why(o: Outcome) -> dict:
    """FIM: why the middle ended (``stop_reason``, as vLLM names it: suffix, indent, eos, length...)."""
    return {"stop_reason": o.stop_reason} if o.stop_reason else {}


def _stream(gen: Generation, body: _OpenAIBody, chunk: Callable[[str | ToolCall, str | None], dict],
            usage_chunk: Callable[[dict], dict]) -> StreamingResponse:
    include_usage = bool((body.stream_options or {}).get("include_usage"))

    async def events() -> AsyncIterator[str]:
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind in ("piece", "tool_call"):
                    yield sse(chunk(value, None))
                elif kind == "done":
                    last = chunk("", _FINISH.get(value.finish_reason, "stop"))
                    last["choices"][0].update(_why(value))
                    yield sse(last)
                    if include_usage:
                        yield sse(usage_chunk(_usage(value)))
                else:
                    err = error_payload(value)
                    yield sse({"error": {"message": err.get("message"), "type": "server_error",
                                         "code": err.get("error"), "fix": err.get("fix")}})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
