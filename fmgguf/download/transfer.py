"""The network side of downloads, and the only module of fmgguf that imports ``huggingface_hub``.

huggingface_hub resolves the file (``HEAD /{repo}/resolve/{revision}/{file}`` on ``HF_ENDPOINT``,
with the token and its own headers) and lends its HTTP session; the bytes are streamed here so
they can be hashed as they arrive and resumed from a partial file (huggingface_hub's own download
deletes partial files and hashes nothing). Errors come out as :class:`Transient` (worth retrying)
or fmgguf errors (not worth it).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from fmgguf.errors import DownloadError, HubUnreachableError, OfflineError

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

    from fmgguf.settings import Settings

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transient(Exception):
    """A failure worth retrying (timeout, reset, 5xx, 429); ``retry_after`` in seconds if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RemoteFile:
    """What the hub (or mirror) says about one file."""

    url: str
    commit: str
    etag: str
    size: int | None
    #: the LFS sha256 (X-Linked-Etag, or an ETag that is one); None for plain git files
    sha256: str | None
    #: the git blob id when the ETag is one (plain git files served by a mirror)
    git_oid: str | None
    #: send the token to ``url`` (False for a CDN on another host)
    send_auth: bool = True


_UNREACHABLE = (
    ("name or service not known", "its host name does not resolve"),
    ("temporary failure in name resolution", "its host name does not resolve"),
    ("nodename nor servname", "its host name does not resolve"),
    ("no address associated", "its host name does not resolve"),
    ("getaddrinfo failed", "its host name does not resolve"),
    ("connection refused", "the connection was refused"),
)


def unreachable(settings: "Settings", exc: BaseException) -> HubUnreachableError | None:
    """A DownloadError when ``exc`` means the endpoint cannot be reached at all (DNS failure, connection
    refused): retrying does not help, so the caller fails at once. None for anything worth a retry."""
    import socket

    why = None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen and why is None:
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            why = "its host name does not resolve"
        elif isinstance(e, ConnectionRefusedError):
            why = "the connection was refused"
        else:
            text = str(e).lower()
            why = next((w for key, w in _UNREACHABLE if key in text), None)
        e = e.__cause__ or e.__context__
    if why is None:
        return None
    return HubUnreachableError(
        f"cannot reach {settings.hf_endpoint} (HF_ENDPOINT): {why}",
        fix="check the network or set HF_ENDPOINT to a reachable mirror; without a network, "
            "carry a bundle over (`fmgguf export` on a connected machine, then `fmgguf import BUNDLE`)")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def file_url(settings: "Settings", repo: str, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo, filename, revision=revision or "main")
    # hf_hub_url uses the endpoint read at import; ours comes from fmgguf's settings.
    from huggingface_hub import constants

    if url.startswith(constants.ENDPOINT):
        url = settings.hf_endpoint.rstrip("/") + url[len(constants.ENDPOINT):]
    return url


def _headers(settings: "Settings") -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    from fmgguf import __version__

    return build_hf_headers(token=settings.hf_token or None, library_name="fmgguf", library_version=__version__)


OFFLINE_VARS = "HF_HUB_OFFLINE=1, FMGGUF_OFFLINE=1 or --offline"


def offline_error(what: str) -> OfflineError:
    """The one-line error for a hub request that offline mode forbids, naming the variables that set it."""
    return OfflineError(f"{what}: offline mode is on ({OFFLINE_VARS})",
                        fix="unset HF_HUB_OFFLINE and FMGGUF_OFFLINE (or drop --offline) to use the network; without one, "
                            "carry a bundle over (`fmgguf export` on a connected machine, then `fmgguf import BUNDLE`)")


def _follow_settings(settings: "Settings") -> None:
    """fmgguf's settings decide offline mode, not the HF_HUB_OFFLINE huggingface_hub read at import: a caller
    that cleared ``settings.offline`` on purpose (the demo's loopback mirror) must not be refused by it."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = bool(settings.offline)


def head_file(settings: "Settings", repo: str, filename: str, revision: str | None, timeout: float = 20.0) -> RemoteFile:
    """Resolve ``repo/filename@revision`` on ``settings.hf_endpoint`` (no retries here)."""
    where = f"{repo}/{filename}@{revision or 'main'} on {settings.hf_endpoint}"
    try:
        url = file_url(settings, repo, filename, revision)
    except ValueError as exc:  # HFValidationError: a repo id or revision huggingface_hub refuses
        raise DownloadError(f"cannot resolve {where}: {_first_line(exc)}", fix="check the catalog entry") from None
    meta = _metadata(settings, url, where, repo, filename, revision, timeout)
    if not meta.commit_hash or not meta.etag:
        raise DownloadError(f"{settings.hf_endpoint} answered for {filename} without X-Repo-Commit/ETag: not a hub endpoint",
                            fix="point HF_ENDPOINT at a hub or a hub mirror such as olah")
    etag = meta.etag.lower()
    from huggingface_hub.utils._http import _is_same_or_hub_host

    return RemoteFile(url=meta.location or url, commit=meta.commit_hash, etag=meta.etag, size=meta.size,
                      sha256=etag if _HEX64.match(etag) else None,
                      git_oid=etag if _HEX40.match(etag) else None,
                      send_auth=_is_same_or_hub_host(url, meta.location or url))


def _metadata(settings: "Settings", url: str, where: str, repo: str, filename: str, revision: str | None,
              timeout: float) -> "HfFileMetadata":
    """huggingface_hub's HEAD, every one of its exceptions turned into its own one-line fmgguf error."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import (
        BadRequestError,
        DisabledRepoError,
        EntryNotFoundError,
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _follow_settings(settings)
    try:
        return get_hf_file_metadata(url, token=settings.hf_token or None, timeout=timeout,
                                    headers={"user-agent": "fmgguf"}, endpoint=settings.hf_endpoint)
    except OfflineModeIsEnabled:
        raise offline_error(f"cannot resolve {where}") from None
    except DisabledRepoError:
        raise DownloadError(f"{repo} has been disabled on {settings.hf_endpoint}",
                            fix="pick another repository for this model (`fmgguf info ID` lists the catalog's)") from None
    except GatedRepoError:
        raise DownloadError(f"{repo} is gated: access was refused for {where}",
                            fix="accept its licence on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"repository {repo} not found (or private) on {settings.hf_endpoint}",
                            fix="check the catalog's repo, HF_ENDPOINT and HF_TOKEN") from None
    except RevisionNotFoundError as exc:
        said = f" ({exc.server_message})" if exc.server_message and "not found:" in exc.server_message else ""
        raise DownloadError(f"revision {revision} not found for {repo} on {settings.hf_endpoint}{said}",
                            fix="check the catalog entry's revision pin, or serve the pinned file from the mirror") from None
    except EntryNotFoundError:
        raise DownloadError(f"file {filename} not found in {repo}@{revision or 'main'} on {settings.hf_endpoint}",
                            fix="check the catalog entry's file names (`fmgguf info ID`)") from None
    except BadRequestError as exc:
        raise DownloadError(f"{settings.hf_endpoint} refused the request for {where} as malformed: {_first_line(exc)}",
                            fix="check the catalog entry's repo, revision and file name") from None
    except FileMetadataError as exc:
        raise DownloadError(f"{settings.hf_endpoint} gave no usable metadata for {where}: {_first_line(exc)}",
                            fix="point HF_ENDPOINT at a hub or a hub mirror such as olah") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in RETRY_STATUSES:
            raise Transient(f"HTTP {status} for {where}", _retry_after(exc.response.headers)) from None
        if status in (401, 403):
            raise DownloadError(f"HTTP {status}: not allowed to read {where}", fix="set HF_TOKEN to a token with access") from None
        raise DownloadError(f"HTTP {status} for {where}", fix="check HF_ENDPOINT and the catalog entry") from None
    except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
        if isinstance(exc, httpx2.ConnectError) and (hard := unreachable(settings, exc)) is not None:
            raise hard from None
        raise Transient(f"{type(exc).__name__} talking to {settings.hf_endpoint}: {exc}") from None
    except httpx2.HTTPError as exc:
        raise DownloadError(f"cannot reach {settings.hf_endpoint}: {exc}", fix="check HF_ENDPOINT and your proxy") from None
    except ValueError as exc:  # bad repo id / revision shape (HFValidationError)
        raise DownloadError(f"cannot resolve {where}: {_first_line(exc)}", fix="check the catalog entry") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@contextlib.contextmanager
def open_stream(settings: "Settings", remote: RemoteFile, offset: int, read_timeout: float,
                chunk_size: int | None = None) -> Iterator[tuple[int, int | None, Iterator[bytes]]]:
    """GET the file from ``offset``: yields (start offset the server honoured, total size or None, chunks)."""
    import httpx2
    from huggingface_hub import get_session
    from huggingface_hub.errors import OfflineModeIsEnabled

    _follow_settings(settings)
    headers = _headers(settings)
    if not remote.send_auth:
        headers.pop("authorization", None)
    headers["Accept-Encoding"] = "identity"
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = httpx2.Timeout(connect=min(read_timeout, 20.0), read=read_timeout, write=read_timeout, pool=read_timeout)
    try:
        with get_session().stream("GET", remote.url, headers=headers, timeout=timeout, follow_redirects=True) as resp:
            status = resp.status_code
            if status in RETRY_STATUSES:
                raise Transient(f"HTTP {status} for {remote.url}", _retry_after(resp.headers))
            if status == 416:
                yield offset, offset, iter(())
                return
            if status not in (200, 206):
                raise DownloadError(f"HTTP {status} downloading {remote.url}", fix="check HF_ENDPOINT, HF_TOKEN and the catalog entry")
            start = 0
            total = None
            if status == 206:
                crange = resp.headers.get("Content-Range", "")
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", crange)
                if not m:
                    raise Transient(f"bad Content-Range {crange!r} from {remote.url}")
                start = int(m.group(1))
                total = int(m.group(3)) if m.group(3) != "*" else None
            elif resp.headers.get("Content-Length"):
                total = int(resp.headers["Content-Length"])
            yield start, total, _chunks(resp, chunk_size)
    except OfflineModeIsEnabled:
        raise offline_error(f"cannot download {remote.url}") from None
    except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
        if isinstance(exc, httpx2.ConnectError) and (hard := unreachable(settings, exc)) is not None:
            raise hard from None
        raise Transient(f"{type(exc).__name__} while downloading: {exc or 'connection dropped'}") from None
    except httpx2.HTTPError as exc:
        raise DownloadError(f"download of {remote.url} failed: {exc}", fix="check HF_ENDPOINT and your proxy") from None


def _chunks(resp: object, chunk_size: int | None) -> Iterator[bytes]:
    # chunk_size None: every byte received is handed over (a dropped connection loses nothing)
    yield from resp.iter_raw(chunk_size)  # type: ignore[attr-defined]
