"""llama.cpp server shapes: POST /infill (llama.vscode, llama.vim), POST /completion (Continue's
llama.cpp provider) and GET /health.

/infill lays out ``input_extra`` files as repo-level context with the model's file-separator tokens
(where its family has them), then ``input_prefix`` + ``prompt`` before the cursor and ``input_suffix``
after it. ``n_predict: 0`` is a warm-up: the prompt goes into the KV cache, no text comes back.
``tokens_cached`` is how many prompt tokens were reused from the previous request's KV cache;
``timings.prompt_n`` the prompt tokens decoded this time. Every middle ends where
:mod:`fmgguf.runtime.prompt.fim_stop` says the gap ends: ``n_indent`` and ``t_max_predict_ms`` (at the first
line end after that long, as llama.cpp) give ``stop_type: "limit"``, a repeated suffix or a dedent out
of the cursor's block ``"word"``; ``stop_reason`` says which. Accepted and not used: ``cache_prompt``
(the cache is always reused), ``t_max_prompt_ms``, ``samplers``, ``id_slot``, ``n_cmpl``, ``lora``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fmgguf._util import JsonObject
from fmgguf.runtime.prompt.fim_stop import stop_type as fim_stop_type
from fmgguf.server.dialects.core import GenRequest, Outcome, Sampling, fmgguf_error_line, start
from fmgguf.server.schemas import MAX_PROMPT_CHARS, MAX_TOKENS
from fmgguf.server.state import state_of
from fmgguf.server.streaming import sse

router = APIRouter(tags=["llama.cpp"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_STOP_TYPE = {"stop": "eos", "length": "limit", "context": "limit", "limit": "limit", "cancelled": "none"}


class ExtraChunk(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: str = Field(default="tmp", max_length=4096)
    text: str = Field(default="", max_length=MAX_PROMPT_CHARS)


class _LlamaBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # samplers, id_slot, n_cmpl, lora, dry_*...: accepted, not used
    model: str | None = Field(default=None, max_length=300)
    n_predict: int = Field(default=-1, ge=-1, le=MAX_TOKENS)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0, le=1000)
    top_p: float = Field(default=0.95, ge=0.0, le=1.0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.0, ge=0.0, le=10.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=16)
    stream: bool = False
    cache_prompt: bool = True
    t_max_prompt_ms: int | None = None
    t_max_predict_ms: int | None = Field(default=None, ge=-1)
    #: speculative decoding: off | ngram | draft | draft:<id> (default: the server's `speculative` setting)
    speculative: str | None = Field(default=None, max_length=300)

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=None if self.n_predict < 0 else max(self.n_predict, 1),
                        temperature=self.temperature, top_p=self.top_p or 1.0, top_k=self.top_k or None,
                        min_p=self.min_p, repeat_penalty=self.repeat_penalty,
                        presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                        seed=None if self.seed is None or self.seed < 0 else self.seed % 2**31,
                        stop=tuple(s for s in self.stop if s), speculative=self.speculative)

    def time_limit(self) -> float | None:
        return self.t_max_predict_ms / 1000 if self.t_max_predict_ms and self.t_max_predict_ms > 0 else None


class InfillBody(_LlamaBody):
    input_prefix: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    input_suffix: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    input_extra: list[ExtraChunk] = Field(default_factory=list, max_length=1024)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    n_indent: int = Field(default=0, ge=0, le=1000)


class CompletionBody(_LlamaBody):
    prompt: Union[str, list[object]] = ""

    @field_validator("prompt")
    @classmethod
    def _text(cls, v: str | list[object]) -> str:
        if isinstance(v, list):
            if len(v) != 1 or not isinstance(v[0], str):
                raise ValueError("send the prompt as one string (token arrays are not supported)")
            v = v[0]
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt longer than {MAX_PROMPT_CHARS} characters")
        return v


def _client(request: Request, path: str, model: str | None) -> str:
    host = request.client.host if request.client else "?"
    return f"llama.cpp{path}|{host}|{request.headers.get('user-agent', '')}|{model or ''}"


def _final(outcome: Outcome, body: _LlamaBody, content: str) -> dict:
    prompt_n = max(outcome.prompt_tokens - outcome.cached_tokens, 0)
    prompt_ms, predict_ms = outcome.prompt_s * 1000, outcome.predict_s * 1000
    if outcome.finish_reason in ("limit", "cancelled") or outcome.stop_reason is None:
        stop_type = _STOP_TYPE.get(outcome.finish_reason, "eos")
    else:
        stop_type = fim_stop_type(outcome.stop_reason)
    why = {"stop_reason": outcome.stop_reason} if outcome.stop_reason else {}
    return {"content": content, "id_slot": 0, "stop": True, "model": outcome.model, **why,
            "tokens_predicted": outcome.completion_tokens, "tokens_evaluated": outcome.prompt_tokens,
            "tokens_cached": outcome.cached_tokens, "truncated": outcome.truncated, "stop_type": stop_type,
            "stopped_eos": stop_type == "eos", "stopped_limit": stop_type == "limit",
            "generation_settings": {"n_predict": body.n_predict, "temperature": body.temperature,
                                    "top_k": body.top_k, "top_p": body.top_p, "seed": body.seed},
            "timings": {"prompt_n": prompt_n, "prompt_ms": round(prompt_ms, 3),
                        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
                        "prompt_per_second": round(prompt_n / outcome.prompt_s, 3) if outcome.prompt_s else 0.0,
                        "predicted_n": outcome.completion_tokens, "predicted_ms": round(predict_ms, 3),
                        "predicted_per_token_ms": round(predict_ms / outcome.completion_tokens, 3)
                        if outcome.completion_tokens else 0.0,
                        "predicted_per_second": outcome.tokens_per_s,
                        "draft_n": outcome.drafted_tokens, "draft_n_accepted": outcome.accepted_tokens}}


async def _answer(request: Request, body: _LlamaBody, req: GenRequest) -> JsonObject | StreamingResponse:
    gen = await start(state_of(request), req)
    if not body.stream:
        outcome = await gen.collect()
        return _final(outcome, body, outcome.text)

    async def events() -> AsyncIterator[str]:
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    yield sse({"content": value, "stop": False, "id_slot": 0})
                elif kind == "done":
                    yield sse(_final(value, body, ""))
                else:
                    yield sse({"error": {"code": 500, "message": fmgguf_error_line(value), "type": "server_error"}})

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/infill")
async def infill(request: Request, body: InfillBody) -> object:
    """Fill in the middle, llama.cpp style (``n_predict: 0`` warms the cache up)."""
    req = GenRequest("fim", "llama.cpp", body.model, prompt=body.input_prefix + body.prompt, suffix=body.input_suffix,
                     extra=tuple((c.filename, c.text) for c in body.input_extra), sampling=body.sampling(),
                     stream=body.stream, time_limit_s=body.time_limit(), warmup=body.n_predict == 0,
                     client=_client(request, "/infill", body.model), n_indent=body.n_indent)
    return await _answer(request, body, req)


@router.post("/completion")
async def completion(request: Request, body: CompletionBody) -> object:
    """Plain completion of ``prompt`` (no chat template), llama.cpp style."""
    req = GenRequest("prompt", "llama.cpp", body.model, prompt=str(body.prompt), sampling=body.sampling(),
                     stream=body.stream, time_limit_s=body.time_limit(), warmup=body.n_predict == 0)
    return await _answer(request, body, req)


@router.get("/health")
def health() -> dict:
    """llama.cpp's liveness check (answers while a generation runs)."""
    return {"status": "ok"}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"
