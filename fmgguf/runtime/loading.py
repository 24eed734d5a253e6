"""How the manager loads a file: validate it once per identity, plan offload and context (the fit
plan), and turn the caller's options into engine :class:`LoadOptions`. Imports no llama_cpp."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.errors import GGUFError, InsufficientMemoryError, InvalidRequestError

if TYPE_CHECKING:
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

#: llama.cpp ``general.file_type`` -> quant name (for files loaded without a catalog entry)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def validate(path: Path, cache: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """Validate the GGUF (GGUFError for anything llama.cpp could choke on) and keep the few facts
    the load needs. A file is validated once per identity (path, inode, size, mtime)."""
    if not path.is_file():
        raise GGUFError(f"{path} is not a file", fix="check the path (`fmgguf ls` lists downloaded models)")
    key = identity(path)
    facts = cache.get(key)
    if facts is None:
        from fmgguf.runtime.gguf_file import read_gguf

        info = read_gguf(path)
        facts = {"arch": info.arch, "n_ctx_train": info.n_ctx_train, "file_type": info.file_type,
                 "fim_ids": dict(info.fim_tokens)}
        del info  # the full metadata (token tables) is tens of MB: do not keep it
        cache[key] = facts
        while len(cache) > 16:
            cache.pop(next(iter(cache)))
    return facts

def fit_plan(path: Path, settings: "Settings", cache: dict[tuple, Any], n_ctx: int | str, type_k: str, type_v: str,
             flash: bool, gpu: bool) -> Any:
    """The fit plan for ``path``. On a CPU-only build the plan can only say "CPU only", so it is
    kept per file identity and options; with a GPU it is made afresh (free VRAM changes)."""
    try:
        from fmgguf.runtime.fit import plan_for_file
    except ImportError:
        return None
    key = (identity(path), n_ctx, type_k, type_v, flash)
    if not gpu and key in cache:
        return cache[key]
    plan = plan_for_file(path, n_ctx=n_ctx, settings=settings, type_k=type_k, type_v=type_v,
                         flash_attn=flash, measure=gpu)
    if not gpu:
        cache[key] = plan
        while len(cache) > 16:
            cache.pop(next(iter(cache)))
    return plan

def plan_load(path: Path, info: Mapping[str, Any], options: Mapping[str, Any], settings: "Settings",
              plans: dict[tuple, Any]) -> tuple[Any, Any]:
    """LoadOptions from the caller's options and (for "auto") the fit plan."""
    from fmgguf.runtime.engine import LoadOptions, supports_gpu_offload

    s = settings
    n_ctx_opt = options.get("n_ctx")
    layers_opt = options.get("n_gpu_layers", "auto")
    train = info["n_ctx_train"] or s.default_ctx
    want_ctx = min(s.default_ctx, train) if n_ctx_opt in (None, "auto") else int(n_ctx_opt)
    if want_ctx < 16:
        raise InvalidRequestError(f"n_ctx {want_ctx} is too small", fix="use at least a few hundred tokens")
    type_k, type_v = options.get("type_k"), options.get("type_v")
    flash = bool(options.get("flash_attn") or False)
    needs_plan = layers_opt in (None, "auto") or n_ctx_opt == "auto"
    gpu = supports_gpu_offload()
    try:
        plan = fit_plan(path, s, plans, "auto" if n_ctx_opt == "auto" else want_ctx, type_k or "f16", type_v or "f16", flash, gpu)
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
                fix="use a smaller quant (Q4_K_M), a shorter context (--ctx) or free memory; "
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
    split = options.get("tensor_split") or (getattr(plan, "tensor_split", None) if layers_opt in (None, "auto") else None)
    opts = LoadOptions(n_ctx=n_ctx, n_gpu_layers=layers, n_threads=options.get("n_threads") or s.n_threads,
                       flash_attn=flash, type_k=type_k, type_v=type_v,
                       tensor_split=tuple(split) if split else None, main_gpu=int(options.get("main_gpu") or 0),
                       split_mode=options.get("split_mode"))
    return opts, plan


def identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"
