"""Which model answers a request (by the ``model`` field and the request's role), and the one function
that calls the ModelManager for every dialect: make the model ready, then send it the request.

Names: ``id``, ``id:QUANT`` and Ollama's ``id:latest`` all name a catalog model; a file loaded with
``serve --model FILE`` answers to its name. A FIM request to a model whose card says no FIM is refused
(422) naming a downloaded model that can; an unknown id gets the closest ids (404). What is loaded and
which model is selected lives in the manager only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import FIMNotSupportedError, ModelNotLoadedError, UnknownModelError
from fmgguf.server.json_views import downloaded_pairs

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard
    from fmgguf.runtime.engine.generation import GenerationStream
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.runtime.prompt.fim_rule import FimVerdict
    from fmgguf.runtime.runner.loading import LoadedModel
    from fmgguf.server.dialects.core import GenRequest
    from fmgguf.server.state import ServerState

#: characters per token assumed when a FIM prompt is cut to the context window (code is ~3.5)
_CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class Target:
    """The model a request goes to: a catalog card and quant, or (card None) the file loaded by path."""

    model_id: str
    quant: str | None
    card: "ModelCard | None"

    @property
    def ref(self) -> str:
        return f"{self.model_id}:{self.quant}" if self.quant else self.model_id


def clean_name(name: str | None) -> str:
    """``model`` as sent, without Ollama's ``:latest`` tag; '' for none/'default'."""
    text = (name or "").strip()
    if text.lower().endswith(":latest"):
        text = text[: -len(":latest")]
    return "" if text.lower() == "default" else text


def loaded_names(manager: "ModelManager | None") -> list[tuple[str, str | None]]:
    """(id, quant) of every resident model, the selected one first, then the most recently used."""
    if manager is None:
        return []
    out: list[tuple[str, str | None]] = []
    cur = manager.current_model()
    if cur is not None:
        out.append((cur.id, cur.quant))
    for lm in reversed(manager.loaded()):
        if (lm.id, lm.quant) not in out:
            out.append((lm.id, lm.quant))
    return out


def _file_names(cur: "LoadedModel") -> set[str]:
    names = {cur.id, Path(cur.path).name, cur.path}
    if cur.quant:
        names.add(f"{cur.id}:{cur.quant}")
    return names


def resolve(state: "ServerState", requested: str | None, kind: str) -> Target:
    """The model for a request of ``kind`` naming ``requested`` (None: the loaded one for its role)."""
    manager = state.manager_if_built
    name = clean_name(requested) or _default_for(state, manager, kind)
    cur = manager.current_model() if manager is not None else None
    if cur is not None and name in _file_names(cur) and cur.id not in state.catalog:
        return Target(cur.id, None, None)  # a file loaded by path, no catalog entry
    spec = manager.selection() if manager is not None else None
    if spec is not None and spec.card is None and name in (spec.key, spec.model_id, spec.path.name):
        return Target(spec.model_id, None, None)  # the same file, unloaded while idle
    try:
        card, quant = state.catalog.resolve(name)
    except UnknownModelError:
        raise unknown_model(state, name) from None
    if ":" not in name:  # a bare id: the loaded quant, else the catalog default if on disk, else one on disk
        quant = _quant_for(state, manager, card, quant)
    if kind == "fim" and not fim_verdict_for(state, card).able:
        raise fim_refusal(state, card)
    return Target(card.id, quant, card)


def fim_verdict_for(state: "ServerState", card: "ModelCard") -> "FimVerdict":
    """The one FIM rule (fmgguf.runtime.prompt.fim_rule) for a catalog card; an imported card without a ``fim``
    block is judged by its installed file's vocabulary."""
    from fmgguf.runtime.prompt.fim_rule import card_verdict

    return card_verdict(card, state.settings)


def fim_able(state: "ServerState", model_id: str) -> bool:
    return model_id in state.catalog and fim_verdict_for(state, state.catalog.get(model_id)).able


def _default_for(state: "ServerState", manager: "ModelManager | None", kind: str) -> str:
    resident = loaded_names(manager)
    catalog = state.catalog
    if kind == "fim":  # the resident model that does FIM, else a downloaded one (editors rarely name one)
        for mid, quant in resident:
            if fim_able(state, mid):
                return f"{mid}:{quant}" if quant else mid
        for mid, quant in sorted(downloaded_pairs(state.downloader)):
            if fim_able(state, mid):
                return f"{mid}:{quant}"
    elif kind == "chat":
        for mid, quant in resident:
            if mid in catalog and catalog.get(mid).chat_template not in (None, "none"):
                return f"{mid}:{quant}" if quant else mid
    if resident:
        mid, quant = resident[0]
        return f"{mid}:{quant}" if quant and mid in catalog else mid
    spec = manager.selection() if manager is not None else None
    if spec is not None:
        return spec.key
    if state.settings.default_model:
        return str(state.settings.default_model)
    raise ModelNotLoadedError("no model is loaded and the request names none",
                              fix="name a downloaded model in `model` (GET /api/tags or /v1/models lists them), "
                                  "or start `fmgguf serve --model ID`")


def _quant_for(state: "ServerState", manager: "ModelManager | None", card: "ModelCard", default: str) -> str:
    for mid, quant in loaded_names(manager):
        if mid == card.id and quant:
            return str(quant)
    local = sorted(q for m, q in downloaded_pairs(state.downloader) if m == card.id)
    if local and default not in local:
        return next((q for q in card.quants if q in local), local[0])
    return default


def unknown_model(state: "ServerState", name: str) -> UnknownModelError:
    local = sorted({m for m, _ in downloaded_pairs(state.downloader)})
    pool = local + [c.id for c in state.catalog.models() if c.id not in local]
    base = name.partition(":")[0].lower()
    near = [m for m in pool if base and (base in m or m in base)][:3]
    near = near or difflib.get_close_matches(base, pool, n=3, cutoff=0.3)
    fix = (f"closest ids: {', '.join(near)}" if near else "GET /api/tags or /v1/models lists the downloaded ids")
    return UnknownModelError(f"unknown model id {name!r}", fix=fix, model_id=name, closest=", ".join(near))


def fim_refusal(state: "ServerState", card: "ModelCard") -> FIMNotSupportedError:
    why = fim_verdict_for(state, card).reason  # the same reason `fmgguf fim` gives
    local = sorted({m for m, _ in downloaded_pairs(state.downloader) if fim_able(state, m)})
    if local:
        fix = f"send \"model\": \"{local[0]}\" (downloaded, trained for FIM)" + \
              (f"; also downloaded: {', '.join(local[1:4])}" if len(local) > 1 else "")
        return FIMNotSupportedError(why, fix=fix, model_id=card.id, fim_model=local[0])
    able = [c.id for c in state.catalog.models() if c.fim is not None and c.fim.supported][:3]
    fix = f"download a FIM model first: `fmgguf pull {able[0]}`" if able else "add a FIM-capable model to the catalog"
    return FIMNotSupportedError(why, fix=fix, model_id=card.id)


# --- the one call into the manager ------------------------------------------------------------------
def call_manager(state: "ServerState", manager: "ModelManager", req: "GenRequest") -> tuple["GenerationStream", str, bool]:
    """Make ``req``'s model ready, then start its generation on it: (GenerationStream, model id, whether
    the prompt was cut to fit the context window). FIM requests go ahead of the others queued for
    the same model. Runs in a worker thread."""
    from fmgguf.runtime.prompt.fim_prompt import fim_prompt_cut

    target = resolve(state, req.model, req.kind)
    ready = ensure_model_ready(manager, target)
    kw = req.sampling.kwargs()
    if req.warmup:
        kw["max_tokens"] = 1
    keep = _keep_alive(req.keep_alive)
    common = {"stream": True, "model": ready.key, **({"keep_alive": keep} if keep is not None else {})}
    if req.kind == "chat":
        tools = req.tool_request()  # never dropped: a model that cannot take them refuses (400) in chat()
        return manager.chat([dict(m) for m in req.messages], tools=tools, **kw, **common), target.model_id, False
    if req.kind == "fim":  # one FIM path: the manager lays the prompt out and ends the middle (fim_stop)
        kw.update(n_indent=req.n_indent, time_limit_s=req.time_limit_s)
        if target.card is None:  # a bare file: the manager's own FIM tokens, no extras
            return manager.fill_in_middle(req.prompt, req.suffix, **kw, **common), target.model_id, False
        budget = max((ready.n_ctx - int(kw.get("max_tokens") or 256) - 16) * _CHARS_PER_TOKEN, 512)
        cut = fim_prompt_cut(fim_verdict_for(state, target.card).card_fim(), target.card.id, req.prompt, req.suffix,
                             req.extra, filename=req.filename, max_chars=budget)
        return manager.fill_in_middle(req.prompt, req.suffix, extra=req.extra, filename=req.filename,
                                      max_prompt_chars=budget, **kw, **common), target.model_id, cut
    return manager.generate_text(req.prompt, **kw, **common), target.model_id, False


def count_tokens(state: "ServerState", manager: "ModelManager", req: "GenRequest") -> int:
    """The prompt length of chat request ``req`` in its model's tokens (no generation)."""
    ready = ensure_model_ready(manager, resolve(state, req.model, "chat"))
    return int(manager.count_chat_tokens([dict(m) for m in req.messages], model=ready.key,
                                         tools=req.tool_request()))


def ensure_model_ready(manager: "ModelManager", target: Target) -> "LoadedModel":
    """``target`` resident (loaded beside the others if needed) and selected; its current view."""
    if target.card is None:
        ready = manager.ensure_selected()
        if ready is None:
            raise ModelNotLoadedError("no model is loaded", fix="select one: POST /api/models/select {\"model_id\": ...}")
        return ready
    return manager.select(target.ref)


def _keep_alive(value: float | None) -> float | None:
    """Ollama's keep_alive as the manager's: None or 0 the default, inf forever (0 there)."""
    if value is None or value == 0:
        return None
    return 0.0 if value == float("inf") else value
