"""What a generation counts as it runs (:class:`GenerationStats`, filled in by the engine or read back from
a runner), what it returns (:class:`GenerationResult`, :class:`GenerationStream`) and the queue of
each resident model (:class:`SlotQueue`): several streams at once, FIM first, the rest in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from fmgguf._util import JsonObject
from fmgguf.errors import BusyError


@dataclass
class GenerationStats:
    """Filled in by :meth:`Engine.stream` while it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    started: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    cached_tokens: int = 0
    #: of ``cached_tokens``, those restored from the host-RAM prompt cache
    restored_tokens: int = 0
    #: the stop string that ended the generation (None: another reason)
    stop_sequence: str | None = None
    #: speculative decoding: tokens drafted, and those of them the model accepted
    drafted_tokens: int = 0
    accepted_tokens: int = 0


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
    #: fill-in-the-middle only: why the middle ended: "suffix" | "indent" | "n_indent" | "time" (cut by
    #: :mod:`fmgguf.runtime.prompt.fim_stop`), else "eos" | "length" | "context" | "cancelled"
    stop_reason: str | None = None
    #: of ``cached_tokens``, those restored from the host-RAM prompt cache (runtime.engine.prompt_cache)
    restored_tokens: int = 0
    #: the stop string that ended the generation (None: an end-of-generation token or another reason)
    stop_sequence: str | None = None
    #: speculative decoding: tokens drafted, and those the model accepted (each saved a decode step)
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    def as_dict(self) -> JsonObject:
        return asdict(self)


@dataclass(frozen=True)
class PromptText:
    """A prompt left for the engine to tokenize as part of the generation request: a runner then
    tokenizes and starts generating in one round trip instead of two (time to first token)."""

    text: str
    add_bos: bool
    special: bool = True


class ModelGone(Exception):
    """The model was unloaded (or its runner died) while the caller waited for a slot: look it up again."""


class SlotQueue:
    """The queue of one resident model: up to ``slots`` streams at once, plus ``lanes`` more that
    only ``priority`` (FIM) streams take; the rest wait (priority first, then in arrival order), at
    most ``max_waiting`` of them, then :class:`BusyError`. Unlike ``threading.Lock`` a slot may be released from another thread (a
    stream opened in one thread can be consumed in another).

    :meth:`shut` stops new admissions (the model is being unloaded); those already queued are served.
    """

    def __init__(self, label: str, slots: int, max_waiting: int, lanes: int = 0) -> None:
        self.label = label
        self.slots = max(1, int(slots))
        self.lanes = max(0, int(lanes))
        self._plain = 0  # streams running that are not priority ones
        self.max_waiting = max(0, int(max_waiting))
        self._cond = threading.Condition()
        self._active = 0
        self._shut = False
        self._waiters: list[tuple[int, int]] = []  # (0 for priority else 1, arrival), served smallest first
        self._arrivals = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._active == 0 and not self._waiters

    def acquire(self, *, priority: bool = False, timeout: float | None = None) -> None:
        """Wait for a slot; BusyError when ``max_waiting`` already wait (or after ``timeout``);
        :class:`ModelGone` when the model is being unloaded."""
        with self._cond:
            if self._shut:
                raise ModelGone(self.label)
            if self._fits(priority) and not self._waiters:
                self._take(priority)
                return
            if len(self._waiters) >= self.max_waiting:
                raise BusyError(f"{self.label}: the queue is full ({len(self._waiters)} requests already queued)",
                                fix="retry in a moment, or raise the queue size (max_queue)", model=self.label,
                                retry_after=1)
            self._arrivals += 1
            ticket = (0 if priority else 1, self._arrivals)
            self._waiters.append(ticket)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while not self._fits(priority) or min(self._waiters) != ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise BusyError(f"waited {timeout:.0f} s for {self.label} without getting a turn",
                                        fix="retry later, or raise the wait timeout", model=self.label)
                    self._cond.wait(left)
            except BaseException:
                self._waiters.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiters.remove(ticket)
            self._take(priority)
            self._cond.notify_all()  # the next waiter may fit in a slot too

    def _fits(self, priority: bool) -> bool:
        room = self._active < self.slots + self.lanes
        return room if priority else room and self._plain < self.slots

    def _take(self, priority: bool) -> None:
        self._active += 1
        self._plain += 0 if priority else 1

    def release(self, priority: bool = False) -> None:
        with self._cond:
            self._active = max(0, self._active - 1)
            if not priority:
                self._plain = max(0, self._plain - 1)
            self._cond.notify_all()

    def try_shut(self) -> bool:
        """Shut the queue if nobody uses or waits for the model (an idle unload); True if it did."""
        with self._cond:
            if self._active or self._waiters:
                return False
            self._shut = True
            return True

    def shut(self, wait: bool = True) -> None:
        """No new admissions; with ``wait``, return once the streams running or queued have ended."""
        with self._cond:
            self._shut = True
            while wait and (self._active or self._waiters):
                self._cond.wait()


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
