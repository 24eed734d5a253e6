"""The Ollama API's generation endpoints: /api/generate (prompt, suffix = fill-in-the-middle, raw,
system, options, keep_alive), /api/chat, and /api/embed + /api/embeddings (refused: no model here
embeds). Streaming is NDJSON, on by default as in Ollama, the last line carrying the counters.

``options.num_ctx`` does not reload a model: the context it was loaded with applies (/api/show says
which). ``tools`` go through the model's template and come back as ``message.tool_calls``; ``format``
("json" or a JSON schema) is enforced by a grammar. ``images``, ``think`` and ``context`` are accepted
and not used."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError
from fmgguf.server.dialects.core import GenRequest, Outcome, Sampling, ToolCall, fmgguf_error_line, start
from fmgguf.server.dialects.ollama_models import NDJSON, ndjson, now_iso
from fmgguf.server.dialects.routing import clean_name
from fmgguf.server.dialects.tooling import ollama_call, ollama_format, ollama_message, ollama_tools
from fmgguf.server.schemas import MAX_PROMPT_CHARS
from fmgguf.server.state import ServerState, state_of

router = APIRouter(prefix="/api", tags=["ollama"])
_DONE = {"stop": "stop", "tool_calls": "stop", "length": "length", "context": "length", "limit": "length", "cancelled": "stop"}


class Options(BaseModel):
    model_config = ConfigDict(extra="ignore")
    num_predict: int | None = Field(default=None, ge=-2, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0, le=10.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    num_ctx: int | None = Field(default=None, ge=0)

    def sampling(self) -> Sampling:
        n = self.num_predict
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return Sampling(max_tokens=None if n is not None and n < 0 else (n or 256),
                        temperature=0.8 if self.temperature is None else self.temperature,
                        top_p=0.9 if not self.top_p else self.top_p, top_k=self.top_k or None, min_p=self.min_p,
                        repeat_penalty=self.repeat_penalty, presence_penalty=self.presence_penalty,
                        frequency_penalty=self.frequency_penalty, seed=None if self.seed is None else self.seed % 2**31,
                        stop=tuple(s for s in stop if s)[:16])


class _GenBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(default="", max_length=300)
    stream: bool = True
    keep_alive: Union[str, float, int, None] = None
    options: Options | None = None
    #: "json" or a JSON schema: the answer is JSON (valid against the schema)
    format: Union[str, JsonObject, None] = None


class GenerateBody(_GenBody):
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    system: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    raw: bool = False


class ChatMessageBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls, tool_name, tool_call_id travel as sent
    role: str
    content: str | None = ""


class ChatBody(_GenBody):
    messages: list[ChatMessageBody] = Field(default_factory=list, max_length=1000)
    tools: list[object] | None = None


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(default="", max_length=300)
    input: Union[str, list[str], None] = None
    prompt: str | None = None


def keep_alive_seconds(value: str | float | None) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration ("5m", "1h30m", "-1" = forever)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float("inf") if value < 0 else float(value)
    text = str(value).strip()
    try:
        number = float(text)
        return float("inf") if number < 0 else number
    except ValueError:
        pass
    parts = re.findall(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise InvalidRequestError(f"keep_alive {value!r} is not a duration", fix='use seconds or e.g. "5m", "1h", "-1"')
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = sum(float(a) * scale[b] for a, b in parts)
    return float("inf") if total < 0 else total


def _client(request: Request, model: str) -> str:
    host = request.client.host if request.client else "?"
    return f"ollama|{host}|{request.headers.get('user-agent', '')}|{clean_name(model)}"


def _has_chat_template(state: ServerState, model: str) -> bool:
    name = clean_name(model).partition(":")[0]
    if name and name in state.catalog:
        return state.catalog.get(name).chat_template not in (None, "none")
    return False


def _final(outcome: Outcome, created: str) -> dict:
    ns = 1_000_000_000
    return {"model": outcome.model, "created_at": created, "done": True,
            "done_reason": _DONE.get(outcome.finish_reason, "stop"),
            "total_duration": int(outcome.total_s * ns), "load_duration": 0,
            "prompt_eval_count": outcome.prompt_tokens - outcome.cached_tokens,
            "prompt_eval_duration": int(outcome.prompt_s * ns), "eval_count": outcome.completion_tokens,
            "eval_duration": int(outcome.predict_s * ns), "fmgguf_cached_tokens": outcome.cached_tokens,
            **({"fmgguf_stop_reason": outcome.stop_reason} if outcome.stop_reason else {})}


@router.post("/generate")
async def generate(request: Request, body: GenerateBody) -> object:
    """Completion; with ``suffix`` fill-in-the-middle (the model's FIM tokens); ``raw`` skips the chat
    template; an empty prompt only loads the model (``keep_alive`` 0: unloads it)."""
    state = state_of(request)
    keep = keep_alive_seconds(body.keep_alive)
    if not body.prompt and body.suffix is None:
        return await _load_or_unload(state, body.model, keep)
    sampling = (body.options or Options()).sampling()
    fmt = ollama_format(body.format)
    if fmt is not None and (body.suffix is not None or body.raw):
        raise InvalidRequestError("format applies to chat answers, not to raw prompts or fill-in-the-middle",
                                  fix="drop `format`, or send the prompt without raw/suffix")
    if body.suffix is not None:
        req = GenRequest("fim", "ollama", body.model, prompt=body.prompt, suffix=body.suffix, sampling=sampling,
                         stream=body.stream, keep_alive=keep, client=_client(request, body.model))
    elif (not body.raw and _has_chat_template(state, body.model)) or fmt is not None:
        msgs = ([{"role": "system", "content": body.system}] if body.system else []) + \
               [{"role": "user", "content": body.prompt}]
        req = GenRequest("chat", "ollama", body.model, messages=tuple(msgs), sampling=sampling, stream=body.stream,
                         keep_alive=keep, response_format=fmt)
    else:
        text = f"{body.system}\n\n{body.prompt}" if body.system and not body.raw else body.prompt
        req = GenRequest("prompt", "ollama", body.model, prompt=text, sampling=sampling, stream=body.stream,
                         keep_alive=keep)
    return await _respond(state, req, lambda piece: {"response": piece}, lambda: {"response": ""})


@router.post("/chat")
async def chat(request: Request, body: ChatBody) -> object:
    """Chat with the model's template; NDJSON ``message`` deltas."""
    state = state_of(request)
    keep = keep_alive_seconds(body.keep_alive)
    if not body.messages:
        return await _load_or_unload(state, body.model, keep, chat=True)
    ids: dict[str, str] = {}
    msgs = tuple(ollama_message(m.model_dump(), ids) for m in body.messages)
    tools = ollama_tools(body.tools)
    req = GenRequest("chat", "ollama", body.model, messages=msgs, sampling=(body.options or Options()).sampling(),
                     stream=body.stream, keep_alive=keep, tools=tools, tool_choice="auto" if tools else "none",
                     response_format=ollama_format(body.format))
    return await _respond(state, req, _chat_message, lambda: {"message": {"role": "assistant", "content": ""}})


def _chat_message(piece: str, calls: tuple[ToolCall, ...] = ()) -> dict:
    msg: JsonObject = {"role": "assistant", "content": piece}
    if calls:
        msg["tool_calls"] = [ollama_call(c, i) for i, c in enumerate(calls)]
    return {"message": msg}


async def _respond(state: ServerState, req: GenRequest, piece: Callable[..., dict],
                   empty: Callable[[], dict]) -> JsonObject | StreamingResponse:
    gen = await start(state, req)
    created = now_iso()
    if not req.stream:
        outcome = await gen.collect()
        body = piece(outcome.text, outcome.tool_calls) if outcome.tool_calls else piece(outcome.text)
        return {**_final(outcome, created), **body}

    async def lines() -> AsyncIterator[str]:
        n_calls = 0
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    yield ndjson({"model": gen.model, "created_at": now_iso(), **piece(value), "done": False})
                elif kind == "tool_call":  # Ollama sends each call in a message of its own
                    msg = piece("", (value,))
                    msg["message"]["tool_calls"][0]["function"]["index"] = n_calls
                    n_calls += 1
                    yield ndjson({"model": gen.model, "created_at": now_iso(), **msg, "done": False})
                elif kind == "done":
                    yield ndjson({**_final(value, now_iso()), **empty()})
                else:
                    yield ndjson({"error": fmgguf_error_line(value)})

    return StreamingResponse(lines(), media_type=NDJSON)


async def _load_or_unload(state: ServerState, model: str, keep: float | None, chat: bool = False) -> dict:
    """Ollama's empty request: load the model (or unload it when keep_alive is 0)."""
    import anyio

    from fmgguf.server.dialects.ollama_models import unload_model
    from fmgguf.server.dialects.routing import resolve

    created = now_iso()
    empty = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    if keep == 0:
        manager = state.manager_if_built
        if manager is not None:
            target = await anyio.to_thread.run_sync(lambda: resolve(state, model, "prompt"))
            await unload_model(state, target.model_id, target.quant)
        return {"model": clean_name(model), "created_at": created, **empty, "done": True, "done_reason": "unload"}
    req = GenRequest("prompt", "ollama", model, prompt="", sampling=Sampling(max_tokens=1), warmup=True, keep_alive=keep)
    outcome = await (await start(state, req)).collect()
    return {"model": outcome.model, "created_at": created, **empty, "done": True, "done_reason": "load"}


def embeddings_refusal(model: str | None) -> InvalidRequestError:
    name = clean_name(model) or "this model"
    return InvalidRequestError(f"{name} cannot make embeddings: fmgguf serves generation models only",
                               fix="use an embedding server for `embed` roles (e.g. Ollama with nomic-embed-text), "
                                   "or leave embeddings off in the editor")


@router.post("/embed")
async def embed(body: EmbedBody) -> dict:
    """Refused with a clear 400: no model served here embeds."""
    raise embeddings_refusal(body.model)


@router.post("/embeddings")
async def embeddings(body: EmbedBody) -> dict:
    """The older Ollama embeddings path: refused like /api/embed."""
    raise embeddings_refusal(body.model)
