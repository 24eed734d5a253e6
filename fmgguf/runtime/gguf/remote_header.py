"""Read a GGUF header from the hub (or a mirror) with HTTP Range requests: metadata and tensor
table only, never the weights, so the fit plan is exact before a byte of weights moves.

Plain ``urllib`` against ``{settings.hf_endpoint}/{repo}/resolve/{revision}/{file}`` (the download
package owns huggingface_hub; this needs only Range GETs). Reads go in 1 MiB blocks through the
same bounded parser as local files; a header larger than ``MAX_HEADER`` is refused.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from fmgguf.errors import DownloadError, GGUFError, OfflineError
from fmgguf.runtime.gguf.gguf_file import GGUFInfo, parse_gguf

if TYPE_CHECKING:
    from fmgguf.settings import Settings

MAX_HEADER = 96 * 1024 * 1024
_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HTTPRangeSource:
    """A ByteSource over HTTP Range GETs; ``size`` comes from the first response's Content-Range."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 20.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout
        self.where = url
        self.fetched = 0
        self.requests = 0
        first = self._get(0, 1 << 20)
        self._first = first
        self.size = self._total

    def _get(self, offset: int, n: int) -> bytes:
        if self.fetched + n > MAX_HEADER:
            raise GGUFError(f"{self.url}: the GGUF header is larger than {MAX_HEADER >> 20} MiB",
                            fix="download the file (fmgguf pull) and plan from it")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise DownloadError(f"{self.url} is not an http(s) URL", fix="set HF_ENDPOINT to an http(s) URL")
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={offset}-{offset + n - 1}",  # noqa: S310
                                                        "User-Agent": "fmgguf"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured endpoint
                status = resp.status
                content_range = resp.headers.get("Content-Range", "")
                body = resp.read(n + 1)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"reading the GGUF header from {self.url} failed: HTTP {exc.code}",
                                fix="check the model id and revision, or plan from catalog numbers: `fmgguf --offline fit ID` / `fmgguf info ID`") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, (urllib.error.URLError, ssl.SSLError)) else exc
            raise DownloadError(f"cannot reach {urllib.parse.urlsplit(self.url).netloc}: {reason}",
                                fix="check the network or HF_ENDPOINT, or plan from catalog numbers: `fmgguf --offline fit ID` / `fmgguf info ID`") from None
        self.requests += 1
        m = _RANGE_RE.match(content_range)
        if status == 206 and m:
            if int(m.group(1)) != offset:
                raise DownloadError(f"{self.url} answered a different range ({content_range})",
                                    fix="the mirror mishandles Range requests; download the file instead")
            if m.group(3) != "*":
                self._total = int(m.group(3))
        elif status == 200:
            raise DownloadError(f"{self.url} ignores Range requests (it would send the whole file)",
                                fix="download the file (fmgguf pull) and plan from it")
        self.fetched += len(body)
        if not hasattr(self, "_total"):
            raise DownloadError(f"{self.url} sent no file size (Content-Range {content_range!r})",
                                fix="download the file (fmgguf pull) and plan from it")
        return body[:n]

    def read_at(self, offset: int, n: int) -> bytes:
        if offset == 0 and n <= len(self._first):
            return self._first[:n]
        n = min(n, self.size - offset)
        return self._get(offset, n) if n > 0 else b""


def resolve_url(settings: "Settings", repo: str, filename: str, revision: str | None = None) -> str:
    rev = urllib.parse.quote(revision or "main", safe="")
    return f"{settings.hf_endpoint}/{repo}/resolve/{rev}/{urllib.parse.quote(filename)}"


def read_remote_gguf(settings: "Settings", repo: str, filename: str, revision: str | None = None) -> GGUFInfo:
    """The validated header of a GGUF on the hub/mirror, read with Range requests."""
    if settings.offline:
        raise OfflineError(f"reading the header of {repo}/{filename} needs the network",
                           fix="drop --offline / HF_HUB_OFFLINE, or plan from catalog numbers")
    src = HTTPRangeSource(resolve_url(settings, repo, filename, revision), settings.hf_token)
    info = parse_gguf(src, check_data=True)  # the total size is known, so data bounds are checked too
    info.path = f"{repo}/{filename}"
    return info
