"""What a generation returns (:class:`GenerationResult`, :class:`GenerationStream`) and the
first-come-first-served turnstile that makes concurrent callers queue for the one loaded model."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from fmgguf.errors import BusyError


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    #: seconds from the request to the first generated token (prompt processing included)
    ttft_s: float
    #: generation speed after the first token (what llama.cpp calls eval tokens/s)
    tokens_per_s: float
    total_s: float
    #: "stop" | "length" | "context" | "cancelled"
    finish_reason: str
    model_id: str | None
    quant: str | None
    #: prompt tokens whose KV cache was kept from the previous generation (not decoded again)
    cached_tokens: int = 0
    #: speculative decoding: tokens drafted, and those the model accepted (each saved a decode step)
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptText:
    """A prompt left for the engine to tokenize as part of the generation request: a runner then
    tokenizes and starts generating in one round trip instead of two (time to first token)."""

    text: str
    add_bos: bool
    special: bool = True


class Turnstile:
    """One holder at a time, waiters served in arrival order, at most ``max_waiting`` waiting.

    Unlike ``threading.Lock`` it may be released from another thread (a stream opened in one
    thread can be consumed in another), and it knows how many callers are queued.
    """

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max(0, int(max_waiting))
        self._cond = threading.Condition()
        self._busy = False
        self._waiters: deque[object] = deque()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiters)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:
        with self._cond:
            if not self._busy and not self._waiters:
                self._busy = True
                return True
            if not blocking:
                return False
            if len(self._waiters) >= self.max_waiting:
                raise BusyError(f"the model is busy and {len(self._waiters)} requests are already queued",
                                fix="retry in a moment, or raise the queue size (max_queue)")
            ticket = object()
            self._waiters.append(ticket)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while self._busy or self._waiters[0] is not ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise BusyError(f"waited {timeout:.0f} s for the model without getting a turn",
                                        fix="retry later, or raise the wait timeout")
                    self._cond.wait(left)
            except BaseException:
                self._waiters.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiters.popleft()
            self._busy = True
            return True

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


class GenerationStream:
    """Iterate for text pieces; ``.result`` once exhausted; ``.cancel()`` from any thread.

    The stream holds the model's turn until it ends (exhausted, cancelled, closed or garbage
    collected), so the next queued caller gets the model right after.
    """

    def __init__(self, pieces: Iterator[str], finish: Callable[[str], GenerationResult],
                 release: Callable[[], None], cancel_event: threading.Event) -> None:
        self._pieces = pieces
        self._finish = finish
        self._release = release
        self._cancel = cancel_event
        self._iter_lock = threading.Lock()
        self._done = False
        self._text: list[str] = []
        self.result: GenerationResult | None = None

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> str:
        with self._iter_lock:
            if self._done:
                raise StopIteration
            try:
                piece = next(self._pieces)
            except StopIteration:
                self._end()
                raise
            except BaseException:
                self._end(failed=True)
                raise
            self._text.append(piece)
            return piece

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self._text)

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop at the next token (or now, if nobody is iterating); the result says ``cancelled``."""
        self._cancel.set()
        if self._iter_lock.acquire(blocking=False):
            try:
                if not self._done:
                    self._pieces.close()  # type: ignore[attr-defined]
                    self._end()
            finally:
                self._iter_lock.release()

    def close(self) -> None:
        self.cancel()

    def consume(self) -> GenerationResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def _end(self, failed: bool = False) -> None:
        if self._done:
            return
        self._done = True
        try:
            if not failed:
                self.result = self._finish(self.text)
        finally:
            self._release()

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._done:
                self.cancel()
        except Exception:  # noqa: BLE001, S110 - never raise from a finalizer
            pass
