"""The Ollama API's model endpoints: /api/version, /api/tags, /api/ps, /api/show, /api/pull (our
verified pull, NDJSON progress) and DELETE /api/delete, for Continue, Zed, Copilot's BYOK Ollama
provider and the official ``ollama`` client. Names are ``id:QUANT`` (``id`` and ``id:latest`` work)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError, NotDownloadedError
from fmgguf.server.dialects.routing import clean_name, fim_verdict_for, unknown_model
from fmgguf.server.state import ServerState, state_of

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard
    from fmgguf.runtime.prompt.prompts import FimFormat

router = APIRouter(prefix="/api", tags=["ollama"])
#: the Ollama API version we answer like (Copilot's BYOK provider wants >= 0.6.4)
OLLAMA_VERSION = "0.12.6"
NDJSON = "application/x-ndjson"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=300)
    name: str | None = Field(default=None, max_length=300)

    def ref(self) -> str:
        ref = (self.model or self.name or "").strip()
        if not ref:
            raise InvalidRequestError("the request names no model", fix='send {"model": "ID"} (GET /api/tags lists them)')
        return ref


class PullBody(_Body):
    stream: bool = True
    insecure: bool = False


def ndjson(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str) + "\n"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def param_size(card: "ModelCard | None") -> str:
    total = card.parameters.total if card is not None and card.parameters else None
    if not total:
        return ""
    return f"{total / 1e9:.1f}B" if total >= 1e9 else f"{total / 1e6:.0f}M"


def details(card: "ModelCard | None", quant: str | None) -> dict:
    arch = card.arch.name if card is not None and card.arch else "unknown"
    return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
            "parameter_size": param_size(card), "quantization_level": quant or ""}


def _records(state: ServerState) -> list[dict]:
    return [r for r in state.downloader.list_downloaded() or [] if isinstance(r, dict)]


def resolve_local(state: ServerState, name: str) -> tuple["ModelCard", str]:
    """(card, quant) of a downloaded model named ``name``; 404 with the closest ids otherwise."""
    from fmgguf.errors import UnknownModelError

    ref = clean_name(name)
    try:
        card, quant = state.catalog.resolve(ref)
    except UnknownModelError:
        raise unknown_model(state, ref) from None
    local = sorted(r["quant"] for r in _records(state) if r.get("id") == card.id)
    if ":" not in ref and local and quant not in local:
        quant = local[0]
    return card, quant


@router.get("/version")
def version() -> dict:
    """The Ollama API version this server speaks (and fmgguf's own)."""
    from fmgguf import __version__

    return {"version": OLLAMA_VERSION, "fmgguf": __version__}


@router.get("/tags")
def tags(request: Request) -> dict:
    """Every downloaded model, as ``id:QUANT``."""
    state = state_of(request)
    models = []
    for rec in sorted(_records(state), key=lambda r: (r.get("id"), r.get("quant"))):
        card = state.catalog.get(rec["id"]) if rec["id"] in state.catalog else None
        name = f"{rec['id']}:{rec['quant']}"
        digest = (rec.get("files") or [{}])[0].get("sha256") or ""
        models.append({"name": name, "model": name, "modified_at": rec.get("pulled_at") or now_iso(),
                       "size": rec.get("bytes", 0),
                       "digest": digest, "details": details(card, rec.get("quant"))})
    return {"models": models}


@router.get("/ps")
def ps(request: Request) -> dict:
    """The models resident in memory."""
    state = state_of(request)
    manager = state.manager_if_built
    out = []
    for lm in (manager.loaded() if manager is not None else []):
        card = state.catalog.get(lm.id) if lm.id in state.catalog else None
        name = f"{lm.id}:{lm.quant}" if lm.quant else lm.id
        left = lm.expires_in_s
        until = "0001-01-01T00:00:00Z" if left is None else \
            datetime.fromtimestamp(time.time() + left, timezone.utc).isoformat()
        size = int(lm.memory or 0)
        out.append({"name": name, "model": name, "size": size, "digest": "", "details": details(card, lm.quant),
                    "expires_at": until, "size_vram": size if lm.n_gpu_layers else 0,
                    "context_length": int(lm.n_ctx or 0)})
    return {"models": out}


@router.post("/show")
def show(request: Request, body: _Body) -> dict:
    """Template, parameters, model_info and capabilities of a model (Continue reads ``.Suffix`` in the
    template as "does FIM"; Copilot reads ``<arch>.context_length`` and ``capabilities``)."""
    from fmgguf.runtime.prompt.prompts import fim_format

    state = state_of(request)
    card, quant = resolve_local(state, body.ref())
    arch = card.arch.name if card.arch else "unknown"
    n_ctx = _serving_ctx(state, card)
    verdict = fim_verdict_for(state, card)  # the one FIM rule: `insert` exactly when FIM requests are served
    fmt = fim_format(verdict.card_fim(), card.id) if verdict.able else None
    template = _template(fmt)
    params = [f"num_ctx {n_ctx}"] + [f"stop {json.dumps(s)}" for s in (fmt.stop if fmt else ())]
    info: JsonObject = {"general.architecture": arch, "general.basename": card.id,
                            "general.parameter_count": card.parameters.total if card.parameters else 0,
                            f"{arch}.context_length": n_ctx, "fmgguf.trained_context_length": card.context_length}
    if card.arch:
        info.update({f"{arch}.block_count": card.arch.n_layer, f"{arch}.embedding_length": card.arch.n_embd,
                     f"{arch}.attention.head_count": card.arch.n_head,
                     f"{arch}.attention.head_count_kv": card.arch.n_head_kv})
    caps = capabilities(card, insert=verdict.able)
    return {"license": card.license, "modelfile": f"# fmgguf: {card.id}:{quant}\nFROM {card.id}:{quant}\n"
            f"TEMPLATE {json.dumps(template)}\n" + "".join(f"PARAMETER {p}\n" for p in params),
            "parameters": "\n".join(params), "template": template, "details": details(card, quant),
            "model_info": info, "capabilities": caps, "modified_at": now_iso()}


def capabilities(card: "ModelCard", *, insert: bool) -> list[str]:
    """What a catalog model does, in Ollama's words: ``insert`` (FIM, as the one FIM rule decided), ``tools``
    (its template carries them, or it chats and takes them through the generic JSON envelope; a model that
    cannot chat cannot)."""
    from fmgguf.runtime.tools.tools import tools_supported

    chat = card.chat_template if card.chat_template not in (None, "none") else None
    return ["completion"] + (["insert"] if insert else []) + (["tools"] if tools_supported(None, chat) else [])


def _serving_ctx(state: ServerState, card: "ModelCard") -> int:
    """The context a request really gets: the resident model's, else what a load would choose."""
    manager = state.manager_if_built
    for lm in (manager.loaded() if manager is not None else []):
        if lm.id == card.id and lm.n_ctx:
            return int(lm.n_ctx)
    trained = card.context_length or state.settings.default_ctx
    return int(min(state.settings.default_ctx, trained))


def _template(fmt: "FimFormat | None") -> str:
    if fmt is None:
        return "{{ .Prompt }}"
    if fmt.order == "SPM":
        fim = f"{fmt.suffix}{{{{ .Suffix }}}}{fmt.prefix}{{{{ .Prompt }}}}{fmt.middle or ''}"
    else:
        fim = f"{fmt.prefix}{{{{ .Prompt }}}}{fmt.suffix}{{{{ .Suffix }}}}{fmt.middle or ''}"
    return f"{{{{- if .Suffix }}}}{fim}{{{{- else }}}}{{{{ .Prompt }}}}{{{{- end }}}}"


@router.post("/pull")
async def pull(request: Request, body: PullBody) -> object:
    """Download a catalog model (sha256-verified) with Ollama's NDJSON progress lines."""
    state = state_of(request)
    from fmgguf.errors import UnknownModelError

    ref = clean_name(body.ref())
    try:
        card, quant = state.catalog.resolve(ref)
    except UnknownModelError:
        raise unknown_model(state, ref) from None
    job, _ = state.jobs.start(card.id, quant, None, total=card.variant(quant).size)

    async def lines() -> AsyncIterator[str]:
        yield ndjson({"status": "pulling manifest"})
        sent = -1
        while True:
            info = job.as_dict()
            if info["state"] in ("queued", "running") and info["downloaded"] != sent:
                sent = info["downloaded"]
                yield ndjson({"status": f"pulling {card.id}:{quant}", "digest": f"{card.id}:{quant}",
                              "total": info["total"] or 0, "completed": sent})
            if info["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.2)
        if info["state"] != "done":
            err = info.get("error") or {}
            yield ndjson({"error": " — ".join(x for x in (err.get("message"), err.get("fix")) if x)
                          or f"the download {info['state']}"})
            return
        size = info["total"] or info["downloaded"] or 0
        yield ndjson({"status": f"pulling {card.id}:{quant}", "digest": f"{card.id}:{quant}", "total": size,
                      "completed": size})
        yield ndjson({"status": "verifying sha256 digest"})
        yield ndjson({"status": "writing manifest"})
        yield ndjson({"status": "success"})

    if body.stream:
        return StreamingResponse(lines(), media_type=NDJSON)
    last = {}
    async for line in lines():
        last = json.loads(line)
    if "error" in last:
        from fmgguf.errors import DownloadError

        raise DownloadError(last["error"])
    return last


@router.delete("/delete")
async def delete(request: Request, body: _Body) -> Response:
    """Delete a downloaded model (unloading it first if it is loaded)."""
    state = state_of(request)
    card, quant = resolve_local(state, body.ref())
    if not any(r.get("id") == card.id and r.get("quant") == quant for r in _records(state)):
        raise NotDownloadedError(f"model {body.ref()!r} is not downloaded", fix="GET /api/tags lists the downloaded models")
    await unload_model(state, card.id, quant)
    await anyio.to_thread.run_sync(lambda: state.downloader.delete_model(card.id, quant))
    return Response(status_code=200)


async def unload_model(state: ServerState, model_id: str, quant: str | None) -> bool:
    """Unload one resident model (the others stay; it stops being the selection if it was selected)."""
    from fmgguf.server.streaming import run_exclusive

    manager = state.manager_if_built
    if manager is None or not any(lm.id == model_id and (quant is None or lm.quant == quant)
                                  for lm in manager.loaded()):
        return False
    ref = f"{model_id}:{quant}" if quant else model_id
    return await run_exclusive(state, lambda m: m.unload(ref), "unload")
