"""One file from the hub into the cache: resumable, retried, rate-capped, hashed while streaming.

The partial file is ``blobs/<etag>.incomplete``; a new run re-hashes its bytes and asks for the
rest with ``Range``. A file whose sha256 differs from the expected one is sorted out:
- the hub's own hash (or another installed model's verified record) matches its bytes: the pin is
  wrong, not the file: :class:`IntegrityError` at once with both hashes, nothing moved or fetched;
- it matches neither (real corruption): moved to quarantine and fetched at most once more; a
  second mismatch is an :class:`IntegrityError`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.download.cache import DISK_FULL, HubCache, human_bytes, quarantine
from fmgguf.download.hashing import StreamHasher, feed_file, sha256_file
from fmgguf.download.transfer import RemoteFile, Transient, head_file, open_stream
from fmgguf.errors import DiskSpaceError, DownloadError, HubUnreachableError, IntegrityError, LockTimeoutError

if TYPE_CHECKING:
    from fmgguf.settings import Settings

log = logging.getLogger("fmgguf.download")

#: progress(file name, bytes done, total bytes or None)
Progress = Callable[[str, int, "int | None"], None]


@dataclass
class Expected:
    sha256: str | None
    size: int | None
    #: pin | hub | lock | tofu
    source: str


@dataclass
class Fetched:
    pointer: Path
    blob: Path
    sha256: str
    source: str
    commit: str


class Fetcher:
    """Transfers with the retry/timeout/rate policy of one pull."""

    def __init__(self, settings: "Settings", *, read_timeout: float = 60.0, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, lock_timeout: float = 6 * 3600, progress: Progress | None = None,
                 verify: bool = True, vouch: "Callable[[Path, str], str | None] | None" = None) -> None:
        self.settings = settings
        self.cache = HubCache(settings.hub_cache)
        self.read_timeout = read_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.lock_timeout = lock_timeout
        self.progress = progress
        self.verify = verify
        #: vouch(path, sha256): the installed model ("id:QUANT") that verified these bytes, or None
        self.vouch = vouch or (lambda _path, _sha: None)
        self.retries = max(0, settings.download_retries)

    # --- retry policy ------------------------------------------------------------------------
    def _backoff(self, failures: int, exc: Transient, what: str, resumes: bool = True) -> None:
        if failures > self.retries:
            then = "run the same pull again (it resumes)" if resumes else "run the same pull again"
            raise HubUnreachableError(f"{what} failed after {self.retries} retries: {exc}",
                                fix=f"check the network or mirror (HF_ENDPOINT={self.settings.hf_endpoint}), then {then}") from None
        if exc.retry_after is not None:
            delay = min(exc.retry_after, 120.0)
        else:
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)) * (0.75 + 0.5 * random.random())  # noqa: S311
        # INFO, not WARNING: a CLI pull shows no extra lines for retries unless -v
        log.info("%s: %s; retry %d/%d in %.1fs", what, exc, failures, self.retries, delay)
        time.sleep(delay)

    def resolve(self, repo: str, filename: str, revision: str | None) -> RemoteFile:
        failures = 0
        while True:
            try:
                return head_file(self.settings, repo, filename, revision, timeout=max(self.read_timeout, 1.0))
            except Transient as exc:
                failures += 1
                self._backoff(failures, exc, f"resolving {repo}/{filename}", resumes=False)

    # --- one file ------------------------------------------------------------------------------
    def fetch(self, repo: str, filename: str, revision: str | None, remote: RemoteFile, expected: Expected) -> Fetched:
        from filelock import FileLock, Timeout

        blob = self.cache.blob(repo, remote.etag)
        lock_path = self.cache.lock_path(repo, remote.etag)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_path), timeout=self.lock_timeout):
                return self._fetch_locked(repo, filename, revision, remote, expected, blob)
        except Timeout:
            raise LockTimeoutError(f"another process has held {lock_path} for {self.lock_timeout:.0f}s",
                                   fix="wait for the other pull to finish or stop it") from None

    def _fetch_locked(self, repo: str, filename: str, revision: str | None, remote: RemoteFile,
                      expected: Expected, blob: Path) -> Fetched:
        qdir = self.settings.store_dir / "quarantine"
        attempts = 2
        if blob.exists():  # placed by an earlier pull, another process or huggingface_hub itself
            actual = sha256_file(blob) if self.verify else (expected.sha256 or "")
            problem = self._problem(actual, None, blob.stat().st_size, remote, expected)
            if problem is None:
                return self._place(repo, filename, revision, remote, blob, actual, expected)
            self._refuse_if_vouched(filename, blob, actual, remote, expected)
            moved = quarantine(blob, qdir, f"{filename}.bad")
            log.warning("%s in the cache was bad (%s); moved to %s, downloading again", filename, problem, moved)
            attempts = 1  # the bad cached copy was the first: fetch at most once more
        for attempt in range(1, attempts + 1):
            partial = self.cache.incomplete(repo, remote.etag)
            actual, git_oid, size = self._transfer(filename, remote, partial, expected.size or remote.size)
            if not self.verify:
                return self._place(repo, filename, revision, remote, partial, expected.sha256 or "", expected)
            problem = self._problem(actual, git_oid, size, remote, expected)
            if problem is None:
                return self._place(repo, filename, revision, remote, partial, actual, expected)
            if self._is_hubs(actual, git_oid, size, remote):  # the hub's own bytes: the pin is what is wrong
                self._place(repo, filename, revision, remote, partial, actual, expected)
                raise self._pin_error(filename, actual, expected, f"the hub's own hash ({remote.etag}) matches the "
                                      "downloaded bytes")
            moved = quarantine(partial, qdir, f"{filename}.bad")
            if attempt < attempts:
                log.warning("%s: %s (moved to %s); downloading it again from scratch", filename, problem, moved)
        raise IntegrityError(
            f"{filename} from {repo} failed verification: {problem}; the bad copy is in {moved}",
            fix="the mirror or network corrupts data: try another HF_ENDPOINT, or check the catalog pin",
            file=filename, expected=expected.sha256, actual=actual,
        )

    def _refuse_if_vouched(self, filename: str, blob: Path, actual: str, remote: RemoteFile, expected: Expected) -> None:
        """A cached blob that the hub's hash or another model's verified record vouches for is good
        bytes under a wrong expectation: fail at once, moving and fetching nothing."""
        owner = self.vouch(blob, actual)
        if owner is not None:
            raise self._pin_error(filename, actual, expected, f"{owner} verified these bytes and uses them")
        if remote.sha256 is not None and actual == remote.sha256:
            raise self._pin_error(filename, actual, expected, "the hub's own sha256 matches them")
        if remote.git_oid is not None and blob.stat().st_size == remote.size and _git_oid(blob) == remote.git_oid:
            raise self._pin_error(filename, actual, expected, "the hub's git blob id matches them")

    @staticmethod
    def _is_hubs(actual: str, git_oid: str | None, size: int, remote: RemoteFile) -> bool:
        if remote.size is not None and size != remote.size:
            return False
        return (remote.sha256 is not None and actual == remote.sha256) or \
            (remote.git_oid is not None and git_oid is not None and git_oid == remote.git_oid)

    def _pin_error(self, filename: str, actual: str, expected: Expected, why: str) -> IntegrityError:
        return IntegrityError(
            f"{filename}: the {expected.source} expects sha256 {expected.sha256}, but the file is {actual} and "
            f"{why}: the expectation is wrong, not the file (nothing was moved or downloaded again)",
            fix="correct the catalog entry's sha256 (or its revision) to the file's real hash, then pull again",
            file=filename, expected=expected.sha256, actual=actual)

    def _problem(self, actual: str, git_oid: str | None, size: int, remote: RemoteFile, expected: Expected) -> str | None:
        want_size = expected.size or remote.size
        if want_size is not None and size != want_size:
            return f"size {size} bytes, expected {want_size}"
        if expected.sha256 is not None:
            if actual != expected.sha256:
                return f"sha256 mismatch: expected {expected.sha256} ({expected.source}), got {actual}"
        elif remote.git_oid is not None and git_oid is not None and git_oid != remote.git_oid:
            return f"git blob id mismatch: expected {remote.git_oid}, got {git_oid}"
        return None

    def _place(self, repo: str, filename: str, revision: str | None, remote: RemoteFile, src: Path, actual: str,
               expected: Expected) -> Fetched:
        pointer = self.cache.place(repo, remote.etag, remote.commit, filename, src, revision)
        return Fetched(pointer=pointer, blob=self.cache.blob(repo, remote.etag), sha256=actual,
                       source=expected.source, commit=remote.commit)

    # --- the byte loop -------------------------------------------------------------------------
    def _transfer(self, filename: str, remote: RemoteFile, partial: Path, size: int | None) -> tuple[str, str | None, int]:
        partial.parent.mkdir(parents=True, exist_ok=True)
        offset = partial.stat().st_size if partial.exists() else 0
        if size is not None and offset > size:
            offset = 0
        git_size = size if (remote.git_oid and remote.sha256 is None and size is not None) else None
        hasher = StreamHasher(git_size) if self.verify else None
        try:
            if offset and hasher is not None:
                feed_file(hasher, partial, offset)  # resume: the kept bytes count too
            if offset:
                log.info("%s: resuming at %d bytes", filename, offset)
            with open(partial, "r+b" if partial.exists() else "w+b", buffering=0) as fh:
                fh.truncate(offset)
                fh.seek(offset)
                offset = self._loop(filename, remote, fh, offset, size, hasher, partial)
                os.fsync(fh.fileno())
                on_disk = os.fstat(fh.fileno()).st_size
            if on_disk != offset:  # what was hashed must be what is on disk
                raise DownloadError(f"{partial} holds {on_disk} bytes but {offset} were received",
                                    fix="another program wrote to the cache; run the pull again")
            if hasher is None:
                return "", None, offset
            return hasher.hexdigest(), hasher.git_oid(), offset
        finally:
            if hasher is not None:
                hasher.close()

    def _loop(self, filename: str, remote: RemoteFile, fh, offset: int, size: int | None,
              hasher: StreamHasher | None, partial: Path) -> int:
        failures = 0
        rate = self.settings.max_rate
        sink = _Sink(fh, hasher, offset, size, filename, partial, self.progress)
        t0, sent0 = time.monotonic(), offset
        while size is None or sink.offset < size:
            before = sink.offset
            try:
                with open_stream(self.settings, remote, sink.offset, self.read_timeout) as (start, total, chunks):
                    if start != sink.offset:  # the server ignored Range: start over
                        sink.restart()
                        before = 0
                        t0, sent0 = time.monotonic(), 0
                    if size is None:
                        size = sink.size = total
                    try:
                        for chunk in chunks:
                            sink.add(chunk)
                            failures = 0
                            if rate:
                                ahead = (sink.offset + sink.pending_n - sent0) / rate - (time.monotonic() - t0)
                                if ahead > 0:
                                    time.sleep(ahead)
                    finally:
                        sink.flush()  # bytes that arrived before a failure are kept
                if size is None:
                    return sink.offset  # no size known anywhere: the server's end of body is the end
                if sink.offset < size and sink.offset == before:
                    raise Transient(f"the server sent no data at {sink.offset} of {size} bytes")
            except Transient as exc:
                failures += 1
                self._backoff(failures, exc, f"downloading {filename} ({sink.offset} of {size or '?'} bytes kept)")
        return sink.offset


class _Sink:
    """Batches received chunks (~1 MiB) into one writev and one hand-over to the hasher."""

    BATCH = 1 << 20

    def __init__(self, fh, hasher: StreamHasher | None, offset: int, size: int | None, filename: str, partial: Path,
                 progress: Progress | None) -> None:
        self.fh, self.fd, self.hasher = fh, fh.fileno(), hasher
        self.offset, self.size, self.filename, self.partial, self.progress = offset, size, filename, partial, progress
        self.pending: list[bytes] = []
        self.pending_n = 0

    def add(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_n += len(chunk)
        if self.pending_n >= self.BATCH:
            self.flush()

    def restart(self) -> None:
        self.pending, self.pending_n, self.offset = [], 0, 0
        self.fh.seek(0)
        self.fh.truncate(0)
        if self.hasher is not None:
            self.hasher.reset()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, n = self.pending, self.pending_n
        self.pending, self.pending_n = [], 0
        try:
            views = [memoryview(b) for b in batch]
            while views:
                written = os.writev(self.fd, views[:512])
                while written and views:
                    if written >= len(views[0]):
                        written -= len(views.pop(0))
                    else:
                        views[0] = views[0][written:]
                        written = 0
        except OSError as exc:
            if exc.errno in DISK_FULL:
                kept = os.fstat(self.fd).st_size
                need = (self.size or 0) - kept
                raise DiskSpaceError(
                    f"disk full while downloading {self.filename}: {kept} bytes are kept in {self.partial} for resume",
                    fix=f"free at least {human_bytes(need)} on {self.partial.parent} and run the same pull again (it resumes)",
                    partial=str(self.partial),
                ) from None
            raise
        if self.hasher is not None:
            self.hasher.update_many(batch)
        self.offset += n
        if self.progress is not None:
            self.progress(self.filename, self.offset, self.size)


def _git_oid(path: Path) -> str | None:
    """git's blob id of a file (how a plain git mirror names its content)."""
    size = path.stat().st_size
    hasher = StreamHasher(size)
    try:
        feed_file(hasher, path, size)
        return hasher.git_oid()
    finally:
        hasher.close()
