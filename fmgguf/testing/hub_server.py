"""A small hub-compatible HTTP server on 127.0.0.1 with fault injection (tests, demo, benchmarks).

Serves what ``huggingface_hub`` and fmgguf's downloader ask of the hub: ``HEAD``/``GET``
``/{repo}/resolve/{revision}/{filename}`` (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` = sha256,
``X-Linked-Size``, ``Range``), ``/api/models/{repo}[/revision/{rev}]`` and the tree listing.
:class:`Fault` makes it misbehave like real networks: status sequences (500 then 200, 429 +
Retry-After, 404), a dropped connection, a flipped byte, a lying ``Content-Length``, a stall, an ignored ``Range``;
a redirect to a CDN on another loopback host (``redirect_to``);
``throttle`` caps bytes/s per response. ``with HubServer({"org/x-GGUF": {"x-Q8_0.gguf": path}}) as
hub: hub.add_fault(Fault(drop_after=4096))``. ``python -m fmgguf.testing.hub_server --file
org/repo:name=PATH [--throttle B/s] [--plain]`` runs it as its own process (prints ``READY <url>``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 256 * 1024


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


@dataclass
class _Entry:
    path: Path
    size: int
    sha256: str
    git_oid: str


def _digests(path: Path, size: int, git: bool) -> tuple[str, str]:
    """(sha256, git blob id or "") of a file."""
    sha = hashlib.sha256()
    oid = hashlib.sha1(f"blob {size}\0".encode()) if git else None  # noqa: S324 - git's object id
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            if oid is not None:
                oid.update(chunk)
    return sha.hexdigest(), oid.hexdigest() if oid is not None else ""


class HubServer:
    """The loopback hub. ``repos``: repo id -> {file name in repo: local path}.

    ``lfs=True`` serves files the way the hub serves LFS files (sha256 in ``X-Linked-Etag``);
    ``lfs=False`` like plain git files (``ETag`` = git blob id, no sha256 anywhere).
    ``requests`` logs every request: dict(method, file, range, status, sent).
    """

    def __init__(self, repos: dict[str, dict[str, Path | str]], *, lfs: bool = True, throttle: float | None = None,
                 port: int = 0, revision: str = "main", host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        self.lfs = lfs
        #: ``redirect_to``: answer file requests with a 302 to this base URL (a CDN on another host), the way
        #: the hub sends LFS files to its CDN; ``host``: the loopback address to listen on (127.0.0.2 is another host)
        self.host, self.redirect_to = host, redirect_to
        self.throttle = throttle
        self.revision = revision
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.repos: dict[str, dict[str, _Entry]] = {}
        self.commits: dict[str, str] = {}
        for repo, files in repos.items():
            entries = {}
            for name, p in files.items():
                p = Path(p)
                size = p.stat().st_size
                entries[name] = _Entry(p, size, *_digests(p, size, git=not lfs))
            self.repos[repo] = entries
            digest = hashlib.sha1(repo.encode())  # noqa: S324 - a stand-in commit id
            for name in sorted(entries):
                digest.update(f"{name}\0{entries[name].sha256}\n".encode())
            self.commits[repo] = digest.hexdigest()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer((self.host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    # --- faults and the log ------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def _take_fault(self, method: str, filename: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, filename):
                    fault.used += 1
                    return fault
        return None

    def _log(self, **entry: Any) -> dict[str, Any]:
        with self._lock:
            entry.setdefault("path", getattr(threading.current_thread(), "hub_path", None))
            entry.setdefault("auth", getattr(threading.current_thread(), "hub_auth", None))
            self.requests.append(entry)
        return entry

    def gets(self, filename: str | None = None) -> list[dict[str, Any]]:
        """The GET requests for file data (optionally for one file)."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "GET" and r.get("file")
                    and (filename is None or r["file"] == filename)]

    def bytes_sent(self, filename: str | None = None) -> int:
        return sum(r.get("sent", 0) for r in self.gets(filename))

    def sha256(self, repo: str, filename: str) -> str:
        return self.repos[repo][filename].sha256


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    # --- routing -----------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        threading.current_thread().hub_path = self.path  # type: ignore[attr-defined]
        threading.current_thread().hub_auth = self.headers.get("Authorization")  # type: ignore[attr-defined]
        parts = [p for p in path.split("/") if p]
        try:
            if len(parts) >= 3 and parts[0] == "api" and parts[1] in ("models",):
                self._api(method, parts[2:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            else:
                self._error(method, 404, "EntryNotFound", "not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _repo(self, method: str, repo: str, revision: str) -> tuple[dict[str, _Entry], str] | None:
        files = self.hub.repos.get(repo)
        if files is None:
            self._error(method, 404, "RepoNotFound", f"repository {repo} not found")
            return None
        commit = self.hub.commits[repo]
        if revision not in (self.hub.revision, commit, "main"):
            self._error(method, 404, "RevisionNotFound", f"revision {revision} not found")
            return None
        return files, commit

    def _api(self, method: str, rest: list[str]) -> None:
        repo = "/".join(rest[:2])
        revision = "main"
        tree_path = None
        if len(rest) >= 4 and rest[2] == "revision":
            revision = "/".join(rest[3:])
        elif len(rest) >= 4 and rest[2] == "tree":
            revision = rest[3]
            tree_path = "/".join(rest[4:])
        found = self._repo(method, repo, revision)
        if found is None:
            return
        files, commit = found
        if tree_path is not None:
            body: Any = [{"type": "file", "path": name, "size": e.size, "oid": e.git_oid or e.sha256[:40],
                          **({"lfs": {"oid": e.sha256, "size": e.size, "pointerSize": 132}} if self.hub.lfs else {})}
                         for name, e in sorted(files.items()) if name.startswith(tree_path)]
        else:
            body = {"id": repo, "modelId": repo, "sha": commit, "private": False, "gated": False,
                    "siblings": [{"rfilename": name} for name in sorted(files)]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if method == "GET":
            self.wfile.write(data)

    def _error(self, method: str, status: int, code: str, message: str, commit: str | None = None,
               retry_after: float | None = None, filename: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        if retry_after is not None:
            self.send_header("Retry-After", str(int(retry_after) if float(retry_after).is_integer() else retry_after))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(data)
        self.hub._log(method=method, file=filename, range=self.headers.get("Range"), status=status, sent=0)

    def _resolve(self, method: str, repo: str, revision: str, filename: str) -> None:
        found = self._repo(method, repo, revision)
        if found is None:
            return
        files, commit = found
        entry = files.get(filename)
        if entry is None:
            self._error(method, 404, "EntryNotFound", f"{filename} not found in {repo}", commit=commit)
            return
        fault = self.hub._take_fault(method, filename)
        if fault is not None and fault.status is not None:
            self._error(method, fault.status, "Fault", f"injected {fault.status}", commit=commit,
                        retry_after=fault.retry_after, filename=filename)
            return
        if self.hub.redirect_to:
            self._redirect(method, repo, commit, filename, entry)
            return
        start, end = 0, entry.size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and method == "GET" and not (fault is not None and fault.ignore_range):
            try:
                first, _, last = rng.strip().removeprefix("bytes=").partition("-")
                start = int(first)
                end = min(int(last), entry.size - 1) if last else entry.size - 1
            except ValueError:
                start = -1
            if start < 0 or start >= entry.size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{entry.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.hub._log(method=method, file=filename, range=rng, status=416, sent=0)
                return
            status = 206
        length = end - start + 1
        claimed = max(0, length + (fault.length_delta if fault else 0))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", commit)
        if self.hub.lfs:
            self.send_header("ETag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
        else:
            self.send_header("ETag", f'"{entry.git_oid}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.send_header("Content-Length", str(claimed))
        self.end_headers()
        if method == "HEAD":
            self.hub._log(method=method, file=filename, range=None, status=status, sent=0)
            return
        record = self.hub._log(method=method, file=filename, range=rng, status=status, sent=0)
        self._send_body(entry, start, min(length, claimed), fault, record)
        if fault is not None and (fault.drop_after is not None or fault.length_delta):
            self._hang_up()

    def _redirect(self, method: str, repo: str, commit: str, filename: str, entry: _Entry) -> None:
        """302 to the CDN, with the file's metadata on the redirect itself (as the hub does for LFS)."""
        self.send_response(302)
        self.send_header("Location", f"{self.hub.redirect_to}/{repo}/resolve/{commit}/{filename}")
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{entry.sha256}"')
        self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
        self.send_header("X-Linked-Size", str(entry.size))
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.hub._log(method=method, file=filename, range=self.headers.get("Range"), status=302, sent=0)

    def _send_body(self, entry: _Entry, start: int, length: int, fault: Fault | None, record: dict[str, Any]) -> int:
        if fault is not None and fault.stall_s:
            time.sleep(fault.stall_s)
        limit = length
        if fault is not None and fault.drop_after is not None:
            limit = min(limit, fault.drop_after)
        rate = self.hub.throttle
        chunk_size = CHUNK if not rate else max(16 * 1024, min(4 << 20, int(rate / 50)))
        sent = 0
        t0 = time.monotonic()
        with open(entry.path, "rb") as fh:
            fh.seek(start)
            while sent < limit:
                data = fh.read(min(chunk_size, limit - sent))
                if not data:
                    break
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
