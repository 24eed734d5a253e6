"""Which model answers a request (by the ``model`` field and the request's role), and the one function
that calls the ModelManager for every dialect.

Names: ``id``, ``id:QUANT`` and Ollama's ``id:latest`` all name a catalog model; a file loaded with
``serve --model FILE`` answers to its name. A FIM request to a model whose card says no FIM is refused
(422) naming a downloaded model that can; an unknown id gets the closest ids (404).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.errors import FIMNotSupportedError, ModelNotLoadedError, UnknownModelError
from fmgguf.server.json_views import downloaded_pairs

if TYPE_CHECKING:
    from fmgguf.runtime.fim_rule import FimVerdict

#: characters per token assumed when a FIM prompt is cut to the context window (code is ~3.5)
_CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class Target:
    """The model a request goes to: a catalog card and quant, or (card None) the file loaded by path."""

    model_id: str
    quant: str | None
    card: Any

    @property
    def ref(self) -> str:
        return f"{self.model_id}:{self.quant}" if self.quant else self.model_id


def clean_name(name: str | None) -> str:
    """``model`` as sent, without Ollama's ``:latest`` tag; '' for none/'default'."""
    text = (name or "").strip()
    if text.lower().endswith(":latest"):
        text = text[: -len(":latest")]
    return "" if text.lower() == "default" else text


def _multi_resident(manager: Any) -> bool:
    """True once the manager keeps several models (the runner contract: ensure_loaded / model=)."""
    return callable(getattr(manager, "ensure_loaded", None))


def loaded_names(state: Any, manager: Any) -> list[tuple[str, str | None]]:
    """(id, quant) of every resident model, the selected one first."""
    out: list[tuple[str, str | None]] = []
    cur = state.current()
    if cur:
        out.append((str(cur.get("id")), cur.get("quant")))
    lister = getattr(manager, "loaded", None)
    if callable(lister):
        for lm in reversed(lister() or []):  # most recently used first
            mid = getattr(lm, "id", None) or getattr(lm, "model_id", None)
            quant = getattr(lm, "quant", None)
            if mid and (str(mid), quant) not in out:
                out.append((str(mid), quant))
    return out


def _file_names(cur: dict) -> set[str]:
    names = {str(cur.get("id"))}
    if cur.get("quant"):
        names.add(f"{cur.get('id')}:{cur.get('quant')}")
    if cur.get("path"):
        names.update({Path(str(cur["path"])).name, str(cur["path"])})
    return names


def resolve(state: Any, manager: Any, requested: str | None, kind: str) -> Target:
    """The model for a request of ``kind`` naming ``requested`` (None: the loaded one for its role)."""
    name = clean_name(requested)
    if not name:
        name = _default_for(state, manager, kind)
    cur = state.current()
    if cur and name in _file_names(cur) and str(cur.get("id")) not in state.catalog:
        return Target(str(cur.get("id")), None, None)  # a file loaded by path, no catalog entry
    try:
        card, quant = state.catalog.resolve(name)
    except UnknownModelError:
        raise unknown_model(state, name) from None
    if ":" not in name:  # a bare id: the loaded quant, else the catalog default if on disk, else one on disk
        quant = _quant_for(state, manager, card, quant)
    target = Target(card.id, quant, card)
    if kind == "fim" and not fim_verdict_for(state, card).able:
        raise fim_refusal(state, card)
    return target


def fim_verdict_for(state: Any, card: Any) -> "FimVerdict":
    """The one FIM rule (fmgguf.runtime.fim_rule) for a catalog card; an imported card without a ``fim``
    block is judged by its installed file's vocabulary."""
    from fmgguf.runtime.fim_rule import card_verdict

    return card_verdict(card, state.settings)


def fim_able(state: Any, model_id: str) -> bool:
    return model_id in state.catalog and fim_verdict_for(state, state.catalog.get(model_id)).able


def _default_for(state: Any, manager: Any, kind: str) -> str:
    resident = loaded_names(state, manager) if manager is not None else []
    if kind == "fim":  # the resident model that does FIM, else a downloaded one (editors rarely name one)
        for mid, quant in resident:
            if fim_able(state, mid):
                return f"{mid}:{quant}" if quant else mid
        for mid, quant in sorted(downloaded_pairs(state.downloader)):
            if fim_able(state, mid):
                return f"{mid}:{quant}"
    elif kind == "chat":
        for mid, quant in resident:
            if mid in state.catalog and state.catalog.get(mid).chat_template not in (None, "none"):
                return f"{mid}:{quant}" if quant else mid
    if resident:
        mid, quant = resident[0]
        return f"{mid}:{quant}" if quant and mid in state.catalog else mid
    if state.selected:
        return state.selected[0] if state.selected[1] is None else f"{state.selected[0]}:{state.selected[1]}"
    if state.settings.default_model:
        return str(state.settings.default_model)
    raise ModelNotLoadedError("no model is loaded and the request names none",
                              fix="name a downloaded model in `model` (GET /api/tags or /v1/models lists them), "
                                  "or start `fmgguf serve --model ID`")


def _quant_for(state: Any, manager: Any, card: Any, default: str) -> str:
    for mid, quant in (loaded_names(state, manager) if manager is not None else []):
        if mid == card.id and quant:
            return str(quant)
    local = sorted(q for m, q in downloaded_pairs(state.downloader) if m == card.id)
    if local and default not in local:
        return next((q for q in card.quants if q in local), local[0])
    return default


def unknown_model(state: Any, name: str) -> UnknownModelError:
    local = sorted({m for m, _ in downloaded_pairs(state.downloader)})
    pool = local + [c.id for c in state.catalog.models() if c.id not in local]
    base = name.partition(":")[0].lower()
    near = [m for m in pool if base and (base in m or m in base)][:3]
    near = near or difflib.get_close_matches(base, pool, n=3, cutoff=0.3)
    fix = (f"closest ids: {', '.join(near)}" if near else "GET /api/tags or /v1/models lists the downloaded ids")
    return UnknownModelError(f"unknown model id {name!r}", fix=fix, model_id=name, closest=", ".join(near))


def fim_refusal(state: Any, card: Any) -> FIMNotSupportedError:
    why = fim_verdict_for(state, card).reason  # the same reason `fmgguf fim` gives
    local = sorted({m for m, _ in downloaded_pairs(state.downloader) if fim_able(state, m)})
    if local:
        fix = f"send \"model\": \"{local[0]}\" (downloaded, trained for FIM)" + \
              (f"; also downloaded: {', '.join(local[1:4])}" if len(local) > 1 else "")
        return FIMNotSupportedError(why, fix=fix, model_id=card.id, fim_model=local[0])
    able = [c.id for c in state.catalog.models() if c.fim_supported][:3]
    fix = f"download a FIM model first: `fmgguf pull {able[0]}`" if able else "add a FIM-capable model to the catalog"
    return FIMNotSupportedError(why, fix=fix, model_id=card.id)


# --- the one call into the manager ------------------------------------------------------------------
def call_manager(state: Any, manager: Any, req: Any) -> tuple[Any, str, bool]:
    """Make ``req``'s model resident and start its generation: (GenerationStream, model id, whether the
    prompt was cut to fit the context window).

    Runs in a worker thread while the caller holds the server's queue turn. Today's manager holds one
    model, so another model means a switch; a manager with ``ensure_loaded`` (several resident models)
    gets ``model=`` and ``keep_alive=`` instead."""
    from fmgguf.runtime.prompts import fim_format, render_fim

    target = resolve(state, manager, req.model, req.kind)
    kw = req.sampling.kwargs()
    kw["stream"] = True
    if req.warmup:
        kw["max_tokens"] = 1
    n_ctx = _make_resident(state, manager, target, req.keep_alive, kw)
    if req.kind == "chat":
        tools = req.tool_request()
        if tools is not None:  # never dropped: a model that cannot take them refuses (400) in chat()
            kw["tools"] = tools
        return manager.chat([dict(m) for m in req.messages], **kw), target.model_id, False
    if req.kind == "fim":  # one FIM path: the manager lays the prompt out and ends the middle (fim_stop)
        kw.update(n_indent=req.n_indent, time_limit_s=req.time_limit_s)
        if target.card is None:  # a bare file: the manager's own FIM tokens, no extras
            return manager.fill_in_middle(req.prompt, req.suffix, **kw), target.model_id, False
        fmt = fim_format(fim_verdict_for(state, target.card).card_fim(), target.card.id)
        budget = max((n_ctx - int(kw.get("max_tokens") or 256) - 16) * _CHARS_PER_TOKEN, 512)
        text = render_fim(fmt, req.prompt, req.suffix, req.extra, filename=req.filename, max_chars=budget)
        cut = len(text) < len(render_fim(fmt, req.prompt, req.suffix, req.extra, filename=req.filename))
        return manager.fill_in_middle(req.prompt, req.suffix, extra=req.extra, filename=req.filename,
                                      max_prompt_chars=budget, **kw), target.model_id, cut
    return manager.generate_text(req.prompt, **kw), target.model_id, False


def count_tokens(state: Any, manager: Any, req: Any) -> int:
    """The prompt length of chat request ``req`` in its model's tokens (no generation)."""
    target = resolve(state, manager, req.model, "chat")
    kw: dict[str, Any] = {}
    _make_resident(state, manager, target, req.keep_alive, kw)
    return int(manager.count_chat_tokens([dict(m) for m in req.messages], model=kw.get("model"),
                                         tools=req.tool_request()))


def _make_resident(state: Any, manager: Any, target: Target, keep_alive: float | None, kw: dict) -> int:
    """Load ``target`` if needed (beside the other resident models where the manager keeps several);
    returns its context length. ``keep_alive`` is Ollama's: None default, inf forever, 0 the default too."""
    if _multi_resident(manager) and target.card is not None:
        keep = None if keep_alive is None or keep_alive == 0 else (0.0 if keep_alive == float("inf") else keep_alive)
        select = getattr(manager, "select", None)  # the named model becomes the selected one; the others stay
        if (target.model_id, target.quant) not in loaded_names(state, manager):
            state.loading = (target.model_id, target.quant or "", time.time())
        try:
            loaded = select(target.ref) if callable(select) else manager.ensure_loaded(target.ref, keep_alive=keep)
        finally:
            state.loading = None
        state.selected = (target.model_id, target.quant, None)
        kw["model"] = target.ref
        if keep is not None:
            kw["keep_alive"] = keep
        return int(getattr(loaded, "n_ctx", 0) or state.settings.default_ctx)
    cur = state.reload_selected(manager)
    same = cur and (target.card is None or (cur.get("id") == target.model_id and
                                            (target.quant is None or cur.get("quant") == target.quant)))
    if not same:
        state.loading = (target.model_id, target.quant or "", time.time())
        try:
            manager.switch_model(target.model_id, target.quant)
        finally:
            state.loading = None
        state.selected = (target.model_id, target.quant, None)
        cur = state.current()
    return int((cur or {}).get("n_ctx") or state.settings.default_ctx)
