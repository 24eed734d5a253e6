"""How the manager loads a file: validate it once per identity, plan offload and context (the fit
plan), turn the caller's options into engine :class:`LoadOptions`, start the engine. Imports no
llama_cpp itself (the engine module is imported inside functions)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from fmgguf._util import JsonObject
from fmgguf.errors import FmggufError, GGUFError, InsufficientMemoryError, InvalidRequestError, WorkerError

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.engine.engine import LoadOptions
    from fmgguf.runtime.engine.engine_api import EngineAPI, EngineStarter, Progress
    from fmgguf.runtime.gguf.gguf_info import GGUFInfo
    from fmgguf.runtime.plan.fit import DraftSource, FitPlan
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

#: llama.cpp ``general.file_type`` -> quant name (for files loaded without a catalog entry)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


@dataclass(frozen=True)
class FileFacts:
    """What the load needs from a validated GGUF header (``info``: the parsed header, reused by the fit plan)."""

    arch: str | None
    n_ctx_train: int | None
    file_type: int | None
    fim_ids: Mapping[str, int]
    info: GGUFInfo | None = field(default=None, repr=False, compare=False)

    @property
    def quant(self) -> str:
        return FILE_TYPES.get(self.file_type if self.file_type is not None else -1, "unknown")


@dataclass(frozen=True)
class LoadRequest:
    """The caller's load options, checked and resolved before anything is unloaded."""

    n_ctx_opt: int | str | None
    layers_opt: int | str | None
    want_ctx: int
    type_k: str | None
    type_v: str | None
    flash: bool
    needs_plan: bool
    workers: tuple = ()  # RPC workers (fmgguf.runtime.rpc.rpc.WorkerSpec) the layers may go to
    #: speculative decoding's draft model, loaded beside the model (fmgguf.runtime.plan.fit.DraftSource)
    draft: DraftSource | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A resident model as the manager reports it (``as_dict()`` at the JSON edges)."""

    id: str
    quant: str | None
    path: str
    plan: "FitPlan | None"
    memory: int
    buffers: Mapping[str, int | Mapping[str, Mapping[str, int]]]
    n_ctx: int
    n_gpu_layers: int
    load_s: float
    loaded_at: str
    architecture: str | None
    chat_template: bool
    fim: bool | None
    fim_ids: Mapping[str, int]
    #: the residency key ("id:QUANT" for catalog models, the id for files)
    key: str = ""
    #: "process" (its own runner process, ``pid``) or "inprocess"
    isolation: str = "inprocess"
    pid: int | None = None
    pinned: bool = False
    #: seconds of idleness before it is unloaded (0: never)
    keep_alive: float = 0.0
    #: seconds until the keep-alive unloads it (None: never)
    expires_in_s: float | None = None
    #: the model generation calls without ``model=`` use
    selected: bool = False
    #: loading | ready | busy | unloading | broken (:class:`~fmgguf.runtime.runner.residency.ModelState`)
    state: str = "ready"
    #: streams running on it now, and waiting for a slot
    active: int = 0
    waiting: int = 0

    def as_dict(self) -> JsonObject:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["plan"] = self.plan.as_dict() if self.plan is not None else None
        out["buffers"], out["fim_ids"] = dict(self.buffers), dict(self.fim_ids)
        return out


@dataclass(frozen=True)
class SwitchResult:
    """What :meth:`ModelManager.switch_model` did: the model, its quant, the plan used, load time."""

    success: bool
    model_id: str
    quant: str | None
    plan: "FitPlan | None"
    load_s: float
    path: Path
    n_ctx: int
    n_gpu_layers: int
    #: what the caller should know about this load (a context past the trained one, ...)
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, info: LoadedModel) -> "SwitchResult":
        return cls(True, info.id, info.quant, info.plan, info.load_s, Path(info.path), info.n_ctx, info.n_gpu_layers)

    def as_dict(self) -> JsonObject:
        plan = self.plan.as_dict() if self.plan is not None else None
        return {"success": self.success, "model_id": self.model_id, "quant": self.quant, "plan": plan,
                "load_s": round(self.load_s, 4), "path": str(self.path), "n_ctx": self.n_ctx,
                "n_gpu_layers": self.n_gpu_layers}


def validate(path: Path, cache: dict[tuple, FileFacts]) -> FileFacts:
    """Validate the GGUF (GGUFError for anything llama.cpp could choke on) and keep the few facts
    the load needs, with the parsed header (the fit plan reuses it instead of reading the file
    again). A file is validated once per identity (path, inode, size, mtime)."""
    if not path.is_file():
        raise GGUFError(f"{path} is not a file", fix="check the path (`fmgguf ls` lists downloaded models)")
    key = identity(path)
    facts = cache.get(key)
    if facts is None:
        from fmgguf.runtime.gguf.gguf_file import read_gguf

        info = read_gguf(path)  # small: the long arrays (vocabulary, merges) are only counted
        facts = FileFacts(arch=info.arch, n_ctx_train=info.n_ctx_train, file_type=info.file_type,
                          fim_ids=dict(info.fim_tokens), info=info)
        cache[key] = facts
        while len(cache) > 16:
            cache.pop(next(iter(cache)))
    return facts


def fit_plan(path: Path, settings: "Settings", cache: dict[tuple, FitPlan], n_ctx: int | str, type_k: str, type_v: str,
             flash: bool, gpu: bool, info: GGUFInfo | None = None, workers: tuple = (),
             draft: DraftSource | None = None) -> FitPlan | None:
    """The fit plan for ``path`` (``info``: its header, already read). On a CPU-only build the plan can
    only say "CPU only", so a plan that fits is kept per file identity, options and margins; with a GPU
    it is made afresh (free VRAM changes)."""
    try:
        from fmgguf.runtime.plan.fit import plan_for_file
    except ImportError:
        return None
    key = (identity(path), n_ctx, type_k, type_v, flash, settings.ram_margin, settings.vram_margin,
           settings.vram_override, draft)
    if not gpu and not workers and key in cache:
        return cache[key]
    plan = plan_for_file(path, n_ctx=n_ctx, settings=settings, type_k=type_k, type_v=type_v,
                         flash_attn=flash, measure=gpu, info=info, workers=workers,  # workers: probed
                         draft=draft)
    if not gpu and not workers and plan.fits:  # "won't fit" is measured again next time: memory may have been freed
        cache[key] = plan
        while len(cache) > 16:
            cache.pop(next(iter(cache)))
    return plan


def available_models(catalog: "Catalog", downloader: "ModelDownloader", settings: "Settings") -> list[dict[str, object]]:
    """Every catalog model with the quants downloaded here (a listing never fails on one odd entry); ``fim``
    by the one FIM rule."""
    from fmgguf.runtime.prompt.fim_rule import card_verdict

    def downloaded(model_id: str, quant: str) -> bool:
        try:
            return bool(downloader.is_model_downloaded(model_id, quant))
        except (FmggufError, OSError):
            return False
    return [{"id": card.id, "name": card.title, "quants": card.quants,
             "downloaded": [q for q in card.quants if downloaded(card.id, q)],
             "fim": card_verdict(card, settings).able, "chat": card.chat_template not in (None, "none")} for card in catalog.models()]


#: the load options callers may pass
LOAD_KEYS = ("n_ctx", "n_gpu_layers", "flash_attn", "type_k", "type_v", "n_threads", "tensor_split",
             "main_gpu", "split_mode", "progress", "rpc")


def check_load_options(options: Mapping[str, object]) -> None:
    unknown = set(options) - set(LOAD_KEYS)
    if unknown:
        raise InvalidRequestError(f"unknown load option(s): {', '.join(sorted(unknown))}",
                                  fix=f"use {', '.join(LOAD_KEYS)}")


def load_request(facts: FileFacts, options: Mapping[str, object], settings: "Settings") -> LoadRequest:
    """The caller's load options checked and resolved (InvalidRequestError), before anything is unloaded."""
    from fmgguf.runtime.engine.engine import kv_type_value, split_mode_value

    for name in ("type_k", "type_v"):
        if options.get(name) is not None:
            kv_type_value(options[name])
    if options.get("split_mode") is not None:
        split_mode_value(options["split_mode"])
    n_ctx_opt = options.get("n_ctx")
    layers_opt = options.get("n_gpu_layers", "auto")
    train = facts.n_ctx_train or settings.default_ctx
    if n_ctx_opt in (None, "auto"):
        want_ctx = min(settings.default_ctx, train)
    else:
        try:
            want_ctx = int(n_ctx_opt)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"n_ctx {n_ctx_opt!r} is not a number", fix="use an integer or 'auto'") from None
    if want_ctx < 16:
        raise InvalidRequestError(f"n_ctx {want_ctx} is too small", fix="use at least a few hundred tokens")
    if layers_opt not in (None, "auto"):
        try:
            int(layers_opt)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"n_gpu_layers {layers_opt!r} is not a number",
                                      fix="use an integer (-1: all) or 'auto'") from None
    from fmgguf.runtime.rpc.rpc import parse_workers

    rpc = options.get("rpc")
    workers = parse_workers(settings.rpc if rpc is None else rpc)
    return LoadRequest(n_ctx_opt=n_ctx_opt, layers_opt=layers_opt, want_ctx=want_ctx, type_k=options.get("type_k"),
                       type_v=options.get("type_v"), flash=bool(options.get("flash_attn") or False),
                       needs_plan=layers_opt in (None, "auto") or n_ctx_opt == "auto", workers=workers)


#: llama_ftype values at or below Q4_K_M's size: suggesting "a smaller quant" there is no help
_SMALL_FTYPES = {2, 3, 10, 11, 12, 13, 14, 15, *range(19, 32), 36, 37}


def _smaller_hint(facts: FileFacts) -> str:
    ftype = facts.file_type
    return "" if ftype in _SMALL_FTYPES else "use a smaller quant (Q4_K_M), "


def plan_load(path: Path, facts: FileFacts, request: LoadRequest, options: Mapping[str, object],
              settings: "Settings", plans: dict[tuple, FitPlan]) -> tuple[LoadOptions, FitPlan | None]:
    """LoadOptions from the resolved request (:func:`load_request`) and, for "auto", the fit plan,
    made from the free memory measured now (the manager has released the old model by then)."""
    from fmgguf.runtime.engine.engine import LoadOptions, supports_gpu_offload

    s = settings
    n_ctx_opt, layers_opt, want_ctx = request.n_ctx_opt, request.layers_opt, request.want_ctx
    type_k, type_v, flash, needs_plan = request.type_k, request.type_v, request.flash, request.needs_plan
    gpu = supports_gpu_offload()
    try:
        plan = fit_plan(path, s, plans, "auto" if n_ctx_opt == "auto" else want_ctx, type_k or "f16", type_v or "f16",
                        flash, gpu, info=facts.info, workers=request.workers, draft=request.draft)
    except WorkerError:
        raise
    except Exception:
        if needs_plan:
            raise
        plan = None
        log.debug("fit plan failed; loading with the explicit options", exc_info=True)
    if needs_plan:
        if plan is not None and not plan.fits:
            raise InsufficientMemoryError(
                f"{path.name} does not fit: it needs {gib(plan.ram_needed)} RAM + {gib(plan.vram_needed)} VRAM, "
                f"{gib(plan.ram_free)} RAM and {gib(plan.vram_free)} VRAM are free",
                fix=_smaller_hint(facts) + "a shorter context (--ctx) or free memory; "
                    "`fmgguf fit` shows the numbers")
    if layers_opt in (None, "auto"):
        if plan is not None:
            layers = int(plan.n_gpu_layers)
        else:  # no planner: offload nothing rather than guess (CPU-only builds need nothing)
            layers = 0
            if gpu:
                log.warning("no fit planner available; loading with 0 GPU layers")
    else:
        layers = int(layers_opt)
    n_ctx = int(plan.n_ctx) if (n_ctx_opt == "auto" and plan is not None) else want_ctx
    split = options.get("tensor_split") or (plan.tensor_split if plan is not None and layers_opt in (None, "auto") else None)
    from fmgguf.runtime.hw.threads import choose_threads

    threads = choose_threads(options.get("n_threads") or s.n_threads).n_threads
    opts = LoadOptions(n_ctx=n_ctx, n_gpu_layers=layers, n_threads=threads, parallel=s.parallel,
                       flash_attn=flash, type_k=type_k, type_v=type_v,
                       tensor_split=tuple(split) if split else None, main_gpu=int(options.get("main_gpu") or 0),
                       split_mode=options.get("split_mode"),
                       rpc_servers=tuple(w.endpoint for w in request.workers) or None,
                       prompt_cache_bytes=int(s.prompt_cache_bytes), **_draft_options(request.draft, plan, s))
    return opts, plan


class _DraftFields(TypedDict, total=False):
    draft_path: str
    draft_name: str
    draft_gpu_layers: int
    draft_tensor_split: tuple[float, ...] | None
    draft_p_min: float
    draft_min_gain: float


def _draft_options(draft: DraftSource | None, plan: FitPlan | None, settings: "Settings") -> _DraftFields:
    """LoadOptions' draft fields for ``draft`` (a DraftSource or None), on the GPU where the plan put it."""
    if draft is None or draft.path is None:
        return {}
    return {"draft_path": str(draft.path), "draft_name": draft.name,
            "draft_gpu_layers": int(plan.draft_gpu_layers) if plan is not None else 0,
            "draft_tensor_split": tuple(plan.draft_tensor_split) if plan is not None and plan.draft_tensor_split
            else None,
            "draft_p_min": float(settings.draft_p_min), "draft_min_gain": float(settings.draft_min_gain)}


def engine_starter(isolation: str, slots: int = 1) -> "EngineStarter":
    """What starts an engine: llama.cpp here (``inprocess``, one stream at a time) or in a runner
    process of its own (``process``: an :class:`~fmgguf.runtime.runner.proxy.EngineProxy` that takes
    ``slots`` streams at once)."""
    def start(path: Path, load_opts: "LoadOptions", progress: "Progress | None", label: str) -> "EngineAPI":
        if load_opts.rpc_servers and isolation != "process":
            raise InvalidRequestError("RPC workers need the model in a runner process: llama.cpp aborts the whole "
                                      "process when a worker is lost", fix="use isolation='process' (the default; "
                                      "FMGGUF_ISOLATION=process), or load without --rpc")
        if isolation == "process":
            from fmgguf.runtime.runner.proxy import EngineProxy

            return EngineProxy.start(path, load_opts, progress=progress, label=label, slots=slots)
        from fmgguf.runtime.engine.engine import Engine

        return Engine(path, load_opts, progress=progress)
    return start


def start_engine(starter: "EngineStarter", path: Path, load_opts: "LoadOptions", plan: "FitPlan | None",
                 progress: "Progress | None", label: str) -> "EngineAPI":
    """``starter``'s engine for ``path``; a load that runs out of memory says what the fit plan expected."""
    try:
        return starter(path, load_opts, progress, label)
    except InsufficientMemoryError as exc:
        if plan is None:
            raise
        raise InsufficientMemoryError(
            f"{exc.message}; the fit plan for n_ctx={plan.n_ctx} says {plan.label}: needs "
            f"{gib(plan.ram_needed)} RAM + {gib(plan.vram_needed)} VRAM, free {gib(plan.ram_free)} RAM + "
            f"{gib(plan.vram_free)} VRAM", fix=exc.fix, **exc.details) from None


def add_note(exc: FmggufError, note: str) -> None:
    """Append ``note`` to the error's message (kept one line, the fix still last)."""
    exc.message = f"{exc.message}; {note}"
    exc.args = (exc.one_line(),)


def identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"
