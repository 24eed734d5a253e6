"""The OpenAI-compatible API: /v1/models, /v1/completions (``suffix`` = fill-in-the-middle) and
/v1/chat/completions, with SSE streaming and usage counts, for editor plugins and the `openai` client.

A request naming another downloaded model switches to it (inside the same queue turn); a request
naming no model, or the loaded one, uses what is loaded.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from fmgguf.errors import ModelNotLoadedError
from fmgguf.server.json_views import downloaded_pairs
from fmgguf.server.schemas import ChatRequest, CompletionRequest
from fmgguf.server.state import ServerState, state_of
from fmgguf.server.streaming import StreamedGeneration, error_payload, run_generation, sse

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT_MAX_TOKENS = 256
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def _names(cur: dict) -> set[str]:
    names = {str(cur.get("id"))}
    if cur.get("quant"):
        names.add(f"{cur.get('id')}:{cur.get('quant')}")
    if cur.get("path"):
        names.update({Path(str(cur["path"])).name, str(cur["path"])})
    return names


def ensure_model(state: ServerState, manager: Any, requested: str | None) -> dict:
    """The loaded model if ``requested`` names it (or nothing); else switch to ``requested``. Runs in the
    worker thread while the caller holds the queue turn."""
    req = (requested or "").strip()
    # only a request for the selected model starts it again (after an idle unload or a crash)
    cur = state.reload_selected(manager) if req in ("", "default") else state.current()
    if req in ("", "default"):
        if cur:
            return cur
        if not state.settings.default_model:
            raise ModelNotLoadedError("no model is loaded", fix="name a downloaded model in `model`, or start "
                                      "`fmgguf serve --model ID`, or POST /api/models/select")
        req = state.settings.default_model
    if cur and req in _names(cur):
        return cur
    card, quant = state.catalog.resolve(req)
    if cur and cur.get("id") == card.id and (":" not in req or cur.get("quant") == quant):
        return cur
    if ":" not in req:  # a bare id means the quant on disk when the catalog default is not there
        local = _local_quants(state).get(card.id, [])
        if local and quant not in local:
            quant = next((q for q in card.quants if q in local), local[0])
    state.loading = (card.id, quant, time.time())
    try:
        manager.select(f"{card.id}:{quant}")  # the models used before stay resident (LRU, memory budget)
    finally:
        state.loading = None
    state.selected = (card.id, quant, None)
    return state.current() or {"id": card.id, "quant": quant}


def _usage(result: Any) -> dict:
    p, c = int(getattr(result, "prompt_tokens", 0) or 0), int(getattr(result, "completion_tokens", 0) or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _gen_kwargs(body: Any, stream: bool) -> dict:
    return {"max_tokens": body.token_limit(DEFAULT_MAX_TOKENS),
            "temperature": 0.2 if body.temperature is None else body.temperature,
            "top_p": 0.95 if body.top_p is None else body.top_p, "stop": body.stop_list(),
            "seed": None if body.seed is None else body.seed % (2**31), "stream": stream}


def _local_quants(state: ServerState) -> dict[str, list[str]]:
    """model id -> the quants of it in the local store (sorted)."""
    out: dict[str, list[str]] = {}
    for model_id, quant in sorted(downloaded_pairs(state.downloader)):
        out.setdefault(model_id, []).append(quant)
    return out


@router.get("/models")
def list_models(request: Request) -> dict:
    """One entry per distinct usable ``model`` value, the loaded model first.

    OpenAI clients show this list as the models to pick from, so each entry must be a different choice:
    a model with one quant on disk (or only the loaded one) is listed by its bare ``id``; a model with
    several quants on disk is listed once per quant as ``id:QUANT`` (the bare id still works in requests:
    it means the loaded quant, else the catalog default, else the first quant on disk). Never both forms.
    """
    state = state_of(request)
    now = int(state.started_at)
    local = _local_quants(state)
    cur = state.current()
    cur_id = str(cur.get("id")) if cur else None
    if cur_id is not None:
        quants = local.setdefault(cur_id, [])
        if cur.get("quant") and str(cur["quant"]) not in quants:
            quants.append(str(cur["quant"]))
    ids: list[str] = []
    order = ([cur_id] if cur_id is not None else []) + [m for m in local if m != cur_id]
    for model_id in order:
        quants = local[model_id]
        if len(quants) <= 1:
            ids.append(model_id)
            continue
        if model_id == cur_id and cur.get("quant"):  # the loaded quant first
            quants = sorted(quants, key=lambda q: q != str(cur["quant"]))
        ids.extend(f"{model_id}:{q}" for q in quants)
    return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "fmgguf"} for i in ids]}


def _completion_call(state: ServerState, body: CompletionRequest, stream: bool) -> Callable[[Any], Any]:
    kwargs = _gen_kwargs(body, stream)

    def call(manager: Any) -> Any:
        ensure_model(state, manager, body.model)
        if body.suffix is not None:
            return manager.fill_in_middle(body.prompt, body.suffix, **kwargs)
        return manager.generate_text(body.prompt, **kwargs)

    return call


def _chat_call(state: ServerState, body: ChatRequest, stream: bool) -> Callable[[Any], Any]:
    kwargs = _gen_kwargs(body, stream)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]

    def call(manager: Any) -> Any:
        ensure_model(state, manager, body.model)
        return manager.chat(messages, **kwargs)

    return call


def _model_name(state: ServerState, body: Any, result: Any = None) -> str:
    name = getattr(result, "model_id", None) if result is not None else None
    if not name:
        cur = state.current()
        name = (cur or {}).get("id") or body.model or "unknown"
    return str(name)


@router.post("/completions")
async def completions(request: Request, body: CompletionRequest) -> Any:
    """Text completion; with ``suffix`` it fills in the middle (the model's own FIM tokens)."""
    state = state_of(request)
    cid = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        result = await run_generation(state, _completion_call(state, body, False))
        text = (body.prompt + result.text) if body.echo else result.text
        return {"id": cid, "object": "text_completion", "created": created, "model": _model_name(state, body, result),
                "choices": [{"text": text, "index": 0, "logprobs": None,
                             "finish_reason": _FINISH.get(result.finish_reason, "stop")}],
                "usage": _usage(result)}
    gen = await StreamedGeneration.start(state, _completion_call(state, body, True))
    model = _model_name(state, body)

    def chunk(text: str, finish: str | None) -> dict:
        return {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    return _stream(gen, body, chunk, lambda usage: {"id": cid, "object": "text_completion", "created": created,
                                                    "model": model, "choices": [], "usage": usage})


@router.post("/chat/completions")
async def chat_completions(request: Request, body: ChatRequest) -> Any:
    """Chat with the loaded model (its chat template)."""
    state = state_of(request)
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        result = await run_generation(state, _chat_call(state, body, False))
        return {"id": cid, "object": "chat.completion", "created": created, "model": _model_name(state, body, result),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "logprobs": None, "finish_reason": _FINISH.get(result.finish_reason, "stop")}],
                "usage": _usage(result)}
    gen = await StreamedGeneration.start(state, _chat_call(state, body, True))
    model = _model_name(state, body)
    first = [True]

    def chunk(text: str, finish: str | None) -> dict:
        delta: dict[str, Any] = {}
        if first[0]:
            delta["role"] = "assistant"
            first[0] = False
        if finish is None:
            delta["content"] = text
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    return _stream(gen, body, chunk, lambda usage: {"id": cid, "object": "chat.completion.chunk", "created": created,
                                                    "model": model, "choices": [], "usage": usage})


def _stream(gen: StreamedGeneration, body: Any, chunk: Callable[[str, str | None], dict],
            usage_chunk: Callable[[dict], dict]) -> StreamingResponse:
    include_usage = bool((body.stream_options or {}).get("include_usage"))

    async def events() -> Any:
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    if value:
                        yield sse(chunk(value, None))
                elif kind == "done":
                    reason = _FINISH.get(getattr(value, "finish_reason", "stop"), "stop")
                    yield sse(chunk("", reason))
                    if include_usage and value is not None:
                        yield sse(usage_chunk(_usage(value)))
                else:
                    err = error_payload(value)
                    yield sse({"error": {"message": err.get("message"), "type": "server_error",
                                         "code": err.get("error"), "fix": err.get("fix")}})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
