"""Background download jobs: started by a request, owned by the server, independent of any client.

A job runs ``downloader.download_model`` in its own thread; its progress is kept on the job and read
by the polling endpoint and the Server-Sent Events stream. A client that goes away changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmgguf.errors import CancelledError, FmggufError

if TYPE_CHECKING:
    from fmgguf.download import ModelDownloader

log = logging.getLogger("fmgguf.server")
ACTIVE = ("queued", "running")


@dataclass
class DownloadJob:
    id: str
    model_id: str
    quant: str
    revision: str | None = None
    state: str = "queued"  # queued | running | done | failed | cancelled
    downloaded: int = 0
    total: int | None = None
    file: str | None = None
    path: str | None = None
    error: dict | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    version: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _rate: list = field(default_factory=list, repr=False)  # (monotonic time, bytes) samples
    _files: dict = field(default_factory=dict, repr=False)  # file name -> (done, total)

    @property
    def percent(self) -> float | None:
        if self.state == "done":
            return 100.0
        if not self.total:
            return None
        return round(min(100.0, 100.0 * self.downloaded / self.total), 1)

    @property
    def speed(self) -> float | None:
        """Bytes per second over the last few seconds."""
        if len(self._rate) < 2:
            return None
        (t0, b0), (t1, b1) = self._rate[0], self._rate[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def as_dict(self) -> dict:
        speed = self.speed
        eta = None
        if speed and self.total and self.state == "running":
            eta = round(max(0.0, (self.total - self.downloaded) / speed), 1)
        return {
            "job_id": self.id, "model_id": self.model_id, "quant": self.quant, "state": self.state,
            "downloaded": self.downloaded, "total": self.total, "percent": self.percent,
            "speed": round(speed) if speed else None, "eta_s": eta, "file": self.file, "path": self.path,
            "error": self.error, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def _touch(self) -> None:
        self.version += 1


class DownloadJobs:
    """All download jobs of one server (finished ones are kept for a while so late pollers see the end)."""

    def __init__(self, downloader: Callable[[], ModelDownloader], keep: int = 200) -> None:
        self._get_downloader = downloader
        self._jobs: dict[str, DownloadJob] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def start(self, model_id: str, quant: str, revision: str | None = None, total: int | None = None) -> tuple[DownloadJob, bool]:
        """A new job, or the one already fetching the same model and quant: (job, created)."""
        with self._lock:
            for job in self._jobs.values():
                if job.model_id == model_id and job.quant == quant and job.state in ACTIVE:
                    return job, False
            job = DownloadJob(id=uuid.uuid4().hex[:16], model_id=model_id, quant=quant, revision=revision, total=total)
            self._jobs[job.id] = job
            self._trim()
        thread = threading.Thread(target=self._run, args=(job,), name=f"fmgguf-download-{job.id}", daemon=True)
        thread.start()
        return job, True

    def get(self, job_id: str) -> DownloadJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[DownloadJob]:
        return list(self._jobs.values())

    def active_for(self, model_id: str) -> list[DownloadJob]:
        return [j for j in self._jobs.values() if j.model_id == model_id and j.state in ACTIVE]

    def cancel(self, job_id: str) -> DownloadJob | None:
        job = self._jobs.get(job_id)
        if job is not None and job.state in ACTIVE:
            job._cancel.set()
        return job

    def _trim(self) -> None:
        done = [j for j in self._jobs.values() if j.state not in ACTIVE]
        for job in sorted(done, key=lambda j: j.created_at)[: max(0, len(self._jobs) - self._keep)]:
            self._jobs.pop(job.id, None)

    # --- the worker ----------------------------------------------------------------------------
    def _run(self, job: DownloadJob) -> None:
        job.state, job.started_at = "running", time.time()
        job._touch()
        try:
            downloader = self._get_downloader()
            path = downloader.download_model(job.model_id, job.quant, revision=job.revision or None,
                                             progress=lambda name, done, total: self._progress(job, name, done, total))
            job.path = str(path)
            if job.total:
                job.downloaded = job.total
            job.state = "done"
        except CancelledError as exc:
            job.state, job.error = "cancelled", _error_dict(exc)
        except FmggufError as exc:  # the downloader's own one-line error, as it gave it
            job.state, job.error = ("cancelled" if job._cancel.is_set() else "failed"), _error_dict(exc)
        except Exception as exc:  # a bug or an OS error: report it on the job, never kill the server
            job.state = "failed"
            log.exception("download job %s (%s %s) crashed", job.id, job.model_id, job.quant)
            message = " ".join(str(exc).split()) or type(exc).__name__
            fix = "see the server log, then retry the download"
            job.error = {"error": type(exc).__name__, "message": message, "fix": fix, "one_line": f"{message} — {fix}"}
        finally:
            job.finished_at = time.time()
            job._touch()

    def _progress(self, job: DownloadJob, name: str, done: int, total: int | None) -> None:
        """The downloader's callback (its ``Progress``), ``progress(file name, bytes done, total or None)`` per
        file. Raising here is how a job is cancelled."""
        if job._cancel.is_set():
            raise CancelledError(f"download of {job.model_id} {job.quant} was cancelled", fix="start it again to resume")
        key = str(name) if name else ""
        old_done, old_total = job._files.get(key, (0, None))
        job._files[key] = (old_done if done is None else max(0, int(done)), total if total else old_total)
        job.downloaded = sum(d for d, _ in job._files.values())
        seen_total = sum(t or 0 for _, t in job._files.values())
        if job.total is None or seen_total > job.total:
            job.total = seen_total or None
        if name:
            job.file = key
        now = time.monotonic()
        job._rate.append((now, job.downloaded))
        while len(job._rate) > 2 and now - job._rate[0][0] > 5.0:
            job._rate.pop(0)
        job._touch()


def _error_dict(exc: FmggufError) -> dict:
    """The error's fields plus ``one_line``: exactly what the CLI prints after ``error:``."""
    return {**exc.to_dict(), "one_line": " ".join(exc.one_line().split())}
