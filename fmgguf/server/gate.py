"""One generation (or model switch) at a time, with a bounded queue of waiting requests.

Waiting happens in the event loop, not in worker threads, so a burst of requests costs no threads;
when ``max_queue`` requests already wait, the next one gets :class:`BusyError` (HTTP 429) at once.
"""

from __future__ import annotations

import asyncio
import threading
import time

from fmgguf.errors import BusyError


class GenerationGate:
    def __init__(self, max_queue: int = 64) -> None:
        self.max_queue = max(0, int(max_queue))
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._busy = False
        self._busy_since: float | None = None
        self._what: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def _lock_for_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:  # a server has one loop; test clients may bring new ones
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock

    @property
    def queue_depth(self) -> int:
        """Requests waiting for their turn (not counting the one running)."""
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._busy

    def snapshot(self) -> dict:
        return {"busy": self._busy, "doing": self._what, "queue_depth": self._waiting, "max_queue": self.max_queue,
                "busy_for_s": round(time.monotonic() - self._busy_since, 3) if self._busy_since else None}

    async def acquire(self, what: str = "generate") -> None:
        """Wait for the turn; raise BusyError when the queue is already full."""
        lock = self._lock_for_loop()
        with self._count_lock:
            if (self._busy or lock.locked()) and self._waiting >= self.max_queue:
                raise BusyError(f"the generation queue is full ({self._waiting} requests waiting)",
                                fix="retry in a few seconds", retry_after=1)
            self._waiting += 1
        try:
            await lock.acquire()
        finally:
            with self._count_lock:
                self._waiting -= 1
        self._busy, self._busy_since, self._what = True, time.monotonic(), what

    def release(self) -> None:
        """Give the turn back; safe to call from any thread."""
        self._busy, self._busy_since, self._what = False, None, None
        lock, loop = self._lock, self._loop
        if lock is None or loop is None or not lock.locked():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            lock.release()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_release_if_locked, lock)


def _release_if_locked(lock: asyncio.Lock) -> None:
    if lock.locked():
        lock.release()
