"""One run's records: the folder they stream to (``records.jsonl``, ``summary.json``) and the run in
progress that appends to it and counts progress."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from fmgguf._util import atomic_write_text
from fmgguf.bench.executors import ExecResult
from fmgguf.bench.summary import BenchSummary
from fmgguf.bench.tasks import Task
from fmgguf.errors import FmggufError

#: progress(done, total, current task id)
Progress = Callable[[int, int, str], None]


class RunStore:
    """One run's folder: ``records.jsonl`` (appended line by line), ``summary.json`` (written atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records_path = root / "records.jsonl"
        self._lock = threading.Lock()
        self._tail_checked = False

    def load(self) -> list[dict]:
        out = []
        if self.records_path.exists():
            for line in self.records_path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut short by an interrupted run
                    continue
        return out

    def append(self, record: dict) -> None:
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.records_path, "a", encoding="utf-8") as fh:
                if not self._tail_checked:  # a line cut short by an interrupted run: start a fresh one
                    self._tail_checked = True
                    if fh.tell() > 0:
                        with open(self.records_path, "rb") as rb:
                            rb.seek(-1, os.SEEK_END)
                            if rb.read(1) != b"\n":
                                fh.write("\n")
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()

    def reset(self) -> None:
        self.records_path.unlink(missing_ok=True)

    def write_summary(self, summary: BenchSummary) -> BenchSummary:
        """Write ``summary.json`` (atomically); returns ``summary``."""
        atomic_write_text(self.root / "summary.json",
                          json.dumps(summary.as_dict(), indent=2, ensure_ascii=False, default=str))
        return summary


class Run:
    """One model's benchmark in progress: its record store and its progress count (thread-safe)."""

    def __init__(self, store: RunStore, total: int, done: int, progress: Progress | None) -> None:
        self.store, self.total, self._count, self._progress = store, total, done, progress
        self._lock = threading.Lock()

    def record(self, rec: dict) -> None:
        """Store one task × sample record and count it."""
        self.store.append(rec)
        with self._lock:
            self._count += 1
            n = self._count
        if self._progress:
            self._progress(n, self.total, rec["task_id"])

    def executed(self, fut: Future, task: Task, sample: int, gen: dict | None, answer: str, quality: dict) -> None:
        """The done-callback of a test execution."""
        try:
            rec = task_record(task, sample, fut.result(), gen, quality)
        except FmggufError as exc:
            rec = {**skipped_record(task, sample, exc.one_line()), "outcome": "error", "gen": gen}
        rec["answer"] = answer[:20000]
        self.record(rec)


def task_record(task: Task, sample: int, res: ExecResult, gen: dict | None, quality: dict | None) -> dict:
    return {"task_id": task.id, "category": task.category, "language": task.language, "sample": sample,
            "outcome": res.outcome, "detail": res.detail[:500], "exec_s": round(res.duration_s, 4),
            "compile_warnings": res.compile_warnings, "compile_s": res.compile_s,
            "max_rss_bytes": res.max_rss_bytes, "gen": gen, "quality": quality or {}}


def skipped_record(task: Task, sample: int, why: str) -> dict:
    return {"task_id": task.id, "category": task.category, "language": task.language, "sample": sample,
            "outcome": "skipped", "detail": why, "gen": None, "quality": {}}
