"""An inter-process lock file that tells its caller when it has to wait, and removes itself.

The holder unlinks the file before it lets go, so no empty lock files pile up; an acquirer that
locked a file someone already unlinked notices (its inode is no longer the path's) and tries again,
which is what makes the removal safe. Where ``fcntl`` is missing (Windows) ``filelock`` is used
and the file is kept.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

POLL_S = 0.1


class LockTimeout(Exception):
    """The lock was not free within the timeout."""


@contextlib.contextmanager
def hold(path: Path, timeout: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``path`` exclusively; ``on_wait()`` is called once if another process holds it now."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock, Timeout

        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait()
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise LockTimeout(str(path)) from None
        try:
            yield
        finally:
            lock.release()
        return
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not waited:
                waited = True
                if on_wait is not None:
                    on_wait()
            if time.monotonic() >= deadline:
                raise LockTimeout(str(path)) from None
            time.sleep(POLL_S)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # closing releases the flock
