"""SHA256 while bytes stream in (on a helper thread, so hashing overlaps the network), and of files."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path

READ_CHUNK = 4 << 20


class StreamHasher:
    """``update()`` hands chunks to a background thread (hashlib releases the GIL on big buffers);
    ``hexdigest()`` waits for it. With ``git_size`` set, the git blob id is computed too."""

    def __init__(self, git_size: int | None = None, depth: int = 64) -> None:
        self._git_size, self._depth = git_size, depth
        self._sha = hashlib.sha256()
        self._git = None
        if git_size is not None:
            self._git = hashlib.sha1(f"blob {git_size}\0".encode())  # noqa: S324 - git's object id
        self._queue: queue.Queue[bytes | list[bytes] | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="fmgguf-sha256", daemon=True)
        self._thread.start()
        self._done = False
        self.bytes = 0

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            for piece in chunk if isinstance(chunk, list) else (chunk,):
                self._sha.update(piece)
                if self._git is not None:
                    self._git.update(piece)

    def update(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self._queue.put(chunk)

    def update_many(self, chunks: list[bytes]) -> None:
        """One hand-over for a batch of chunks (fewer thread wake-ups than one per chunk)."""
        self.bytes += sum(len(c) for c in chunks)
        self._queue.put(chunks)

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self._finish()
        return self._sha.hexdigest()

    def git_oid(self) -> str | None:
        self._finish()
        return self._git.hexdigest() if self._git is not None else None

    def close(self) -> None:
        self._finish()

    def reset(self) -> None:
        """Forget everything fed so far (the server restarted the file from byte 0)."""
        self._finish()
        self.__init__(self._git_size, self._depth)  # type: ignore[misc]


def feed_file(hasher: StreamHasher, path: Path, length: int | None = None) -> int:
    """Feed the first ``length`` bytes of ``path`` (all when None) to ``hasher``; returns bytes fed."""
    fed = 0
    with open(path, "rb") as fh:
        while length is None or fed < length:
            want = READ_CHUNK if length is None else min(READ_CHUNK, length - fed)
            chunk = fh.read(want)
            if not chunk:
                break
            hasher.update(chunk)
            fed += len(chunk)
    return fed


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The sha256 of a whole file, in one read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()
