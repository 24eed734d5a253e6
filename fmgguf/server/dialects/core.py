"""The one internal request every API dialect maps to, and the one response stream it maps back from.

A dialect module (ollama, llama.cpp, Tabby, Mistral FIM, OpenAI, the seed REST) turns its JSON into a
:class:`GenRequest`, calls :func:`start`, and renders the ``("piece", text)`` / ``("done", Outcome)`` /
``("error", exc)`` events of the :class:`Generation` it gets back in its own shape. No dialect talks to
the engine or the manager: :func:`fmgguf.server.dialects.routing.call_manager` is the one place that does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fmgguf.errors import CancelledError, FmggufError
from fmgguf.server.streaming import StreamedGeneration

Kind = Literal["prompt", "chat", "fim"]


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None = 256
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: speculative decoding for this request: off | ngram (None: the server's setting)
    speculative: str | None = None

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                              "stop": list(self.stop) or None, "seed": self.seed}
        for name in ("top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "speculative"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        return kw


@dataclass(frozen=True)
class GenRequest:
    """What any client asks for. ``kind`` prompt: complete ``prompt`` as is; chat: answer ``messages``;
    fim: fill between ``prompt`` (the code before the cursor) and ``suffix``, with ``extra`` files
    ``(name, text)`` of the project as repo-level context."""

    kind: Kind
    dialect: str
    model: str | None = None
    prompt: str = ""
    suffix: str = ""
    messages: tuple[Mapping[str, Any], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    filename: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    keep_alive: float | None = None
    #: stop generating this many seconds after the first token (llama.cpp's t_max_predict_ms)
    time_limit_s: float | None = None
    #: fill the KV cache with the prompt, return no text (llama.cpp's n_predict 0)
    warmup: bool = False
    #: requests with the same key supersede each other: a new one cancels the one before it
    client: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a generation ended, in the units every dialect needs."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    #: speculative decoding: tokens drafted and accepted
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens_per_s: float = 0.0
    #: "stop" | "length" | "context" | "limit" (time limit) | "cancelled"
    finish_reason: str = "stop"
    #: the prompt was cut to fit the context window
    truncated: bool = False

    @property
    def prompt_s(self) -> float:
        return self.ttft_s

    @property
    def predict_s(self) -> float:
        return max(self.total_s - self.ttft_s, 0.0)


class Generation:
    """A started request: iterate :meth:`events`, or :meth:`collect` the whole text."""

    def __init__(self, streamed: StreamedGeneration, req: GenRequest, ticket: "_Ticket", hub: "DialectHub") -> None:
        self.streamed = streamed
        self.req = req
        self.ticket = ticket
        self.hub = hub
        self.started = time.perf_counter()
        self._timer: asyncio.TimerHandle | None = None
        self.model = str(getattr(streamed.stream, "model_id", None) or ticket.model or req.model or "unknown")

    def _arm_time_limit(self) -> None:
        limit = self.req.time_limit_s
        if limit is not None and limit > 0 and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(limit, self._expire)

    def _expire(self) -> None:
        self.ticket.timed_out = True
        self.streamed.stream.cancel()

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("piece", text) ..., then ("done", Outcome) or ("error", exc)."""
        try:
            async with contextlib.aclosing(self.streamed.events()) as items:
                async for kind, value in items:
                    if kind == "piece":
                        self._arm_time_limit()
                        if value and not self.req.warmup:
                            yield kind, value
                    elif kind == "done":
                        outcome = self._outcome(value)
                        self.hub.metrics.observe(self.req.dialect, outcome)
                        yield "done", outcome
                    else:
                        self.hub.metrics.failed(self.req.dialect, value)
                        yield kind, value
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.hub.forget(self.ticket)

    async def collect(self) -> Outcome:
        parts: list[str] = []
        async with contextlib.aclosing(self.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    parts.append(value)
                elif kind == "done":
                    return value
                else:
                    raise value
        raise CancelledError("the generation ended without a result", fix="retry the request")

    def _outcome(self, result: Any) -> Outcome:
        reason = str(getattr(result, "finish_reason", None) or "cancelled")
        if reason == "cancelled" and self.ticket.timed_out:
            reason = "limit"
        text = "" if self.req.warmup else str(getattr(result, "text", "") or "")
        return Outcome(text=text, model=str(getattr(result, "model_id", None) or self.model),
                       prompt_tokens=int(getattr(result, "prompt_tokens", 0) or 0),
                       completion_tokens=0 if self.req.warmup else int(getattr(result, "completion_tokens", 0) or 0),
                       cached_tokens=int(getattr(result, "cached_tokens", 0) or 0),
                       drafted_tokens=int(getattr(result, "drafted_tokens", 0) or 0),
                       accepted_tokens=int(getattr(result, "accepted_tokens", 0) or 0),
                       ttft_s=float(getattr(result, "ttft_s", 0.0) or 0.0),
                       total_s=float(getattr(result, "total_s", 0.0) or 0.0),
                       tokens_per_s=float(getattr(result, "tokens_per_s", 0.0) or 0.0), finish_reason=reason,
                       truncated=self.ticket.truncated)


class _Ticket:
    def __init__(self, key: str | None) -> None:
        self.key = key
        self.superseded = False
        self.timed_out = False
        self.truncated = False
        self.stream: Any = None
        self.model: str | None = None

    def cancel(self) -> None:
        self.superseded = True
        if self.stream is not None:
            self.stream.cancel()


class DialectHub:
    """Per-app state of the dialect layer: the supersede table and the metrics."""

    def __init__(self) -> None:
        from fmgguf.server.metrics import Metrics

        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._latest: dict[str, _Ticket] = {}

    def enter(self, req: GenRequest) -> _Ticket:
        ticket = _Ticket(None if req.warmup else req.client)
        if ticket.key is not None:
            with self._lock:
                before = self._latest.get(ticket.key)
                self._latest[ticket.key] = ticket
            if before is not None:
                before.cancel()
                self.metrics.superseded += 1
        return ticket

    def forget(self, ticket: _Ticket) -> None:
        if ticket.key is None:
            return
        with self._lock:
            if self._latest.get(ticket.key) is ticket:
                del self._latest[ticket.key]


def hub_of(state: Any) -> DialectHub:
    hub = getattr(state, "dialects", None)
    if hub is None:
        hub = state.dialects = DialectHub()
    return hub


async def start(state: Any, req: GenRequest) -> Generation:
    """Queue ``req`` behind the running generation and start it. Errors known before the first token
    (unknown model, no FIM, prompt too long, queue full) raise here, so each dialect answers them with a
    proper status instead of an error inside a 200 stream."""
    from fmgguf.server.dialects.routing import call_manager

    hub = hub_of(state)
    ticket = hub.enter(req)

    def call(manager: Any) -> Any:
        if ticket.superseded:
            raise CancelledError("a newer request from the same client replaced this one",
                                 fix="nothing to do: the newer request is answered")
        stream, model, ticket.truncated = call_manager(state, manager, req)
        ticket.stream, ticket.model = stream, model
        if ticket.superseded:  # cancelled while the model was loading
            stream.cancel()
        return stream

    try:
        streamed = await StreamedGeneration.start(state, call)
    except BaseException as exc:
        hub.forget(ticket)
        hub.metrics.failed(req.dialect, exc)
        raise
    return Generation(streamed, req, ticket, hub)


def fmgguf_error_line(exc: BaseException) -> str:
    """One line for clients that show only a string (Ollama, Tabby)."""
    if isinstance(exc, FmggufError):
        return exc.one_line()
    return " ".join(str(exc).split()) or type(exc).__name__
