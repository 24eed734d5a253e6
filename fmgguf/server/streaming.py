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
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from fmgguf.errors import FmggufError
from fmgguf.server.state import ServerState


def sse(data: Any, event: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"


def result_dict(result: Any) -> dict:
    keys = ("text", "prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s", "total_s", "finish_reason",
            "model_id", "quant")
    return {k: getattr(result, k, None) for k in keys}


def _record(state: ServerState, result: Any) -> None:
    info = result_dict(result)
    info.pop("text", None)
    info["finished_at"] = time.time()
    state.last_generation = info


async def run_generation(state: ServerState, call: Callable[[Any], Any], what: str = "generate") -> Any:
    """``call(manager)`` in a worker thread while holding the gate (429 when the queue is full)."""
    await state.gate.acquire(what)
    try:
        manager = await anyio.to_thread.run_sync(lambda: state.manager)
        result = await anyio.to_thread.run_sync(call, manager)
    finally:
        state.gate.release()
    if hasattr(result, "finish_reason"):
        _record(state, result)
    return result


class StreamedGeneration:
    """A started generation stream, pumped by a thread into the event loop."""

    def __init__(self, state: ServerState, stream: Any) -> None:
        self.state = state
        self.stream = stream
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self._thread = threading.Thread(target=self._pump, name="fmgguf-stream", daemon=True)

    @classmethod
    async def start(cls, state: ServerState, call: Callable[[Any], Any]) -> "StreamedGeneration":
        """Wait for the turn, then start ``call(manager)`` (which returns a GenerationStream).

        Errors known before the first token (busy, no model, prompt too long) raise here, so they
        become a proper HTTP status instead of an event inside a 200 stream."""
        await state.gate.acquire("stream")
        try:
            manager = await anyio.to_thread.run_sync(lambda: state.manager)
            stream = await anyio.to_thread.run_sync(call, manager)
        except BaseException:
            state.gate.release()
            raise
        self = cls(state, stream)
        self._thread.start()
        return self

    def _put(self, item: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            pass

    def _pump(self) -> None:
        try:
            for piece in self.stream:
                self._put(("piece", piece))
            result = getattr(self.stream, "result", None)
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

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
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
                cancel = getattr(self.stream, "cancel", None)
                if cancel is not None:
                    cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await self.finished.wait()


def error_payload(exc: BaseException) -> dict:
    if isinstance(exc, FmggufError):
        return exc.to_dict()
    return {"error": type(exc).__name__, "message": " ".join(str(exc).split()) or type(exc).__name__,
            "fix": "see the server log"}
