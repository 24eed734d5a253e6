"""llama.cpp's log, routed to Python logging (logger ``fmgguf.llama_cpp``) instead of stderr.

:class:`LogRouter` is the process-wide callback the engine hands to ``llama_log_set``;
:class:`LoadListener` collects one load's lines: the buffer sizes llama.cpp really allocated,
out-of-memory diagnosis, and the progress dots it prints while reading weights.
This module does not import llama_cpp.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
#: llama.cpp's own messages land here (level mapped from ggml's). Quiet by default: the NullHandler
#: keeps Python's last-resort handler from printing them when the application configured no logging.
llama_log = logging.getLogger("fmgguf.llama_cpp")
llama_log.addHandler(logging.NullHandler())
#: the log file under the fmgguf home, and how big it may grow (rotated, 2 old files kept)
LOG_FILE = Path("logs") / "llama.cpp.log"
_LOG_MAX_BYTES = 2 * 1024 * 1024

#: ggml log level -> logging level (GGML_LOG_LEVEL_CONT=5 continues the previous line)
_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_OOM_HINTS = ("failed to allocate", "unable to allocate", "out of memory", "cudamalloc failed",
              "std::bad_alloc", "cannot allocate memory", "failed to create llama_context")
#: llama.cpp's buffer sizes read from its load log: bytes per kind ("model", "kv", "compute", "output",
#: "rs") and, under "by_device", per device and kind
BufferSizes = dict[str, int | dict[str, dict[str, int]]]
_BUFFER_RE = re.compile(r"\s(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


class LogRouter:
    """The process-wide llama.cpp log callback. Captures lines for whoever listens (a load)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partial = ""
        self._level = logging.INFO
        self._listeners: list["LoadListener"] = []

    def __call__(self, level: int, text: bytes, _user_data: object) -> None:
        try:
            if level == 1 and not llama_log.isEnabledFor(logging.DEBUG):
                # llama.cpp's debug chatter (hundreds of lines per load): dropped before any work
                with self._lock:
                    self._level = logging.DEBUG
                return
            self._handle(level, text.decode("utf-8", errors="replace") if text else "")
        except Exception:  # noqa: BLE001, S110 - an exception must never cross into C
            pass

    def _handle(self, level: int, text: str) -> None:
        with self._lock:
            if level == 5:  # continuation of the previous message (load progress dots)
                if text == "." and self._listeners:
                    for listener in self._listeners:
                        listener.dot()
                    return
                if self._level == logging.DEBUG and not llama_log.isEnabledFor(logging.DEBUG):
                    return  # the rest of a dropped debug message
            else:
                self._level = _LEVELS.get(level, logging.DEBUG)
            self._partial += text
            if "\n" not in self._partial:
                return
            *lines, self._partial = self._partial.split("\n")
            listeners = list(self._listeners)
            lvl = self._level
        for line in lines:
            if not line.strip(".").strip():
                continue
            for listener in listeners:
                listener.line(line)
            if llama_log.isEnabledFor(lvl):
                llama_log.log(lvl, "%s", line)

    def add(self, listener: "LoadListener") -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: "LoadListener") -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


class LoadListener:
    """Collects the log lines of one load: OOM diagnosis, buffer sizes, progress dots."""

    def __init__(self, progress: Callable[[str, float], None] | None) -> None:
        self.lines: list[str] = []
        self.dots = 0
        self.progress = progress

    def dot(self) -> None:
        # llama.cpp prints one dot each time the loaded share of the weights passes a whole percent
        # (at most 100 dots, fewer for files with few tensors): a coarse, monotonic signal.
        self.dots += 1
        self.report("weights", min(0.1 + 0.008 * self.dots, 0.9))

    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            try:
                self.progress(stage, fraction)
            except Exception:  # noqa: BLE001 - a broken callback must not break the load
                log.debug("progress callback failed", exc_info=True)

    def line(self, text: str) -> None:
        # keep what diagnosis and the buffer sizes need, not llama.cpp's per-tensor chatter
        low = text.lower()
        if len(self.lines) < 500 and ("buffer size" in low or "error" in low or "fail" in low or "alloc" in low
                                      or "memory" in low or "unable" in low or "invalid" in low):
            self.lines.append(text)

    def buffers(self) -> BufferSizes:
        """``{"by_device": {device: {kind: bytes}}, "model": bytes, "kv": ..., "compute": ..., "output": ...}``."""
        totals: dict[str, int] = {}
        by_device: dict[str, dict[str, int]] = {}
        for text in self.lines:
            m = _BUFFER_RE.search(" " + text)
            if not m:
                continue
            device, kind, mib = m.group(1), m.group(2).lower(), float(m.group(3))
            size = int(round(mib * 1024 * 1024))
            totals[kind] = totals.get(kind, 0) + size
            dev = by_device.setdefault(device, {})
            dev[kind] = dev.get(kind, 0) + size
        return {"by_device": by_device, **totals}

    def oom(self) -> bool:
        return any(h in line.lower() for line in self.lines for h in _OOM_HINTS)


class _LogFile(logging.handlers.RotatingFileHandler):
    """The llama.cpp log file, created on its first line (a command that loads no model writes nothing);
    a write that fails (disk full, read-only home) is dropped, never printed."""

    def _open(self):  # noqa: ANN202 - logging's signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


class _NotLlama(logging.Filter):
    """Keeps llama.cpp's lines off a terminal handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(llama_log.name)


def configure(home: Path, verbose: int = 0) -> Path:
    """Send llama.cpp's log to ``home/logs/llama.cpp.log``, and to the terminal only with ``verbose``
    >= 1 (-v: info and up, -vv: llama.cpp's debug chatter too). Returns the file's path.

    For the CLI, the server and runner processes; the library itself only installs a NullHandler.
    The terminal is the root logger's stream handlers (``logging.basicConfig``): without -v they get a
    filter that drops llama.cpp's records; other handlers (a test's capture, an application's) still
    see them. Failures still carry their explaining lines: :class:`LoadListener` collects them.
    """
    path = Path(home) / LOG_FILE
    for handler in list(llama_log.handlers):
        if isinstance(handler, _LogFile):
            llama_log.removeHandler(handler)
            handler.close()
    handler = _LogFile(path, maxBytes=_LOG_MAX_BYTES, backupCount=2, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s"))
    llama_log.addHandler(handler)
    llama_log.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    for term in logging.getLogger().handlers:
        if type(term) is not logging.StreamHandler:
            continue
        quiet = [f for f in term.filters if isinstance(f, _NotLlama)]
        if verbose >= 1:
            for f in quiet:
                term.removeFilter(f)
        elif not quiet:
            term.addFilter(_NotLlama())
    return path
