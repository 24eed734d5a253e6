"""Crash records per model, kept under the fmgguf home (``runners/health.json``) so every process
(the server, the CLI's ``ls``, another server) sees which models are broken and why.

A model's runner that crashes :data:`BROKEN_AFTER` times in a row is *broken*: it is not started
again until its file changes (a new download or import gives the file a new size or mtime) or the
record is cleared. A generation that finishes resets the count. Restarts wait :func:`backoff`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fmgguf._util import JsonObject

#: crashes in a row that mark a model broken
BROKEN_AFTER = 3


@dataclass(frozen=True)
class CrashRecord:
    key: str
    path: str
    #: (size, mtime_ns) of the file when it crashed: a changed file starts afresh
    file_id: tuple[int, int]
    crashes: int
    broken: bool
    reason: str
    signal: str | None
    at: float

    def as_dict(self) -> JsonObject:
        out = asdict(self)
        out["file_id"] = list(self.file_id)
        out["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return out


def file_id(path: str | Path) -> tuple[int, int]:
    try:
        st = Path(path).stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def backoff(crashes: int) -> float:
    """Seconds to wait before starting a runner again after ``crashes`` crashes in a row."""
    return 0.0 if crashes <= 0 else min(0.25 * 2 ** (crashes - 1), 8.0)


class HealthBook:
    """The crash records of one fmgguf home (read fresh on every look: other processes write too)."""

    def __init__(self, home: Path) -> None:
        self.file = Path(home) / "runners" / "health.json"
        self._lock = threading.Lock()

    def _read(self) -> dict[str, CrashRecord]:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out = {}
        for key, rec in (raw if isinstance(raw, dict) else {}).items():
            try:
                out[key] = CrashRecord(key=key, path=str(rec["path"]), file_id=tuple(rec["file_id"]),  # type: ignore[arg-type]
                                       crashes=int(rec["crashes"]), broken=bool(rec["broken"]),
                                       reason=str(rec["reason"]), signal=rec.get("signal"), at=float(rec["at"]))
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def _write(self, records: dict[str, CrashRecord]) -> None:
        from fmgguf._util import atomic_write_text

        data = {k: {**asdict(r), "file_id": list(r.file_id)} for k, r in records.items()}
        atomic_write_text(self.file, json.dumps(data, indent=1, sort_keys=True))

    def get(self, key: str, path: str | Path | None = None) -> CrashRecord | None:
        """The record for ``key``; None when there is none or it was for another version of the file."""
        rec = self._read().get(key)
        if rec is None or (path is not None and rec.file_id != file_id(path)):
            return None
        return rec

    def all(self) -> list[CrashRecord]:
        return [r for r in self._read().values() if r.file_id == file_id(r.path)]

    def broken(self) -> dict[str, CrashRecord]:
        return {r.key: r for r in self.all() if r.broken}

    def crashed(self, key: str, path: str | Path, reason: str, sig: str | None) -> CrashRecord:
        """Count one more crash in a row for ``key``; the third marks it broken."""
        with self._lock:
            records = self._read()
            fid = file_id(path)
            old = records.get(key)
            n = (old.crashes if old is not None and old.file_id == fid else 0) + 1
            rec = CrashRecord(key=key, path=str(path), file_id=fid, crashes=n, broken=n >= BROKEN_AFTER,
                              reason=reason, signal=sig, at=time.time())
            records[key] = rec
            self._write(records)
            return rec

    def clear(self, key: str) -> bool:
        """Forget ``key``'s crashes (a generation finished, or the user asked); True if there were any."""
        with self._lock:
            records = self._read()
            if key not in records:
                return False
            del records[key]
            self._write(records)
            return True
