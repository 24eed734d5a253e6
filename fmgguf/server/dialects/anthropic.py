"""Anthropic's Messages API: POST /v1/messages (system blocks, text, tool_use and tool_result content,
stop_sequences, tool_choice, temperature/top_p/top_k, usage) with Anthropic's SSE event grammar, and
POST /v1/messages/count_tokens, for Claude Code and the ``anthropic`` client.

The body becomes the dialect layer's one request (core.GenRequest, kind chat): ``tool_use`` blocks turn
into assistant tool calls, ``tool_result`` blocks into ``tool`` messages, tools into ToolSpecs. Claude
Code's per-request billing line (``cch=``) is normalised away before the prompt is built, so the KV
prefix of its 10-20k-token system prompt stays reusable. Errors come back in Anthropic's shape
(``{"type": "error", "error": {"type", "message"}}``, see :func:`error_body`). The key travels as
``x-api-key`` (the server's one API-key rule); ``anthropic-version`` is accepted whatever its value.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.prompt_cache import normalize_volatile
from fmgguf.server.dialects import agent_common as ac
from fmgguf.server.dialects.core import Generation, GenRequest, Outcome, Sampling, ToolCall, ToolSpec, start
from fmgguf.server.state import state_of
from fmgguf.server.streaming import error_payload, sse

router = APIRouter(prefix="/v1", tags=["anthropic"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: seconds between ``ping`` events while the prompt is processed (clients time out idle streams)
PING_EVERY_S = 10.0
_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "context": "max_tokens", "limit": "max_tokens",
         "cancelled": "end_turn"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
                429: "rate_limit_error", 503: "overloaded_error"}


class Block(BaseModel):
    """One content block; which fields apply depends on ``type``."""

    model_config = ConfigDict(extra="ignore")  # cache_control, citations, signature: accepted, not used
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: JsonObject | None = None
    tool_use_id: str | None = None
    content: Union[str, list[JsonObject], None] = None
    is_error: bool | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: "system" inside messages: Claude Code sends its environment block that way
    role: Literal["user", "assistant", "system"]
    content: Union[str, list[Block]]


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    input_schema: JsonObject | None = None
    #: set on Anthropic's server tools (web_search_..., code_execution_...): those run at Anthropic
    type: str | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class CountBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # metadata, thinking, service_tier...: accepted, not used
    model: str = Field(default="", max_length=300)
    messages: list[Message] = Field(min_length=1, max_length=10000)
    system: Union[str, list[Block], None] = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesBody(CountBody):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(default=None, max_length=32)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False


def error_body(status: int, line: str) -> dict:
    """Anthropic's error shape (the anthropic client and Claude Code read ``error.type``)."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": line}}


# --- request -> the internal request ------------------------------------------------------------
def _text_of(content: Union[str, list[Block], list[JsonObject], None], where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        kind = block.type if isinstance(block, Block) else str(block.get("type"))
        text = block.text if isinstance(block, Block) else block.get("text")
        if kind == "text":
            parts.append(str(text or ""))
        elif kind in ("image", "document"):
            raise InvalidRequestError(f"{where} has an {kind} block: the models served here read text only",
                                      fix=f"send the {kind} as text, or leave it out")
    return "\n".join(parts)


def system_text(system: Union[str, list[Block], None]) -> str:
    return normalize_volatile(_text_of(system, "system"))


def _messages(body: CountBody) -> tuple[JsonObject, ...]:
    out: list[JsonObject] = []
    system = system_text(body.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, msg in enumerate(body.messages):
        blocks = [Block(type="text", text=msg.content)] if isinstance(msg.content, str) else msg.content
        if msg.role == "system":
            out.append({"role": "system", "content": normalize_volatile(_text_of(blocks, f"messages.{i}"))})
            continue
        if msg.role == "assistant":
            text = _text_of([b for b in blocks if b.type == "text"], f"messages.{i}")
            calls = [ac.call_message(b.id or ac.new_call_id("toolu_"), b.name or "", b.input or {})
                     for b in blocks if b.type == "tool_use"]
            out.append(ac.assistant_message(text, calls))
            continue
        for b in blocks:  # tool results first: they answer the previous assistant turn's calls
            if b.type == "tool_result":
                result = _text_of(b.content, f"messages.{i}.tool_result")
                out.append(ac.tool_message(b.tool_use_id or "", ("Error: " + result) if b.is_error else result))
        text = _text_of([b for b in blocks if b.type != "tool_result"], f"messages.{i}")
        if text or not any(b.type == "tool_result" for b in blocks):
            out.append({"role": "user", "content": text})
    return tuple(out)


def _tools(body: CountBody) -> tuple[ToolSpec, ...]:
    # server tools (web search, code execution) run at Anthropic; nothing here can run them
    return tuple(ac.tool_spec(t.name, t.description, t.input_schema) for t in body.tools or [] if t.input_schema is not None)


def _tool_choice(choice: ToolChoice | None) -> str | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError("tool_choice type 'tool' needs a name", fix='send {"type": "tool", "name": "..."}')
        return ac.named_choice(choice.name)
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def to_request(body: MessagesBody) -> GenRequest:
    sampling = Sampling(max_tokens=body.max_tokens, temperature=1.0 if body.temperature is None else body.temperature,
                        top_p=1.0 if not body.top_p else body.top_p, top_k=body.top_k or None,
                        stop=tuple(s for s in body.stop_sequences or () if s))
    parallel = None if body.tool_choice is None or body.tool_choice.disable_parallel_tool_use is None \
        else not body.tool_choice.disable_parallel_tool_use
    return ac.chat_request("anthropic", body.model, _messages(body), sampling, stream=body.stream,
                           tools=_tools(body), tool_choice=_tool_choice(body.tool_choice), parallel=parallel)


# --- the answer ----------------------------------------------------------------------------------
def _usage(o: Outcome) -> dict:
    return {"input_tokens": max(o.prompt_tokens - o.cached_tokens, 0), "output_tokens": o.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": o.cached_tokens}


def _stop(o: Outcome) -> tuple[str, str | None]:
    if ac.tool_calls_of(o):
        return "tool_use", None
    hit = ac.stop_hit(o)
    if hit is not None:
        return "stop_sequence", hit
    return _STOP.get(o.finish_reason, "end_turn"), None


def _tool_block(call: ToolCall) -> dict:
    name, args, cid = ac.call_parts(call)
    return {"type": "tool_use", "id": cid, "name": name, "input": args}


def _message(o: Outcome, mid: str, text: str) -> dict:
    content: list[dict] = [{"type": "text", "text": text}] if text or not ac.tool_calls_of(o) else []
    content += [_tool_block(c) for c in ac.tool_calls_of(o)]
    reason, seq = _stop(o)
    return {"id": mid, "type": "message", "role": "assistant", "model": o.model, "content": content,
            "stop_reason": reason, "stop_sequence": seq, "usage": _usage(o)}


@router.post("/messages")
async def messages(request: Request, body: MessagesBody) -> object:
    """Anthropic Messages; ``stream: true`` answers with Anthropic's SSE events."""
    state = state_of(request)
    gen = await start(state, to_request(body))
    mid = "msg_" + uuid.uuid4().hex[:24]
    if not body.stream:
        o = await gen.collect()
        return _message(o, mid, o.text)
    return StreamingResponse(_events(gen, mid), media_type="text/event-stream", headers=SSE_HEADERS)


class _Blocks:
    """The open content block while a stream runs: text blocks and tool_use blocks, in order."""

    def __init__(self) -> None:
        self.index = -1
        self.text_open = False

    def text(self, piece: str) -> list[str]:
        out = []
        if not self.text_open:
            self.index += 1
            self.text_open = True
            out.append(_ev("content_block_start", {"index": self.index, "content_block": {"type": "text", "text": ""}}))
        out.append(_ev("content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": piece}}))
        return out

    def tool(self, call: ToolCall) -> list[str]:
        out = self.close()
        self.index += 1
        block = _tool_block(call)
        out.append(_ev("content_block_start", {"index": self.index, "content_block": {**block, "input": {}}}))
        out.append(_ev("content_block_delta", {"index": self.index, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}}))
        out.append(_ev("content_block_stop", {"index": self.index}))
        return out

    def close(self) -> list[str]:
        if not self.text_open:
            return []
        self.text_open = False
        return [_ev("content_block_stop", {"index": self.index})]


def _ev(kind: str, data: dict) -> str:
    return sse({"type": kind, **data}, event=kind)


async def _events(gen: Generation, mid: str) -> AsyncIterator[str]:
    start_msg = {"id": mid, "type": "message", "role": "assistant", "model": gen.model, "content": [],
                 "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": 0}}
    yield _ev("message_start", {"message": start_msg})
    yield _ev("ping", {})
    blocks = _Blocks()
    async with contextlib.aclosing(gen.events()) as items, \
            contextlib.aclosing(ac.heartbeat(items, PING_EVERY_S)) as beats:  # closed first: it may be awaiting items
        async for kind, value in beats:
            if kind == "heartbeat":
                yield _ev("ping", {})
            elif kind == "piece":
                for line in blocks.text(value):
                    yield line
            elif kind == "tool_call":
                for line in blocks.tool(value):
                    yield line
            elif kind == "done":
                if blocks.index < 0 and not ac.tool_calls_of(value):  # an empty answer still has its text block
                    for line in blocks.text(""):
                        yield line
                for line in blocks.close():
                    yield line
                reason, seq = _stop(value)
                yield _ev("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": seq},
                                            "usage": _usage(value)})
                yield _ev("message_stop", {})
            else:
                err = error_payload(value)
                line = err.get("message", "") + (f" — {err['fix']}" if err.get("fix") else "")
                yield _ev("error", {"error": {"type": "api_error", "message": line}})


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, body: CountBody) -> dict:
    """The prompt's length in the model's tokens, as the model would see it (template and tools included)."""
    state = state_of(request)
    req = ac.chat_request("anthropic", body.model, _messages(body), Sampling(max_tokens=1), stream=False,
                          tools=_tools(body), tool_choice=_tool_choice(body.tool_choice), parallel=None)
    return {"input_tokens": await ac.count_prompt_tokens(state, req)}
