"""The product mirror (:mod:`fmgguf.mirror.server`) on 127.0.0.1 with fault injection, for tests and benchmarks.

It serves what the product mirror serves (the hub's resolve, model-info and tree endpoints).
:class:`Fault` makes it misbehave like real networks: status sequences (500 then 200, 429 +
Retry-After, 404), a dropped connection, a flipped byte, a lying ``Content-Length``, a stall, an ignored
``Range``; a redirect to a CDN on another loopback host (``redirect_to``); ``throttle`` caps bytes/s per response; ``lfs=False`` serves files as plain git files (no sha256).
``with HubServer({"org/x-GGUF": {"x-Q8_0.gguf": path}}) as hub: hub.add_fault(Fault(drop_after=4096))``.
``python -m fmgguf.testing.hub_server --file org/repo:name=PATH [--throttle B/s] [--plain]`` runs it
as its own process (prints ``READY <url>``).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fmgguf._util import JsonObject
from fmgguf.mirror.server import CHUNK, MirrorHandler, MirrorServer, read_chunks
from fmgguf.mirror.sources import MirrorFile


class _RequestSeen(threading.local):
    """The request a handler thread is answering, for the log entries it writes (None outside one)."""

    path: str | None = None
    auth: str | None = None


_REQUEST = _RequestSeen()


@dataclass
class Fault:
    """One way to misbehave, for the requests it matches (``times`` of them; None = all)."""

    file: str | None = None          # file name it applies to (None: every file)
    method: str = "GET"              # "GET", "HEAD" or "*"
    status: int | None = None        # answer with this status (and no body)
    retry_after: float | None = None  # Retry-After header sent with ``status``
    drop_after: int | None = None    # close the connection after this many body bytes
    flip_byte_at: int | None = None  # invert the byte at this file offset
    length_delta: int = 0            # claim Content-Length + delta (the body stays the truth; closes after)
    stall_s: float = 0.0             # sleep before sending the body
    ignore_range: bool = False       # answer a Range request with 200 and the whole file (old mirrors do)
    times: int | None = 1
    used: int = field(default=0, compare=False)

    def matches(self, method: str, filename: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.method != "*" and self.method != method:
            return False
        return self.file is None or self.file == filename


def _git_oid(path: Path, size: int) -> str:
    """git's blob id of a file (what the hub sends as ETag for files not in LFS)."""
    oid = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324 - git's object id
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            oid.update(chunk)
    return oid.hexdigest()


class HubServer(MirrorServer):
    """The product mirror on loopback, plus what tests need. ``repos``: repo id -> {file name: local path}.

    ``lfs=True`` serves files the way the hub serves LFS files (sha256 in ``X-Linked-Etag``);
    ``lfs=False`` like plain git files (``ETag`` = git blob id, no sha256 anywhere).
    ``requests`` logs every request: dict(method, file, range, status, sent).
    """

    def __init__(self, repos: dict[str, dict[str, Path | str]], *, lfs: bool = True, throttle: float | None = None,
                 port: int = 0, revision: str = "main", host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        super().__init__(repos, host=host, port=port)
        self.lfs = lfs
        #: ``redirect_to``: answer file requests with a 302 to this base URL (a CDN on another host), the way
        #: the hub sends LFS files to its CDN; ``host``: the loopback address to listen on (127.0.0.2 is another host)
        self.redirect_to = redirect_to
        self.throttle = throttle
        self.revision = revision
        self.faults: list[Fault] = []
        self.requests: list[JsonObject] = []
        self._lock = threading.Lock()
        self.commits = {repo_id: repo.commit for repo_id, repo in self.repos.items()}
        self.git_oids: dict[tuple[str, str], str] = {}
        for repo_id, repo in self.repos.items():
            repo.revisions.add(revision)
            if not lfs:
                for name, f in repo.files.items():
                    self.git_oids[(repo_id, name)] = _git_oid(f.path, f.size)

    # --- faults and the log ------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def take_fault(self, method: str, filename: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, filename):
                    fault.used += 1
                    return fault
        return None

    def log(self, **entry: object) -> JsonObject:
        with self._lock:
            entry.setdefault("path", _REQUEST.path)
            entry.setdefault("auth", _REQUEST.auth)
            self.requests.append(entry)
        return entry

    def gets(self, filename: str | None = None) -> list[JsonObject]:
        """The GET requests for file data (optionally for one file)."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "GET" and r.get("file")
                    and (filename is None or r["file"] == filename)]

    def bytes_sent(self, filename: str | None = None) -> int:
        return sum(r.get("sent", 0) for r in self.gets(filename))


class _FaultyHandler(MirrorHandler):
    """The mirror's handler with the test hub's faults, throttle, plain-git mode and request log."""

    mirror: HubServer
    _fault: Fault | None = None
    _record: JsonObject | None = None

    def _route(self, method: str) -> None:
        _REQUEST.path, _REQUEST.auth = self.path, self.headers.get("Authorization")
        self._fault, self._record = None, None
        super()._route(method)

    def _error(self, method: str, status: int, code: str, message: str, commit: str | None = None,
               extra: Mapping[str, str] | None = None, filename: str | None = None) -> None:
        # logged before the answer goes out: a client that gives up on it must find it in the log
        self.mirror.log(method=method, file=filename, range=self.headers.get("Range"), status=status, sent=0)
        super()._error(method, status, code, message, commit, extra, filename)

    def _tree_entry(self, repo_id: str, name: str, f: MirrorFile) -> JsonObject:
        if self.mirror.lfs:
            return super()._tree_entry(repo_id, name, f)
        return {"type": "file", "path": name, "size": f.size, "oid": self.mirror.git_oids[(repo_id, name)]}

    def _file_response(self, method: str, repo_id: str, commit: str, filename: str, entry: MirrorFile) -> None:
        fault = self.mirror.take_fault(method, filename)
        if fault is not None and fault.status is not None:
            extra = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                extra["Retry-After"] = str(int(ra) if float(ra).is_integer() else ra)
            self._error(method, fault.status, "Fault", f"injected {fault.status}", commit=commit, extra=extra,
                        filename=filename)
            return
        if self.mirror.redirect_to:
            self._redirect(method, repo_id, commit, filename, entry)
            return
        self._fault = fault
        rng = self.headers.get("Range") if method == "GET" else None
        partial = rng is not None and not (fault is not None and fault.ignore_range)
        self._record = self.mirror.log(method=method, file=filename, range=rng, status=206 if partial else 200, sent=0)
        super()._file_response(method, repo_id, commit, filename, entry)
        if fault is not None and method == "GET" and (fault.drop_after is not None or fault.length_delta):
            self._hang_up()

    def _redirect(self, method: str, repo_id: str, commit: str, filename: str, entry: MirrorFile) -> None:
        """302 to the CDN, with the file's metadata on the redirect itself (as the hub does for LFS)."""
        self.mirror.log(method=method, file=filename, range=self.headers.get("Range"), status=302, sent=0)
        self.send_response(302)
        self.send_header("Location", f"{self.mirror.redirect_to}/{repo_id}/resolve/{commit}/{filename}")
        self.send_header("X-Repo-Commit", commit)
        for k, v in self._file_etags(repo_id, filename, entry).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file_range(self, method: str, filename: str, entry: MirrorFile) -> tuple[int, int, int] | None:
        if self._fault is not None and self._fault.ignore_range:
            return 200, 0, entry.size - 1
        return super()._file_range(method, filename, entry)

    def _file_refused(self, method: str, filename: str, rng: str) -> None:
        if self._record is not None:
            self._record["status"] = 416

    def _file_etags(self, repo_id: str, filename: str, entry: MirrorFile) -> dict[str, str]:
        if self.mirror.lfs:
            return super()._file_etags(repo_id, filename, entry)
        return {"ETag": f'"{self.mirror.git_oids[(repo_id, filename)]}"'}

    def _file_length(self, filename: str, length: int) -> int:
        return max(0, length + (self._fault.length_delta if self._fault else 0))

    def _file_body(self, filename: str, entry: MirrorFile, start: int, length: int) -> int:
        fault, record = self._fault, self._record if self._record is not None else {}
        if fault is not None and fault.stall_s:
            time.sleep(fault.stall_s)
        limit = min(length, self._file_length(filename, length))
        if fault is not None and fault.drop_after is not None:
            limit = min(limit, fault.drop_after)
        rate = self.mirror.throttle
        chunk_size = CHUNK if not rate else max(16 * 1024, min(4 << 20, int(rate / 50)))
        sent = 0
        t0 = time.monotonic()
        for data in read_chunks(entry, start, limit, chunk_size):
            if fault is not None and fault.flip_byte_at is not None:
                rel = fault.flip_byte_at - (start + sent)
                if 0 <= rel < len(data):
                    buf = bytearray(data)
                    buf[rel] ^= 0xFF
                    data = bytes(buf)
            self.wfile.write(data)
            sent += len(data)
            record["sent"] = sent
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        return sent

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


HubServer.handler_class = _FaultyHandler


class HubServerProcess:
    """The same server in its own process (``--file``/``--throttle`` only; no runtime faults)."""

    def __init__(self, repos: dict[str, dict[str, Path | str]], *, throttle: float | None = None, lfs: bool = True) -> None:
        self.args = [sys.executable, "-m", "fmgguf.testing.hub_server", *(["--throttle", str(throttle)] if throttle else []),
                     *([] if lfs else ["--plain"])]
        self.args += [a for repo, files in repos.items() for n, p in files.items() for a in ("--file", f"{repo}:{n}={p}")]
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def __enter__(self) -> "HubServerProcess":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"hub server did not start: {line!r}")
        self.endpoint = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="loopback hub-compatible file server (tests, demo, benchmarks)")
    parser.add_argument("--file", action="append", default=[], help="REPO:NAME=PATH (repeat)")
    parser.add_argument("--throttle", type=float, default=None, help="bytes per second per response")
    parser.add_argument("--plain", action="store_true", help="serve as plain git files (no sha256 header)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    repos: dict[str, dict[str, Path | str]] = {}
    for spec in args.file:
        left, _, path = spec.partition("=")
        repo, _, name = left.rpartition(":")
        repos.setdefault(repo, {})[name] = path
    server = HubServer(repos, lfs=not args.plain, throttle=args.throttle, port=args.port).start()
    print(f"READY {server.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
