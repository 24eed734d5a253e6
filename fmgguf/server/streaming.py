"""Running generations off the event loop, and streaming them as Server-Sent Events.

Every generation holds the server's :class:`GenerationGate` turn for exactly as long as llama.cpp
works on it. A streamed generation runs in its own thread that feeds an asyncio queue; when the
client goes away the response task is cancelled, the ``finally`` below cancels the stream, and the
thread stops at the next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Literal, TypeVar, Union

import anyio

from fmgguf.errors import FmggufError
from fmgguf.server.state import ServerState

if TYPE_CHECKING:
    from fmgguf.runtime.engine.generation import GenerationResult, GenerationStream
    from fmgguf.runtime.manager import ModelManager

T = TypeVar("T")
#: what a streamed generation's thread hands the event loop: ``("piece", text)`` ..., then ``("done",
#: result)`` (None: the stream kept no result) or ``("error", exc)``
StreamEvent = Union[tuple[Literal["piece"], str], tuple[Literal["done"], "GenerationResult | None"],
                    tuple[Literal["error"], Exception]]


def sse(data: object, event: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"


def _record(state: ServerState, result: "GenerationResult") -> None:
    info = result.as_dict()
    info.pop("text", None)
    info["finished_at"] = time.time()
    state.last_generation = info


async def run_exclusive(state: ServerState, call: Callable[["ModelManager"], T], what: str) -> T:
    """``call(manager)`` (a switch, an unload) in a worker thread while holding the gate alone: it waits
    for the running generations, and the requests after it wait for it (429 when the queue is full)."""
    await state.gate.acquire(what)
    try:
        manager = await anyio.to_thread.run_sync(lambda: state.manager)
        result = await anyio.to_thread.run_sync(call, manager)
    finally:
        state.gate.release()
    return result


class StreamedGeneration:
    """A started generation stream, pumped by a thread into the event loop."""

    def __init__(self, state: ServerState, stream: GenerationStream) -> None:
        self.state = state
        self.stream = stream
        self.queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self._thread = threading.Thread(target=self._pump, name="fmgguf-stream", daemon=True)

    @classmethod
    async def start(cls, state: ServerState, call: Callable[["ModelManager"], GenerationStream]) -> "StreamedGeneration":
        """Pass the gate beside the other generations, then start ``call(manager)`` (its model's queue
        in the manager decides when it runs).

        Errors known before the first token (busy, no model, prompt too long) raise here, so they
        become a proper HTTP status instead of an event inside a 200 stream."""
        await state.gate.acquire("stream", shared=True)
        try:
            manager = await anyio.to_thread.run_sync(lambda: state.manager)
            stream = await anyio.to_thread.run_sync(call, manager)
        except BaseException:
            state.gate.release()
            raise
        self = cls(state, stream)
        self._thread.start()
        return self

    def _put(self, item: StreamEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            pass

    def _pump(self) -> None:
        try:
            for piece in self.stream:
                self._put(("piece", piece))
            result = self.stream.result
            if result is not None:
                _record(self.state, result)
            self._put(("done", result))
        except FmggufError as exc:
            self._put(("error", exc))
        except Exception as exc:  # never let a thread die silently; the client gets an error event
            self._put(("error", exc))
        finally:
            self.state.gate.release()
            try:
                self.loop.call_soon_threadsafe(self.finished.set)
            except RuntimeError:
                pass

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """("piece", text) ..., then ("done", result) or ("error", exc). Cancels the stream if abandoned."""
        ended = False
        try:
            while True:
                kind, value = await self.queue.get()
                if kind != "piece":
                    ended = True
                yield kind, value
                if ended:
                    return
        finally:
            if not ended:
                self.stream.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await self.finished.wait()


def error_payload(exc: BaseException) -> dict:
    if isinstance(exc, FmggufError):
        return exc.to_dict()
    return {"error": type(exc).__name__, "message": " ".join(str(exc).split()) or type(exc).__name__,
            "fix": "see the server log"}
