"""Benchmarks over HTTP: start a run in the background, poll its status, read its report.

A run holds the server's generation turn for its whole length (it switches models), then puts the
selected model back; other generation requests wait in the queue (or get 429) meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict

from fastapi import APIRouter, HTTPException, Request

from fmgguf._util import jsonable
from fmgguf.bench.summary import BenchSummary
from fmgguf.errors import FmggufError
from fmgguf.server.schemas import BenchmarkRequest
from fmgguf.server.state import ServerState, state_of

if TYPE_CHECKING:
    from fmgguf.bench.run_store import Progress
    from fmgguf.runtime.runner.residency import LoadSpec

log = logging.getLogger("fmgguf.server")
router = APIRouter(prefix="/api/models/benchmark", tags=["benchmark"])


class Benchmarker(Protocol):
    """What a run needs of the server's benchmarker (:class:`fmgguf.bench.ModelBenchmarker` is one)."""

    def benchmark_model(self, model_id: str, quant: str = ..., *, tasks: list[str] | None = ..., samples: int = ...,
                        suite: str = ..., languages: list[str] | None = ..., max_tokens: int = ...,
                        progress: Progress | None = ...) -> BenchSummary: ...
    def generate_comparison_report(self, summaries: list[BenchSummary]) -> dict: ...


class _BenchOptionsBase(TypedDict):
    suite: str
    samples: int
    max_tokens: int


class BenchOptions(_BenchOptionsBase, total=False):
    """What a run asks of :meth:`Benchmarker.benchmark_model` for each model (echoed in the run's JSON)."""

    tasks: list[str]
    languages: list[str]


@dataclass
class BenchRun:
    id: str
    models: list[tuple[str, str]]
    options: BenchOptions
    state: str = "running"  # running | done | failed
    progress: dict = field(default_factory=dict)
    #: one summary per (model id, quant): one run may hold the same model in two quants
    summaries: dict[tuple[str, str], BenchSummary] = field(default_factory=dict)
    report: dict | None = None
    error: dict | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    #: the model selected when the run started, selected again when it ends
    restore: "LoadSpec | None" = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """The run's JSON; ``results`` is keyed ``"id:QUANT"`` (the model reference the API takes)."""
        return {"run_id": self.id, "models": [{"model_id": m, "quant": q} for m, q in self.models],
                "options": self.options, "state": self.state, "progress": self.progress, "error": self.error,
                "results": {f"{m}:{q}": compact(v) for (m, q), v in self.summaries.items()},
                "started_at": self.started_at, "finished_at": self.finished_at,
                "report_url": f"/api/models/benchmark/{self.id}/report"}


def compact(summary: BenchSummary) -> dict:
    """The headline numbers of a benchmark summary."""
    ov = summary.overall
    return {"status": summary.status, "reason": summary.reason, "quant": summary.quant, "suite": summary.suite,
            "samples": summary.samples, "pass_at_1": ov.pass_at_1 if ov else None,
            "ci95": list(ov.ci95) if ov else None, "tasks": ov.tasks if ov else None,
            "solved": ov.solved if ov else None, "decode_tokens_per_s": summary.speed.decode_tokens_per_s.median,
            "finished": summary.finished}


def _run(state: ServerState, run: BenchRun) -> None:
    outcome: tuple[str, dict | None] = ("failed", None)
    try:
        bench: Benchmarker = state.benchmarker
        for i, (model_id, quant) in enumerate(run.models):
            def progress(done: int, total: int, task: str, i: int = i, model_id: str = model_id) -> None:
                run.progress = {"model": model_id, "model_index": i, "models": len(run.models), "done": done,
                                "total": total, "task": task}

            progress(0, 0, "")
            run.summaries[(model_id, quant)] = bench.benchmark_model(model_id, quant, progress=progress,
                                                                     **run.options)
        run.report = bench.generate_comparison_report(list(run.summaries.values()))
        outcome = ("done", None)
    except FmggufError as exc:
        outcome = ("failed", exc.to_dict())
    except Exception as exc:  # report on the run; the server keeps serving
        outcome = ("failed", {"error": type(exc).__name__, "message": " ".join(str(exc).split()),
                              "fix": "see the server log"})
    finally:
        try:
            _restore(state, run.restore)
        finally:  # "done" only once the user's model is back
            run.error = outcome[1]
            run.finished_at = time.time()
            run.state = outcome[0]
            state.gate.release()


def _restore(state: ServerState, spec: "LoadSpec | None") -> None:
    """Put the user's selected model back after a benchmark switched models."""
    manager = state.manager_if_built
    if spec is None or manager is None or manager.selection() == spec:
        return
    try:
        if spec.card is None:
            manager.load_file(spec.path, model_id=spec.model_id)
        else:
            manager.switch_model(spec.model_id, spec.quant)
    except FmggufError:
        log.warning("could not load %s again after the benchmark", spec.key)


@router.post("", status_code=202)
async def start(request: Request, body: BenchmarkRequest) -> dict:
    """Benchmark downloaded models on a task suite (executed tests, sandboxed); returns a run id."""
    state = state_of(request)
    models = []
    for spec in body.model_ids:
        card, quant = state.catalog.resolve(spec if body.quant is None else f"{spec.partition(':')[0]}:{body.quant}")
        models.append((card.id, quant))
    options: BenchOptions = {"suite": body.suite, "samples": body.samples, "max_tokens": body.max_tokens}
    if body.tasks:
        options["tasks"] = body.tasks
    if body.languages:
        options["languages"] = body.languages
    manager = state.manager_if_built
    run = BenchRun(id=uuid.uuid4().hex[:16], models=models, options=options,
                   restore=manager.selection() if manager is not None else None)
    await state.gate.acquire("benchmark")
    state.bench_runs[run.id] = run
    try:
        threading.Thread(target=_run, args=(state, run), name=f"fmgguf-bench-{run.id}", daemon=True).start()
    except BaseException:
        state.gate.release()
        raise
    return run.as_dict()


@router.get("")
def runs(request: Request) -> dict:
    return {"runs": [r.as_dict() for r in state_of(request).bench_runs.values()]}


def _get(state: ServerState, run_id: str) -> BenchRun:
    run = state.bench_runs.get(run_id)
    if run is None:
        raise HTTPException(404, f"no benchmark run {run_id!r}; use the run_id returned by POST /api/models/benchmark")
    return run


@router.get("/{run_id}")
def run_status(request: Request, run_id: str) -> dict:
    return _get(state_of(request), run_id).as_dict()


@router.get("/{run_id}/report")
def run_report(request: Request, run_id: str) -> dict:
    """The comparison report (markdown, rows, a self-contained HTML page) and the full summaries."""
    run = _get(state_of(request), run_id)
    if run.state == "running":
        raise HTTPException(409, "the benchmark is still running; poll GET /api/models/benchmark/{run_id} until done")
    return {**run.as_dict(), "summaries": {f"{m}:{q}": s.as_dict() for (m, q), s in run.summaries.items()},
            "report": jsonable(run.report)}


def stored_results(state: ServerState, model_id: str) -> dict | None:
    """The latest finished benchmark of ``model_id``: this server's runs first, then the run folders."""
    for run in sorted(state.bench_runs.values(), key=lambda r: r.started_at, reverse=True):
        done = [s for (m, _), s in run.summaries.items() if m == model_id and s.status == "done"]
        if done:
            return compact(max(done, key=lambda s: s.finished or ""))
    best: BenchSummary | None = None
    root = state.settings.bench_dir
    if not root.is_dir():
        return None
    for path in root.glob("*/summary.json"):
        try:
            summary = BenchSummary.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if summary.model == model_id and summary.status == "done" and summary.kind == "model":
            if best is None or (summary.finished or "") > (best.finished or ""):
                best = summary
    return compact(best) if best else None
