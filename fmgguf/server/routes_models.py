"""The model-management API (the original system's paths): catalog, downloads, selection, generation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from fmgguf._util import jsonable
from fmgguf.catalog import ModelCard, normalize_quant
from fmgguf.errors import FmggufError, InvalidRequestError
from fmgguf.server.dialects.routing import fim_verdict_for
from fmgguf.server.json_views import card_summary, downloaded_pairs
from fmgguf.server.schemas import CompareRequest, DownloadRequest, GenerateRequest, SelectRequest
from fmgguf.server.state import ServerState, state_of

if TYPE_CHECKING:
    from fmgguf.runtime.hw.devices import SystemMemory
    from fmgguf.runtime.runner.health import CrashRecord
    from fmgguf.server.jobs import DownloadJob
from fmgguf.server.dialects.core import GenRequest, Outcome, Sampling
from fmgguf.server.dialects.core import start as start_generation
from fmgguf.server.streaming import error_payload, run_exclusive, sse

log = logging.getLogger("fmgguf.server")
router = APIRouter(prefix="/api/models", tags=["models"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _resolve(state: ServerState, model_id: str, quant: str | None) -> tuple[ModelCard, str]:
    spec = model_id if quant is None else f"{model_id.partition(':')[0]}:{quant}"
    return state.catalog.resolve(spec)


def _safe_fit(state: ServerState, card: ModelCard, quant: str, n_ctx: int | None, local: bool,
              mem: "SystemMemory | None") -> dict | None:
    try:
        path = state.local_path(card.id, quant) if local else None
        return state.fit_for(card, quant, n_ctx, path=path, mem=mem)
    except FmggufError as exc:
        return {"label": "Unknown", "fits": None, "error": exc.one_line()}
    except ImportError:
        return None


def _model_status(state: ServerState, card: ModelCard, local: set[tuple[str, str]], current: dict | None,
                  broken: dict[str, CrashRecord] | None = None) -> tuple[str, dict | None]:
    jobs = state.jobs.active_for(card.id)
    if current and current.get("id") == card.id:
        return "loaded", None
    if state.loading and state.loading[0] == card.id:
        return "loading", None
    if jobs:
        return "downloading", jobs[0].as_dict()
    hurt = [rec for key, rec in (broken or {}).items() if key.partition(":")[0] == card.id]
    if hurt:
        return "broken", hurt[0].as_dict()
    if any(mid == card.id for mid, _ in local):
        return "ready", None
    return "not_downloaded", None


def _model_entry(state: ServerState, card: ModelCard, local: set[tuple[str, str]], current: dict | None,
                 n_ctx: int | None, with_fit: bool = True, mem: "SystemMemory | None" = None) -> dict:
    from fmgguf.catalog.sizing import estimate_card

    status, job = _model_status(state, card, local, current, state.broken())
    quants = []
    for quant, variant in card.variants.items():
        est = estimate_card(card, quant, n_ctx or state.settings.default_ctx)
        quants.append({
            "quant": quant, "size": variant.approx_size, "exact_size": variant.size is not None,
            "files": len(variant.files), "repo": variant.repo,
            "downloaded": (card.id, quant) in local,
            "estimate": est.as_dict(),
            "fit": _safe_fit(state, card, quant, n_ctx, (card.id, quant) in local, mem) if with_fit else None,
        })
    entry = card_summary(card, fim_verdict_for(state, card).able)
    entry.update({"status": status, "download": job if status == "downloading" else None,
                  "broken": job if status == "broken" else None, "quants": quants,
                  "loaded_quant": current.get("quant") if status == "loaded" and current else None})
    best = next((q["fit"] for q in quants if q["fit"] and q["fit"].get("fits")), None) or (quants[0]["fit"] if quants else None)
    entry["fit_label"] = best.get("label") if best else None
    return entry


@router.get("/available")
def available(request: Request, n_ctx: int | None = Query(None, ge=16, le=1 << 21),
              fit: bool = Query(True, description="compute a fit plan per variant")) -> dict:
    """Every catalog model with its local state and a fit label per quantization."""
    state = state_of(request)
    local = downloaded_pairs(state.downloader)
    current = state.current()
    mem = state.memory_snapshot() if fit else None
    models = [_model_entry(state, card, local, current, n_ctx, fit, mem) for card in state.catalog.models()]
    return {"models": models, "count": len(models), "families": state.catalog.families(),
            "n_ctx": n_ctx or state.settings.default_ctx}


def _queue(state: ServerState) -> dict:
    """The gate, with the requests waiting in the resident models' own queues counted in."""
    out = state.gate.snapshot()
    manager = state.manager_if_built
    if manager is not None:
        out["queue_depth"] += manager.queue_depth
    return out


@router.get("/status")
def status(request: Request) -> dict:
    """The loaded model (plan, memory), what is loading, the generation queue and running downloads."""
    state = state_of(request)
    current = state.current()
    loading = None
    if state.loading:
        loading = {"model_id": state.loading[0], "quant": state.loading[1], "for_s": round(time.time() - state.loading[2], 2)}
    rss = None
    with contextlib.suppress(Exception):
        import psutil

        rss = psutil.Process().memory_info().rss
    manager = state.manager_if_built
    return {
        "status": "loaded" if current else ("loading" if loading else "idle"),
        "current": jsonable(current), "loading": loading, "queue": _queue(state),
        "loaded": [m.as_dict() for m in manager.loaded()] if manager is not None else [],
        "broken": [rec.as_dict() for rec in state.broken().values()],
        "generating": state.gate.busy, "last_generation": state.last_generation,
        "downloads": [j.as_dict() for j in state.jobs.all() if j.state in ("queued", "running")],
        "process_memory": rss, "auth": state.api_key is not None,
    }


@router.get("/current")
def current(request: Request) -> dict:
    """The loaded model, or ``{"loaded": false}``."""
    state = state_of(request)
    cur = state.current()
    return {"loaded": cur is not None, "model": jsonable(cur)}


# --- downloads -------------------------------------------------------------------------------------
@router.post("/download/{model_id}", status_code=202)
def start_download(request: Request, model_id: str, body: DownloadRequest | None = Body(None)) -> dict:
    """Start (or join) a background download; returns its job id. Progress: poll or SSE."""
    state = state_of(request)
    body = body or DownloadRequest()
    card, quant = _resolve(state, model_id, body.quant)
    job, created = state.jobs.start(card.id, quant, body.revision, total=card.variant(quant).size)
    return {**job.as_dict(), "created": created, "poll_url": f"/api/models/downloads/{job.id}",
            "events_url": f"/api/models/downloads/{job.id}/events"}


@router.get("/downloads")
def list_downloads(request: Request) -> dict:
    return {"jobs": [j.as_dict() for j in state_of(request).jobs.all()]}


def _job(state: ServerState, job_id: str) -> DownloadJob:
    job = state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no download job {job_id!r}; use the job_id returned by POST /api/models/download/ID")
    return job


@router.get("/downloads/{job_id}")
def poll_download(request: Request, job_id: str) -> dict:
    return _job(state_of(request), job_id).as_dict()


@router.delete("/downloads/{job_id}")
def cancel_download(request: Request, job_id: str) -> dict:
    state = state_of(request)
    _job(state, job_id)
    return state.jobs.cancel(job_id).as_dict()


@router.get("/downloads/{job_id}/events")
async def download_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-Sent Events: one ``progress`` event per change, then ``done``/``failed``/``cancelled``."""
    state = state_of(request)
    job = _job(state, job_id)

    async def events() -> AsyncIterator[str]:
        seen = -1
        last_sent = 0.0
        while True:
            if job.version != seen:
                seen = job.version
                last_sent = time.monotonic()
                data = job.as_dict()
                if data["state"] in ("done", "failed", "cancelled"):
                    yield sse(data, event=data["state"])
                    return
                yield sse(data, event="progress")
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.delete("/delete/{model_id}")
async def delete(request: Request, model_id: str, quant: str | None = Query(None, max_length=32)) -> dict:
    """Delete a model's files (one quant, or all). A loaded model is unloaded first."""
    state = state_of(request)
    card = state.catalog.get(model_id)
    q = normalize_quant(quant) if quant else None
    if q:
        card.variant(q)
    if state.jobs.active_for(card.id):
        raise InvalidRequestError(f"{card.id} is downloading", fix="cancel the download job first")
    cur = state.current()
    if cur and cur.get("id") == card.id and (q is None or cur.get("quant") == q):
        await run_exclusive(state, lambda m: m.unload(), "unload")
    args = (card.id, q) if q else (card.id,)
    result = await anyio.to_thread.run_sync(lambda: state.downloader.delete_model(*args))
    return {"model_id": card.id, "quant": q, "deleted": jsonable(result)}


@router.post("/verify/{model_id}")
async def verify(request: Request, model_id: str, quant: str | None = Query(None, max_length=32)) -> dict:
    """Re-hash the local files against the pinned SHA256."""
    state = state_of(request)
    card, q = _resolve(state, model_id, quant)
    started = time.monotonic()
    result = await anyio.to_thread.run_sync(lambda: state.downloader.verify_model_integrity(card.id, q))
    ok = bool(result)  # a VerifyResult is true when every file matches
    return {"model_id": card.id, "quant": q, "ok": ok, "report": jsonable(result),
            "seconds": round(time.monotonic() - started, 3)}


# --- fit -------------------------------------------------------------------------------------------
@router.get("/fit/{model_id}")
def fit_plan(request: Request, model_id: str, quant: str | None = Query(None, max_length=32),
             n_ctx: int | None = Query(None, ge=16, le=1 << 21)) -> dict:
    """Where the model would run (Full GPU / Partial / CPU only / Won't fit), before or after download."""
    state = state_of(request)
    card, q = _resolve(state, model_id, quant)
    path = state.local_path(card.id, q)
    plan = state.fit_for(card, q, n_ctx, path=path, remote=path is None)
    return {"model_id": card.id, "quant": q, "source": "file" if path else plan.get("source"), "plan": plan}


# --- selection and generation ----------------------------------------------------------------------
@router.post("/select")
async def select(request: Request, body: SelectRequest) -> dict:
    """Load a downloaded model (unloading the current one); waits for the running generations."""
    state = state_of(request)
    card, quant = _resolve(state, body.model_id, body.quant)
    kwargs: dict[str, int | str] = {}
    if body.n_ctx is not None:
        kwargs["n_ctx"] = body.n_ctx
    result = await run_exclusive(state, lambda m: m.switch_model(card.id, quant, **kwargs), "load")
    return result.as_dict()


@router.post("/unload")
async def unload(request: Request) -> dict:
    state = state_of(request)
    if state.manager_if_built is None:
        return {"unloaded": False}
    await run_exclusive(state, lambda m: m.unload(), "unload")
    return {"unloaded": True}


def _rest_dict(outcome: Outcome) -> dict:
    """The seed REST shape of a finished generation."""
    return {"text": outcome.text, "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "ttft_s": outcome.ttft_s, "tokens_per_s": outcome.tokens_per_s, "total_s": outcome.total_s,
            "finish_reason": outcome.finish_reason, "model_id": outcome.model, "quant": outcome.quant}


@router.post("/generate")
async def generate(request: Request, body: GenerateRequest) -> object:
    """Generate from the selected model through the dialect core; ``suffix`` makes it fill-in-the-middle;
    ``stream`` gives SSE (``data: {"text": ...}`` events, then ``event: done`` with the counts)."""
    state = state_of(request)
    sel = state.selected  # the seed's meaning: the selected model, loaded again after an idle unload
    model = None if sel is None else (f"{sel[0]}:{sel[1]}" if sel[1] else sel[0])
    req = GenRequest(kind="prompt" if body.suffix is None else "fim", dialect="rest", model=model, prompt=body.prompt,
                     suffix=body.suffix or "", stream=body.stream,
                     sampling=Sampling(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                       seed=body.seed, stop=tuple(body.stop or ())))
    gen = await start_generation(state, req)
    if not body.stream:
        return _rest_dict(await gen.collect())

    async def events() -> AsyncIterator[str]:
        async with contextlib.aclosing(gen.events()) as items:
            async for kind, value in items:
                if kind == "piece":
                    yield sse({"text": value})
                elif kind == "done":
                    yield sse(_rest_dict(value), event="done")
                else:
                    yield sse(error_payload(value), event="error")

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


# --- compare ---------------------------------------------------------------------------------------
@router.post("/compare")
def compare(request: Request, body: CompareRequest) -> dict:
    """Specs side by side (size, memory estimate and fit per quant), with benchmark results when they exist."""
    state = state_of(request)
    local = downloaded_pairs(state.downloader)
    current = state.current()
    mem = state.memory_snapshot()
    rows = []
    for model_id in body.model_ids:
        card = state.catalog.get(model_id)
        entry = _model_entry(state, card, local, current, body.n_ctx, True, mem)
        if body.quant:
            q = normalize_quant(body.quant)
            entry["quants"] = [x for x in entry["quants"] if x["quant"] == q] or entry["quants"]
        entry["benchmarks"] = _bench_results(state, card.id)
        rows.append(entry)
    fields = ["parameters", "active_parameters", "context_length", "architecture", "layers", "license", "fim",
              "chat", "family", "status"]
    return {"models": rows, "fields": fields}


def _bench_results(state: ServerState, model_id: str) -> dict | None:
    from fmgguf.server.routes_bench import stored_results

    try:
        return stored_results(state, model_id)
    except (FmggufError, ImportError, OSError, ValueError):
        return None
