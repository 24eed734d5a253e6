"""A read-only, hub-compatible HTTP mirror: machines without internet ``pull`` through ``HF_ENDPOINT``.

It answers what ``huggingface_hub`` and fmgguf's downloader ask of the hub: ``HEAD``/``GET``
``/{repo}/resolve/{revision}/{filename}`` (``X-Repo-Commit``, ``ETag`` = ``X-Linked-Etag`` = sha256,
``X-Linked-Size``, ``Range``), ``/api/models/{repo}[/revision/{rev}]`` and the tree listing. Every
other method is refused (405): nothing a client sends changes what is served. With an API key, every
request needs ``Authorization: Bearer KEY`` (clients set ``HF_TOKEN=KEY``); off loopback a key is
required (the same rule as ``fmgguf serve``).

``with MirrorServer(load_source(DIR)) as m: ...`` serves in a thread; :meth:`MirrorServer.serve_forever`
blocks. ``repos`` may also map a repo id to ``{file name: path}`` (hashed at start).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fmgguf._util import JsonObject
from fmgguf.mirror.sources import MirrorFile, MirrorRepo, stand_in_commit

CHUNK = 256 * 1024
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def as_repo(value: MirrorRepo | Mapping[str, Path | str]) -> MirrorRepo:
    """A :class:`MirrorRepo` from itself or from ``{file name in repo: local path}``."""
    if isinstance(value, MirrorRepo):
        return value
    from fmgguf.download.hashing import sha256_file

    files = {}
    for name, p in value.items():
        path = Path(p)
        files[name] = MirrorFile(path, path.stat().st_size, sha256_file(path))
    return MirrorRepo(files)


class MirrorServer:
    """The mirror over ``repos`` (repo id -> :class:`MirrorRepo` or ``{name: path}``) on ``host:port``."""

    def __init__(self, repos: Mapping[str, MirrorRepo | Mapping[str, Path | str]], *, host: str = "127.0.0.1",
                 port: int = 0, api_key: str | None = None) -> None:
        self.host, self.port, self.api_key = host, port, api_key or None
        self.repos: dict[str, MirrorRepo] = {}
        for repo_id, value in repos.items():
            repo = as_repo(value)
            repo.commit = repo.commit or stand_in_commit(repo_id, repo.files)
            repo.revisions.add(repo.commit)
            self.repos[repo_id] = repo
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    handler_class: type[BaseHTTPRequestHandler]  # set below: MirrorHandler (the test hub swaps in its own)

    # --- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> MirrorServer:
        handler = type("Handler", (self.handler_class,), {"mirror": self})
        server_class = ThreadingHTTPServer
        if ":" in self.host.strip("[]"):
            server_class = type("ThreadingHTTPServerV6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((self.host.strip("[]"), self.port), handler)
        self._httpd.daemon_threads = True
        return self

    def start(self) -> MirrorServer:
        """Serve in a background thread."""
        if self._httpd is None:
            self.bind()
        assert self._httpd is not None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fmgguf-mirror", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        if self._httpd is None:
            self.bind()
        assert self._httpd is not None
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    def sha256(self, repo: str, filename: str) -> str:
        return self.repos[repo].files[filename].sha256


class MirrorHandler(BaseHTTPRequestHandler):
    """One request to the mirror. Subclasses may override the ``_file_*`` steps (the test hub does)."""

    protocol_version = "HTTP/1.1"
    mirror: MirrorServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def _refuse_write(self) -> None:
        self.close_connection = True  # its body is never read: this connection cannot carry another request
        self._error(self.command, 405, "ReadOnly", "this mirror is read-only", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write  # noqa: N815

    # --- routing -----------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        try:
            if not self._authorized():
                self._error(method, 401, "Unauthorized", "this mirror needs an API key: set HF_TOKEN to it",
                            extra={"WWW-Authenticate": "Bearer"})
            elif len(parts) >= 3 and parts[0] == "api" and parts[1] == "models":
                self._api(method, parts[2:])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            else:
                self._error(method, 404, "EntryNotFound", "not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _authorized(self) -> bool:
        key = self.mirror.api_key
        if key is None:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else self.headers.get("X-Api-Key", "")
        return bool(token) and secrets.compare_digest(token.encode(), key.encode())

    def _repo(self, method: str, repo_id: str, revision: str) -> MirrorRepo | None:
        repo = self.mirror.repos.get(repo_id)
        if repo is None:
            self._error(method, 404, "RepoNotFound", f"repository {repo_id} not found")
            return None
        if revision not in repo.revisions and revision not in repo.pinned:
            self._error(method, 404, "RevisionNotFound",
                        f"revision {revision} not found: this mirror serves {repo_id} at {repo.commit[:12]} and "
                        "serves a catalog-pinned revision only for files whose sha256 matches the catalog pin; put the "
                        "pinned file in the mirrored folder (ORG/NAME/FILE), or serve a hub cache or `fmgguf export` "
                        "bundle that has that revision")
            return None
        return repo

    def _api(self, method: str, rest: list[str]) -> None:
        repo_id, revision, tree_path = "/".join(rest[:2]), "main", None
        if len(rest) >= 4 and rest[2] == "revision":
            revision = "/".join(rest[3:])
        elif len(rest) >= 4 and rest[2] == "tree":
            revision, tree_path = rest[3], "/".join(rest[4:])
        repo = self._repo(method, repo_id, revision)
        if repo is None:
            return
        if tree_path is not None:
            body: list[JsonObject] | JsonObject = [self._tree_entry(repo_id, name, f) for name, f in sorted(repo.files.items())
                         if name.startswith(tree_path)]
        else:
            body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "gated": False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if method == "GET":
            self.wfile.write(data)

    def _tree_entry(self, repo_id: str, name: str, f: MirrorFile) -> JsonObject:
        return {"type": "file", "path": name, "size": f.size, "oid": f.sha256[:40],
                "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 132}}

    def _error(self, method: str, status: int, code: str, message: str, commit: str | None = None,
               extra: Mapping[str, str] | None = None, filename: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    # --- files -------------------------------------------------------------------------------
    def _resolve(self, method: str, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(method, repo_id, revision)
        if repo is None:
            return
        entry = repo.files.get(filename)
        commit = repo.commit
        if revision not in repo.revisions:  # a catalog-pinned revision, honoured for the files matching the pin
            if filename not in repo.pinned[revision]:
                self._error(method, 404, "RevisionNotFound",
                            f"{filename} not found: this mirror serves {repo_id} at the catalog-pinned revision "
                            f"{revision} only for files whose sha256 matches the catalog pin, and its {filename} "
                            "does not; put the pinned file in the mirrored folder", commit=repo.commit)
                return
            commit = revision if _HEX40.match(revision) else repo.commit
        if entry is None:
            self._error(method, 404, "EntryNotFound", f"{filename} not found in {repo_id}", commit=commit)
            return
        self._file_response(method, repo_id, commit, filename, entry)

    def _file_response(self, method: str, repo_id: str, commit: str, filename: str, entry: MirrorFile) -> None:
        span = self._file_range(method, filename, entry)
        if span is None:
            return
        status, start, end = span
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", commit)
        for k, v in self._file_etags(repo_id, filename, entry).items():
            self.send_header(k, v)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.send_header("Content-Length", str(self._file_length(filename, end - start + 1)))
        self.end_headers()
        if method == "GET":
            self._file_body(filename, entry, start, end - start + 1)

    def _file_range(self, method: str, filename: str, entry: MirrorFile) -> tuple[int, int, int] | None:
        """(status, first byte, last byte) the request asks for; None once a 416 has been sent."""
        rng = self.headers.get("Range")
        if not rng or method != "GET":
            return 200, 0, entry.size - 1
        try:
            first, _, last = rng.strip().removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last), entry.size - 1) if last else entry.size - 1
        except ValueError:
            start, end = -1, -1
        if start < 0 or start >= entry.size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{entry.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._file_refused(method, filename, rng)
            return None
        return 206, start, end

    def _file_refused(self, method: str, filename: str, rng: str) -> None:
        """Called after a 416 (a hook: the test hub logs it)."""

    def _file_etags(self, repo_id: str, filename: str, entry: MirrorFile) -> dict[str, str]:
        """The headers that say which content this is: the hub's LFS headers (sha256)."""
        return {"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}

    def _file_length(self, filename: str, length: int) -> int:
        """The Content-Length to announce for ``length`` body bytes."""
        return length

    def _file_body(self, filename: str, entry: MirrorFile, start: int, length: int) -> int:
        """Send ``length`` bytes of ``entry`` from ``start``; the bytes sent."""
        sent = 0
        for data in read_chunks(entry, start, length, CHUNK):
            self.wfile.write(data)
            sent += len(data)
        return sent


def read_chunks(entry: MirrorFile, start: int, length: int, chunk: int) -> Iterator[bytes]:
    """Up to ``length`` bytes of ``entry`` from ``start``, ``chunk`` bytes at a time."""
    with entry.open() as fh:
        fh.seek(entry.offset + start)
        left = length
        while left > 0:
            data = fh.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data


MirrorServer.handler_class = MirrorHandler
