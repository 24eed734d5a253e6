"""What the two agent dialects (Anthropic Messages, OpenAI Responses) share: building the chat request
with tools, the internal message shapes for tool calls and results, reading tool calls back from an
Outcome, counting a prompt's tokens, and a heartbeat for streams whose prompt takes long to process.

Internal chat messages follow OpenAI's shape, which every GGUF chat template is written for: an
assistant turn carries ``tool_calls`` (``{"id", "type": "function", "function": {"name", "arguments"}}``,
arguments as a JSON object) and a tool result is ``{"role": "tool", "tool_call_id", "content"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Literal, TypeVar

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError
from fmgguf.server.dialects.core import GenRequest, Outcome, ResponseFormat, Sampling, ToolCall, ToolSpec

if TYPE_CHECKING:
    from fmgguf.server.state import ServerState

E = TypeVar("E")
#: the arguments of a call as a client sends them: an object, or JSON text
Arguments = str | Mapping[str, object] | None


def new_call_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def tool_spec(name: str, description: str | None, schema: Mapping[str, object] | None) -> ToolSpec:
    params = dict(schema) if schema else {"type": "object", "properties": {}}
    return ToolSpec(name=name, description=description or "", parameters=params)


def named_choice(name: str) -> str:
    """tool_choice naming one tool (the internal request's form)."""
    return f"tool:{name}"


def _arguments(value: Arguments, where: str) -> JsonObject:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        raise InvalidRequestError(f"{where}: the arguments are not JSON", fix="send the call's arguments as a JSON object") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError(f"{where}: the arguments are not a JSON object", fix="send an object, e.g. {}")
    return parsed


def call_message(call_id: str, name: str, arguments: Arguments, where: str = "tool call") -> JsonObject:
    """An assistant turn's tool call, OpenAI-shaped (arguments as JSON text)."""
    args = json.dumps(_arguments(arguments, where), ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def assistant_message(text: str, calls: list[JsonObject]) -> JsonObject:
    msg: JsonObject = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = calls
    return msg


def tool_message(call_id: str, content: str) -> JsonObject:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def chat_request(dialect: str, model: str | None, messages: tuple[JsonObject, ...], sampling: Sampling, *,
                 stream: bool, tools: tuple[ToolSpec, ...], tool_choice: str | None, parallel: bool | None,
                 response_format: ResponseFormat | None = None) -> GenRequest:
    choice = tool_choice or "auto"
    if choice not in ("auto", "none") and not tools:
        raise InvalidRequestError("tool_choice asks for a tool call but the request declares no tools",
                                  fix="send `tools`, or leave tool_choice out")
    if choice.startswith("tool:") and choice[5:] not in {t.name for t in tools}:
        raise InvalidRequestError(f"tool_choice names {choice[5:]!r}, which is not among the tools",
                                  fix=f"name one of: {', '.join(t.name for t in tools)}")
    return GenRequest("chat", dialect, model, messages=messages, sampling=sampling, stream=stream,
                      tools=tools, tool_choice=choice, parallel_tool_calls=parallel is not False,
                      response_format=response_format)


def tool_calls_of(outcome: Outcome) -> tuple[ToolCall, ...]:
    return tuple(outcome.tool_calls or ())


def call_parts(call: ToolCall) -> tuple[str, JsonObject, str]:
    """(name, arguments as an object, id) of a parsed call."""
    args = call.arguments
    if isinstance(args, str):
        try:
            parsed = json.loads(args or "{}")
        except ValueError:
            parsed = {}
        args = parsed if isinstance(parsed, dict) else {}
    return call.name, dict(args), call.id


def stop_hit(outcome: Outcome) -> str | None:
    """The stop sequence that ended the generation, if one did."""
    return outcome.stop_sequence


async def count_prompt_tokens(state: ServerState, req: GenRequest) -> int:
    """The prompt length of ``req`` in its model's tokens (template and tools included), no generation."""
    import anyio

    from fmgguf.server.dialects.routing import count_tokens

    await state.gate.acquire("count")
    try:
        manager = await anyio.to_thread.run_sync(lambda: state.manager)
        return int(await anyio.to_thread.run_sync(count_tokens, state, manager, req))
    finally:
        state.gate.release()


async def heartbeat(items: AsyncIterator[E], every_s: float) -> AsyncGenerator[E | tuple[Literal["heartbeat"], None], None]:
    """``items`` as they come, with ``("heartbeat", None)`` after each ``every_s`` seconds of silence
    (a long prompt is processed before the first piece; streaming clients give up on silent streams)."""
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(items.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield "heartbeat", None
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
