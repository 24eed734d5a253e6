"""The one internal request every API dialect maps to, and the one response stream it maps back from.

A dialect module (ollama, llama.cpp, Tabby, Mistral FIM, OpenAI, the seed REST) turns its JSON into a
:class:`GenRequest`, calls :func:`start`, and renders the ``("piece", text)`` / ``("tool_call", ToolCall)``
/ ``("done", Outcome)`` / ``("error", exc)`` events of the :class:`Generation` it gets back in its own shape.

Tools: ``GenRequest.tools`` (with ``tool_choice``, ``parallel_tool_calls``) are rendered through the model's
own chat template; the calls the model makes come back as ``("tool_call", ToolCall)`` events, each once it is
complete, and in ``Outcome.tool_calls`` with finish_reason ``tool_calls``. Visible text still streams as
``("piece", text)``; text that may be the start of a tool call is held back until that is decided, so a
piece never carries tool-call markup. Messages stay OpenAI-shaped dicts: ``role``, ``content``,
``tool_calls`` ``[{"id", "type": "function", "function": {"name", "arguments"}}]`` on assistant messages,
``tool_call_id`` (and ``name``) on ``role: tool`` results. ``response_format`` asks for JSON (any object,
or valid against a schema), enforced by a grammar. No dialect talks to
the engine or the manager: :func:`fmgguf.server.dialects.routing.call_manager` is the one place that does.

Endpoints return ``object``: FastAPI takes the return annotation as the response model, and ``object``
serializes the dict a handler builds as it is and passes a StreamingResponse through.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict, Union

from fmgguf.errors import CancelledError, FmggufError
from fmgguf.runtime.tools.tool_parser import ToolCallParser
from fmgguf.runtime.tools.tools import ResponseFormat, ToolCall, ToolRequest, ToolSpec
from fmgguf.server.streaming import StreamedGeneration

if TYPE_CHECKING:
    from fmgguf.runtime.engine.generation import GenerationResult, GenerationStream
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.server.state import ServerState

Kind = Literal["prompt", "chat", "fim"]


class _SamplingBase(TypedDict):
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str] | None
    seed: int | None


class SamplingKwargs(_SamplingBase, total=False):
    """:meth:`Sampling.kwargs`: what the manager's generate/chat/fill_in_middle take (a FIM request adds
    its gap's ``n_indent`` and ``time_limit_s``)."""

    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    speculative: str
    n_indent: int
    time_limit_s: float | None


#: the sampling fields passed on only when a request sets them
_OPTIONAL = ("top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "speculative")


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
    #: speculative decoding for this request: off | ngram | draft | draft:<id> (None: the server's setting)
    speculative: str | None = None

    def kwargs(self) -> SamplingKwargs:
        """The manager's keyword arguments (the optional ones only when set)."""
        kw: SamplingKwargs = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                              "stop": list(self.stop) or None, "seed": self.seed}
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                kw[name] = value  # type: ignore[literal-required]  # the names are SamplingKwargs' keys
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
    messages: tuple[Mapping[str, object], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    filename: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    keep_alive: float | None = None
    #: stop generating this many seconds after the first token (llama.cpp's t_max_predict_ms; FIM: at the
    #: first line end after that, as llama.cpp does)
    time_limit_s: float | None = None
    #: FIM: end the middle at a line (after the first) indented less than this (llama.cpp's n_indent)
    n_indent: int = 0
    #: fill the KV cache with the prompt, return no text (llama.cpp's n_predict 0)
    warmup: bool = False
    #: requests with the same key supersede each other: a new one cancels the one before it
    client: str | None = None
    #: functions the model may call (chat only); rendered with the model's own template
    tools: tuple[ToolSpec, ...] = ()
    #: "none" | "auto" | "required" | "tool:<name>"
    tool_choice: str = "auto"
    #: more than one call in one answer
    parallel_tool_calls: bool = True
    #: structured output (JSON, or JSON valid against a schema); None: free text
    response_format: ResponseFormat | None = None

    def tool_request(self) -> ToolRequest | None:
        """The runtime's view of the tool fields (None: a plain chat); InvalidRequestError if they clash."""
        if not self.tools and self.response_format is None:
            return None
        return ToolRequest(self.tools, self.tool_choice if self.tools else "none", self.parallel_tool_calls,
                           self.response_format)


@dataclass(frozen=True)
class Outcome:
    """How a generation ended, in the units every dialect needs."""

    text: str
    model: str
    quant: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    #: of ``cached_tokens``, those restored from the host-RAM prompt cache
    restored_tokens: int = 0
    #: speculative decoding: tokens drafted and accepted
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens_per_s: float = 0.0
    #: "stop" | "tool_calls" | "length" | "context" | "limit" (time limit) | "cancelled"
    finish_reason: str = "stop"
    #: FIM: why the middle ended (fmgguf.runtime.prompt.fim_stop: suffix, indent, n_indent, time; else eos, length...)
    stop_reason: str | None = None
    #: the prompt was cut to fit the context window
    truncated: bool = False
    #: the calls the model made (``text`` is then the visible text around them, often empty)
    tool_calls: tuple[ToolCall, ...] = ()
    #: the stop string that ended the generation, if one did
    stop_sequence: str | None = None

    @property
    def prompt_s(self) -> float:
        return self.ttft_s

    @property
    def predict_s(self) -> float:
        return max(self.total_s - self.ttft_s, 0.0)


#: what :meth:`Generation.events` yields: ``("piece", text)`` and ``("tool_call", call)`` ..., then
#: ``("done", outcome)`` or ``("error", exc)``
GenEvent = Union[tuple[Literal["piece"], str], tuple[Literal["tool_call"], ToolCall], tuple[Literal["done"], Outcome],
                 tuple[Literal["error"], Exception]]


class Generation:
    """A started request: iterate :meth:`events`, or :meth:`collect` the whole text."""

    def __init__(self, streamed: StreamedGeneration, req: GenRequest, ticket: "_Ticket", hub: "DialectHub") -> None:
        self.streamed = streamed
        self.req = req
        self.ticket = ticket
        self.hub = hub
        self.started = time.perf_counter()
        self._timer: asyncio.TimerHandle | None = None
        self.model = str(ticket.model or req.model or "unknown")

    def _arm_time_limit(self) -> None:
        limit = self.req.time_limit_s
        if limit is not None and self.req.kind == "fim":  # fim_stop ends it at a line end, as llama.cpp
            limit *= 2  # does; this is the backstop for a middle that never ends a line
        if limit is not None and limit > 0 and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(limit, self._expire)

    def _expire(self) -> None:
        self.ticket.timed_out = True
        self.streamed.stream.cancel()

    def _parser(self) -> ToolCallParser | None:
        tools = self.req.tool_request() if self.req.kind == "chat" else None
        if tools is None or not tools.calls_allowed:
            return None
        return ToolCallParser(tools.callable_tools(), tools.parallel)

    async def events(self) -> AsyncGenerator[GenEvent, None]:
        """("piece", text) and ("tool_call", ToolCall) ..., then ("done", Outcome) or ("error", exc)."""
        parser = self._parser()
        try:
            async with contextlib.aclosing(self.streamed.events()) as items:
                async for kind, value in items:
                    if kind == "piece":
                        self._arm_time_limit()
                        if value and not self.req.warmup:
                            for event in (parser.feed(value) if parser is not None else [(kind, value)]):
                                yield event
                    elif kind == "done":
                        for event in (parser.finish() if parser is not None else []):
                            yield event
                        outcome = self._outcome(value, parser)
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
        """The whole answer (its text and tool calls are in the Outcome)."""
        async with contextlib.aclosing(self.events()) as items:
            async for kind, value in items:
                if kind == "done":
                    return value
                if kind == "error":
                    raise value
        raise CancelledError("the generation ended without a result", fix="retry the request")

    def _outcome(self, result: "GenerationResult | None", parser: ToolCallParser | None = None) -> Outcome:
        if result is None:  # closed before it ended
            return Outcome(text="", model=self.model, finish_reason="cancelled", truncated=self.ticket.truncated)
        reason = result.finish_reason or "cancelled"
        if reason == "cancelled" and self.ticket.timed_out:
            reason = "limit"
        warm = self.req.warmup
        text = "" if warm else result.text
        calls: tuple[ToolCall, ...] = ()
        if parser is not None:
            text, calls = parser.text, tuple(parser.calls)
            if calls and reason in ("stop", "length", "context", "limit"):
                reason = "tool_calls"
        return Outcome(text=text, model=result.model_id or self.model, quant=result.quant,
                       prompt_tokens=result.prompt_tokens, completion_tokens=0 if warm else result.completion_tokens,
                       cached_tokens=result.cached_tokens, restored_tokens=result.restored_tokens,
                       drafted_tokens=result.drafted_tokens, accepted_tokens=result.accepted_tokens,
                       ttft_s=result.ttft_s, total_s=result.total_s, tokens_per_s=result.tokens_per_s,
                       finish_reason=reason, truncated=self.ticket.truncated, stop_reason=result.stop_reason,
                       tool_calls=calls, stop_sequence=result.stop_sequence)


class _Ticket:
    def __init__(self, key: str | None) -> None:
        self.key = key
        self.superseded = False
        self.timed_out = False
        self.truncated = False
        self.stream: GenerationStream | None = None
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


def hub_of(state: "ServerState") -> DialectHub:
    return state.dialects


async def start(state: "ServerState", req: GenRequest) -> Generation:
    """Start ``req`` on its model (in the model's queue: FIM first, then in order). Errors known before
    the first token (unknown model, no FIM, prompt too long, queue full) raise here, so each dialect
    answers them with a proper status instead of an error inside a 200 stream."""
    from fmgguf.server.dialects.routing import call_manager

    hub = hub_of(state)
    ticket = hub.enter(req)

    def call(manager: "ModelManager") -> "GenerationStream":
        if ticket.superseded:
            raise CancelledError("a newer request from the same client replaced this one",
                                 fix="nothing to do: the newer request is answered")
        stream, model, ticket.truncated = call_manager(state, manager, req)
        ticket.stream, ticket.model = stream, model
        if ticket.superseded:  # replaced while the model was loading or this request waited for a slot
            stream.close()
            raise CancelledError("a newer request from the same client replaced this one",
                                 fix="nothing to do: the newer request is answered")
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
