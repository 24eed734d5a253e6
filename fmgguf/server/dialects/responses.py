"""OpenAI's Responses API, stateless: POST /v1/responses for Codex CLI and ``openai``'s
``responses.create``. ``input`` (a string, or items: messages, function_call, function_call_output),
``instructions``, function tools, ``tool_choice``, ``parallel_tool_calls``, ``max_output_tokens``,
``temperature``/``top_p``, ``text.format`` (structured output); the answer is a response object whose
``output`` holds a message (``output_text``) and/or ``function_call`` items, or, streamed, the
``response.*`` SSE events.

Nothing is stored: a request that needs server state (``previous_response_id``, ``store: true``) is a
400 saying to send the whole conversation. A response that hits ``max_output_tokens`` still ends with
``response.completed`` (status ``incomplete``): Codex treats a stream without it as a failure.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError
from fmgguf.server.dialects import agent_common as ac
from fmgguf.server.dialects.core import (
    Generation,
    GenRequest,
    Outcome,
    ResponseFormat,
    Sampling,
    ToolCall,
    ToolSpec,
    start,
)
from fmgguf.server.schemas import MAX_TOKENS
from fmgguf.server.state import state_of
from fmgguf.server.streaming import error_payload, sse

router = APIRouter(prefix="/v1", tags=["openai"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: seconds between SSE comments while the prompt is processed
KEEPALIVE_S = 10.0
DEFAULT_MAX_OUTPUT = 4096
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


class ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # reasoning, include, prompt_cache_key, metadata, user: not used
    model: str | None = Field(default=None, max_length=300)
    input: Union[str, list[JsonObject]] = Field(default="")
    instructions: str | None = None
    tools: list[JsonObject] | None = None
    tool_choice: Union[Literal["auto", "none", "required"], JsonObject, None] = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    text: JsonObject | None = None


# --- request -> the internal request ------------------------------------------------------------
def _content_text(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content if isinstance(content, list) else [content]:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text"):
            parts.append(str(part.get("text") or ""))
        elif kind in ("input_image", "input_file", "input_audio"):
            raise InvalidRequestError(f"{where} has an {kind} part: the models served here read text only",
                                      fix="send it as text, or leave it out")
    return "\n".join(parts)


def _messages(body: ResponsesBody) -> tuple[JsonObject, ...]:
    out: list[JsonObject] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    for i, item in enumerate(items):
        kind, where = item.get("type") or ("message" if "role" in item else None), f"input.{i}"
        if kind == "message":
            role = {"developer": "system"}.get(str(item.get("role")), str(item.get("role")))
            if role not in ("system", "user", "assistant"):
                raise InvalidRequestError(f"{where} has role {item.get('role')!r}", fix="use user, assistant, system or developer")
            text = _content_text(item.get("content"), where)
            if role == "system" and out and out[-1]["role"] == "system":  # templates want one system turn
                out[-1] = {"role": "system", "content": out[-1]["content"] + "\n\n" + text}
            else:
                out.append({"role": role, "content": text})
        elif kind in ("function_call", "custom_tool_call"):
            call = ac.call_message(str(item.get("call_id") or ac.new_call_id("call_")), str(item.get("name") or ""),
                                   item.get("arguments", item.get("input")), where)
            if out and out[-1]["role"] == "assistant":  # parallel calls: one assistant turn
                out[-1] = ac.assistant_message(out[-1]["content"], [*out[-1].get("tool_calls", []), call])
            else:
                out.append(ac.assistant_message("", [call]))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            out.append(ac.tool_message(str(item.get("call_id") or ""), _content_text(item.get("output"), where)))
        elif kind != "reasoning":  # reasoning items carry no text a model here could use
            raise InvalidRequestError(f"{where} is a {kind!r} item, which this server does not take",
                                      fix=f"send only {', '.join(_ITEM_TYPES)} items")
    if not any(m["role"] != "system" for m in out):
        raise InvalidRequestError("input is empty", fix='send "input": "..." or a list of message items')
    return tuple(out)


def _tools(body: ResponsesBody) -> tuple[ToolSpec, ...]:
    out = []
    for tool in body.tools or []:
        if tool.get("type") == "function":
            if not tool.get("name"):
                raise InvalidRequestError("a function tool has no name", fix='send {"type": "function", "name": ...}')
            out.append(ac.tool_spec(str(tool["name"]), tool.get("description"), tool.get("parameters")))
        # hosted tools (web_search, file_search, local_shell, custom...) run at OpenAI: nothing here runs them
    return tuple(out)


def _tool_choice(choice: str | JsonObject | None) -> str | None:
    if isinstance(choice, dict):
        if choice.get("type") == "function" and choice.get("name"):
            return ac.named_choice(str(choice["name"]))
        raise InvalidRequestError(f"tool_choice {json.dumps(choice)} is not supported here",
                                  fix='use "auto", "none", "required" or {"type": "function", "name": ...}')
    return choice


def _response_format(text: JsonObject | None) -> ResponseFormat | None:
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return ResponseFormat("json_object")
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequestError("text.format json_schema has no schema", fix='send "schema": {...}')
        return ResponseFormat("json_schema", schema=fmt["schema"], strict=bool(fmt.get("strict")), name=fmt.get("name"))
    raise InvalidRequestError(f"text.format type {fmt.get('type')!r} is unknown", fix="use text, json_object or json_schema")


def to_request(body: ResponsesBody) -> GenRequest:
    if body.previous_response_id:
        raise InvalidRequestError("previous_response_id needs stored responses: this server keeps none",
                                  fix="send the whole conversation in `input` (and store: false)")
    if body.store:
        raise InvalidRequestError("store: true needs stored responses: this server keeps none",
                                  fix="send store: false (or leave it out) and the whole conversation in `input`")
    sampling = Sampling(max_tokens=min(body.max_output_tokens or DEFAULT_MAX_OUTPUT, MAX_TOKENS),
                        temperature=1.0 if body.temperature is None else body.temperature,
                        top_p=1.0 if body.top_p is None else body.top_p)
    return ac.chat_request("responses", body.model, _messages(body), sampling, stream=body.stream,
                           tools=_tools(body), tool_choice=_tool_choice(body.tool_choice),
                           parallel=body.parallel_tool_calls, response_format=_response_format(body.text))


# --- the answer ----------------------------------------------------------------------------------
def _usage(o: Outcome) -> dict:
    return {"input_tokens": o.prompt_tokens, "input_tokens_details": {"cached_tokens": o.cached_tokens},
            "output_tokens": o.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": o.prompt_tokens + o.completion_tokens}


def _message_item(mid: str, text: str, status: str = "completed") -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": mid, "status": status, "role": "assistant", "content": content}


def _call_item(call: ToolCall, status: str = "completed") -> dict:
    name, args, cid = ac.call_parts(call)
    return {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:24], "call_id": cid, "name": name,
            "arguments": json.dumps(args, ensure_ascii=False) if status == "completed" else "", "status": status}


class _Shell:
    """The response object's fixed fields (echoing the request), filled in as the answer grows."""

    def __init__(self, body: ResponsesBody, model: str) -> None:
        self.rid = "resp_" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.body, self.model = body, model

    def response(self, status: str, output: list[dict], o: Outcome | None = None) -> dict:
        b = self.body
        limited = o is not None and o.finish_reason in ("length", "context", "limit")
        return {"id": self.rid, "object": "response", "created_at": self.created,
                "status": "incomplete" if limited and status == "completed" else status,
                "error": None, "incomplete_details": {"reason": "max_output_tokens"} if limited else None,
                "instructions": b.instructions, "max_output_tokens": b.max_output_tokens,
                "model": o.model if o is not None else self.model, "output": output,
                "parallel_tool_calls": b.parallel_tool_calls is not False, "previous_response_id": None,
                "reasoning": None, "store": False, "temperature": b.temperature, "text": b.text or {"format": {"type": "text"}},
                "tool_choice": b.tool_choice or "auto", "tools": b.tools or [], "top_p": b.top_p, "truncation": "disabled",
                "usage": _usage(o) if o is not None else None, "metadata": {}}


def final_output(o: Outcome) -> list[dict]:
    calls = ac.tool_calls_of(o)
    out = [_message_item("msg_" + uuid.uuid4().hex[:24], o.text)] if o.text or not calls else []
    return out + [_call_item(c) for c in calls]


@router.post("/responses")
async def responses(request: Request, body: ResponsesBody) -> object:
    """Stateless Responses; ``stream: true`` answers with the ``response.*`` SSE events."""
    state = state_of(request)
    gen = await start(state, to_request(body))
    shell = _Shell(body, gen.model)
    if not body.stream:
        o = await gen.collect()
        return shell.response("completed", final_output(o), o)
    return StreamingResponse(_events(gen, shell), media_type="text/event-stream", headers=SSE_HEADERS)


class _Stream:
    """Numbered ``response.*`` events for one streamed answer."""

    def __init__(self, shell: _Shell) -> None:
        self.shell = shell
        self.seq = 0
        self.output: list[dict] = []
        self.text_item: dict | None = None
        self.text = ""

    def ev(self, kind: str, **data: object) -> str:
        self.seq += 1
        return sse({"type": kind, "sequence_number": self.seq, **data}, event=kind)

    def piece(self, value: str) -> list[str]:
        out = []
        if self.text_item is None:
            self.text_item = _message_item("msg_" + uuid.uuid4().hex[:24], "", "in_progress")
            self.output.append(self.text_item)
            out.append(self.ev("response.output_item.added", output_index=len(self.output) - 1, item=self.text_item))
            out.append(self.ev("response.content_part.added", item_id=self.text_item["id"],
                               output_index=len(self.output) - 1, content_index=0,
                               part={"type": "output_text", "text": "", "annotations": []}))
        self.text += value
        out.append(self.ev("response.output_text.delta", item_id=self.text_item["id"],
                           output_index=self.output.index(self.text_item), content_index=0, delta=value, logprobs=[]))
        return out

    def close_text(self) -> list[str]:
        item = self.text_item
        if item is None or item["status"] == "completed":
            return []
        index = self.output.index(item)
        part = {"type": "output_text", "text": self.text, "annotations": []}
        item.update(status="completed", content=[part])
        return [self.ev("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                        text=self.text, logprobs=[]),
                self.ev("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part),
                self.ev("response.output_item.done", output_index=index, item=item)]

    def call(self, call: ToolCall) -> list[str]:
        out = self.close_text()
        done = _call_item(call)
        self.output.append(done)
        index = len(self.output) - 1
        out.append(self.ev("response.output_item.added", output_index=index,
                           item={**done, "arguments": "", "status": "in_progress"}))
        out.append(self.ev("response.function_call_arguments.delta", item_id=done["id"], output_index=index,
                           delta=done["arguments"]))
        out.append(self.ev("response.function_call_arguments.done", item_id=done["id"], output_index=index,
                           name=done["name"], arguments=done["arguments"]))
        out.append(self.ev("response.output_item.done", output_index=index, item=done))
        return out

    def done(self, o: Outcome) -> list[str]:
        out = []
        if not self.output:  # an empty answer is still one (empty) message
            out += self.piece("")
        out += self.close_text()
        out.append(self.ev("response.completed", response=self.shell.response("completed", self.output, o)))
        return out


async def _events(gen: Generation, shell: _Shell) -> AsyncIterator[str]:
    st = _Stream(shell)
    first = shell.response("in_progress", [])
    yield st.ev("response.created", response=first)
    yield st.ev("response.in_progress", response=first)
    async with contextlib.aclosing(gen.events()) as items, \
            contextlib.aclosing(ac.heartbeat(items, KEEPALIVE_S)) as beats:  # closed first: it may be awaiting items
        async for kind, value in beats:
            if kind == "heartbeat":
                yield ": keep-alive\n\n"
            elif kind == "piece":
                for line in st.piece(value):
                    yield line
            elif kind == "tool_call":
                for line in st.call(value):
                    yield line
            elif kind == "done":
                for line in st.done(value):
                    yield line
            else:
                err = error_payload(value)
                failed = {**shell.response("failed", st.output),
                          "error": {"code": "server_error", "message": err.get("message", "")}}
                yield st.ev("response.failed", response=failed)
