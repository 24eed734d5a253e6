"""What the slot scheduler (:mod:`fmgguf.runtime.engine.slots`) takes: a :class:`Request`, and the
:class:`Sink` its output goes to (:class:`QueueSink` for an in-process consumer; the runner child
has its own, writing frames to its socket)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fmgguf.runtime.engine.constraints import Constraint
    from fmgguf.runtime.engine.engine import GenerationStats
    from fmgguf.runtime.engine.sampling import SamplingParams
    from fmgguf.runtime.engine.slots import Scheduler


class Sink(Protocol):
    """Where one request's output goes: pieces as they come, then its end (``None``: stats are final)."""

    def ready(self) -> bool:
        """False while the consumer lags behind (the slot waits: a cancel stays within a token or two)."""

    def piece(self, text: str) -> None: ...

    def end(self, error: BaseException | None) -> None: ...


#: pieces an in-process slot may have waiting for its reader before it pauses: one, so the slot
#: decodes the next token while the reader takes the last (it stays in every batch instead of every
#: other one), and a cancel after N pieces still stops within two tokens of them
LOOKAHEAD = 1


class QueueSink:
    """An in-process consumer's sink: pieces wait in a queue for the thread iterating :meth:`pieces`.
    The slot pauses while more than :data:`LOOKAHEAD` pieces wait, so a slow reader holds it back."""

    def __init__(self) -> None:
        self._items: deque[str] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._error: BaseException | None = None

    def ready(self) -> bool:
        return len(self._items) <= LOOKAHEAD

    def piece(self, text: str) -> None:
        with self._cond:
            self._items.append(text)
            self._cond.notify()

    def end(self, error: BaseException | None) -> None:
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify()

    def pieces(self, req: "Request", submit: "Callable[[Request], Scheduler]") -> Iterator[str]:
        """The request's pieces; it is queued on the first ``next`` (an unstarted stream costs nothing).
        Closing the iterator early cancels the request and waits (one step) until its slot is free."""
        slots = submit(req)
        try:
            while True:
                with self._cond:
                    while not self._items and not self._ended:
                        self._cond.wait()
                    text = self._items.popleft() if self._items else None
                if text is None:
                    break
                slots.wake()  # the slot waited for this piece to be taken
                yield text
        finally:
            if not self._ended:
                req.cancel.set()
                slots.wake()
                with self._cond:
                    self._cond.wait_for(lambda: self._ended, timeout=30)
        if self._error is not None:
            raise self._error


@dataclass(eq=False)
class Request:
    tokens: list[int]
    stats: GenerationStats
    params: SamplingParams
    sink: Sink
    max_tokens: int | None = 256
    stop: Sequence[str] = ()
    priority: bool = False
    constraint: Constraint | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: speculative decoding for this request: "off" or "ngram" (:mod:`fmgguf.runtime.engine.drafting`)
    speculative: str = "off"
