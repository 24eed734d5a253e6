"""The server's gate: generations pass side by side (``shared``; each model's own queue in the
manager decides how many run at once), while a switch, an unload or a benchmark run holds it alone
(``exclusive``): it waits for the running generations, and the requests after it wait for it.

Waiting happens in the event loop, not in worker threads, so a burst of requests costs no threads;
the waiters are served in arrival order, and when ``max_queue`` already wait the next one gets
:class:`BusyError` (HTTP 429) at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from fmgguf.errors import BusyError


@dataclass
class _Waiter:
    shared: bool
    what: str
    future: asyncio.Future


class GenerationGate:
    def __init__(self, max_queue: int = 64) -> None:
        self.max_queue = max(0, int(max_queue))
        self._shared = 0
        self._exclusive = False
        self._busy_since: float | None = None
        self._what: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[_Waiter] = deque()

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a server has one loop; test clients may bring new ones
            self._loop, self._waiters, self._shared, self._exclusive = loop, deque(), 0, False
        return loop

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the gate (not counting those holding it)."""
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        """Something holds the gate: a generation, or a switch/unload/benchmark."""
        return self._exclusive or self._shared > 0

    @property
    def generating(self) -> int:
        return self._shared

    def snapshot(self) -> dict:
        return {"busy": self.busy, "doing": self._what, "queue_depth": len(self._waiters), "max_queue": self.max_queue,
                "generating": self._shared,
                "busy_for_s": round(time.monotonic() - self._busy_since, 3) if self._busy_since else None}

    def _can(self, shared: bool) -> bool:
        return not self._exclusive and (shared or self._shared == 0)

    def _take(self, shared: bool, what: str) -> None:
        if shared:
            self._shared += 1
        else:
            self._exclusive = True
        if self._busy_since is None or not shared:
            self._busy_since, self._what = time.monotonic(), what

    async def acquire(self, what: str = "generate", *, shared: bool = False) -> None:
        """Wait for the gate (``shared``: beside other shared holders); BusyError when the queue is full."""
        loop = self._bind()
        if not self._waiters and self._can(shared):
            self._take(shared, what)
            return
        if len(self._waiters) >= self.max_queue:
            raise BusyError(f"the generation queue is full ({len(self._waiters)} requests waiting)",
                            fix="retry in a few seconds", retry_after=1)
        waiter = _Waiter(shared, what, loop.create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self._release_now()  # granted, then cancelled before it could use it
            self._wake()
            raise

    def release(self) -> None:
        """Give the gate back; safe to call from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._release_now()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._release_now)

    def _release_now(self) -> None:
        if self._exclusive:
            self._exclusive = False
        elif self._shared > 0:
            self._shared -= 1
        if not self.busy:
            self._busy_since, self._what = None, None
        self._wake()

    def _wake(self) -> None:
        """Grant the gate to the waiters at the head of the line that can have it now."""
        while self._waiters and self._can(self._waiters[0].shared):
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            self._take(waiter.shared, waiter.what)
            waiter.future.set_result(None)
