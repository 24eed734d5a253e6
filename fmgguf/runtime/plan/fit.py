"""The fit plan: how many layers go to the GPU(s), with which context and KV-cache type.

llama.cpp's layer rule (offload.md §0.4): with ``n_gpu_layers=k`` the output layer goes first,
then blocks from the top (``il >= n_layer+1-k``); token_embd always stays on the CPU; each layer's
KV cache sits with its layer. We take the largest ``k`` whose device bytes fit in the free memory
minus ``settings.vram_margin`` (1 GiB, as llama.cpp), then check the rest fits in RAM. Options:
``n_ctx="auto"`` shrinks the context (not below 4096) until the model is fully on the GPU, and
``kv_quant=True`` tries a q8_0 then q4_0 KV cache (with flash attention) before giving up layers.
Several GPUs are filled back to front, as llama.cpp's fit does: the last one takes the output
layer and the top blocks, and ``tensor_split`` holds the per-device layer counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject, human_bytes
from fmgguf.runtime.hw.devices import Device, SystemMemory, system_memory
from fmgguf.runtime.hw.threads import ThreadChoice, choose_threads
from fmgguf.runtime.plan.estimate import GPU_RUNTIME_OVERHEAD, Estimate, estimate_card, estimate_file, pad

if TYPE_CHECKING:
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.runtime.gguf.gguf_info import GGUFInfo
    from fmgguf.runtime.rpc.rpc import WorkerSpec
    from fmgguf.settings import Settings

N_CTX_MIN = 4096


@dataclass
class DevicePlan:
    name: str
    layers: int
    needed: int
    free: int  # the budget the plan had on this device (free memory, or a worker's --rpc @BUDGET)
    output_layer: bool = False
    kind: str = "GPU"  # GPU | RPC (a worker) | CPU (this machine's RAM: the layers left over)
    first_layer: int | None = None  # the blocks it holds, in llama.cpp's numbering (None: none)
    last_layer: int | None = None
    memory_source: str = "ggml"

    @property
    def layer_range(self) -> str:
        if self.first_layer is None or self.last_layer is None:
            return "-"
        span = str(self.first_layer) if self.first_layer == self.last_layer else f"{self.first_layer}-{self.last_layer}"
        return span + (" + output" if self.output_layer else "")

    def as_dict(self) -> JsonObject:
        return {"name": self.name, "layers": self.layers, "needed": self.needed, "free": self.free,
                "output_layer": self.output_layer, "kind": self.kind, "first_layer": self.first_layer,
                "last_layer": self.last_layer, "layer_range": self.layer_range, "memory_source": self.memory_source}


@dataclass
class FitPlan:
    label: str
    fits: bool
    n_gpu_layers: int
    n_layers: int
    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: bool
    vram_needed: int
    ram_needed: int
    vram_free: int
    ram_free: int
    devices: list[DevicePlan] = field(default_factory=list)
    tensor_split: list[float] | None = None
    estimate: Estimate | None = field(default=None, repr=False)
    source: str = "file"  # file | header | catalog
    notes: list[str] = field(default_factory=list)
    #: CPU threads llama.cpp will compute with, and why (:class:`~fmgguf.runtime.hw.threads.ThreadChoice`)
    threads: ThreadChoice | None = None
    #: requests served at once (slots of one unified KV cache: each may grow to n_ctx, together they share it)
    parallel: int = 1
    #: the draft model's memory (speculative decoding; counted in vram_needed or ram_needed) and its GPU layers
    draft_bytes: int = 0
    draft_gpu_layers: int = 0
    #: the draft's tensor_split on a machine of several devices: its whole weight on the one chosen
    draft_tensor_split: list[float] | None = None

    @property
    def full_gpu(self) -> bool:
        return self.n_gpu_layers >= self.n_layers

    def llama_kwargs(self) -> dict[str, object]:
        """The llama_cpp.Llama arguments this plan stands for."""
        kw: dict[str, object] = {"n_gpu_layers": self.n_gpu_layers, "n_ctx": self.n_ctx, "flash_attn": self.flash_attn,
                              "type_k": self.type_k, "type_v": self.type_v}
        if self.tensor_split:
            kw["tensor_split"] = self.tensor_split
        return kw

    def as_dict(self) -> JsonObject:
        est = self.estimate
        return {"label": self.label, "fits": self.fits, "n_gpu_layers": self.n_gpu_layers, "n_layers": self.n_layers,
                "n_ctx": self.n_ctx, "type_k": self.type_k, "type_v": self.type_v, "flash_attn": self.flash_attn,
                "vram_needed": self.vram_needed, "ram_needed": self.ram_needed, "vram_free": self.vram_free,
                "ram_free": self.ram_free, "devices": [d.as_dict() for d in self.devices],
                "tensor_split": self.tensor_split, "source": self.source, "notes": self.notes,
                "threads": None if self.threads is None else self.threads.as_dict(), "parallel": self.parallel,
                "slot_ctx": self.n_ctx, "draft_bytes": self.draft_bytes, "draft_gpu_layers": self.draft_gpu_layers,
                "estimate": None if est is None else {
                    "weights": est.weights_total, "kv_cache": est.kv_total, "compute": est.compute,
                    "output_buffer": est.output_buffer, "total": est.total, "compute_source": est.compute_source}}


# --- placing layers ---------------------------------------------------------------------------------
def place(est: Estimate, gpus: list[Device], margin: int, overhead: int = GPU_RUNTIME_OVERHEAD,
          margins: list[int] | None = None) -> list[DevicePlan]:
    """Layers per GPU, filling from the last GPU backwards: it takes the output layer and the top blocks
    (the output layer is never split off: if the last GPU cannot hold it, nothing is offloaded).
    ``gpus`` in llama.cpp's device order (RPC workers first); ``margins``: per device, else ``margin``."""
    plans: dict[int, DevicePlan] = {i: DevicePlan(d.name, 0, 0, d.free, kind=d.kind, memory_source=d.memory_source)
                                    for i, d in enumerate(gpus)}
    top = est.n_layer  # blocks below `top` are still unassigned
    for pos in range(len(gpus) - 1, -1, -1):
        dev, last = gpus[pos], pos == len(gpus) - 1
        budget = dev.free - (margins[pos] if margins else margin) - overhead - est.compute
        used, n = (est.output_weights, 1) if last else (0, 0)
        if budget < used:
            break
        while top > 0 and used + est.layer_weights[top - 1] + est.kv_layers[top - 1] <= budget:
            top -= 1
            used += est.layer_weights[top] + est.kv_layers[top]
            n += 1
        if n:
            plans[pos] = DevicePlan(dev.name, n, used + est.compute + overhead, dev.free, output_layer=last,
                                    kind=dev.kind, memory_source=dev.memory_source)
        if top == 0:
            break
    return _number_layers([plans[i] for i in range(len(gpus))], est.n_layer)


def _number_layers(devs: list[DevicePlan], n_layer: int) -> list[DevicePlan]:
    """Which blocks each device holds, as llama.cpp assigns them from ``tensor_split`` (layer counts in
    device order, the output layer counted on the last device): the offloaded ones are the top ones."""
    cur = n_layer + 1 - sum(d.layers for d in devs)
    for d in devs:
        blocks = d.layers - (1 if d.output_layer else 0)
        if blocks > 0:
            d.first_layer, d.last_layer = cur, cur + blocks - 1
        cur += d.layers
    return devs


def host_plan(est: Estimate, k: int, needed: int, free: int) -> DevicePlan:
    """The row for this machine's RAM: the input embeddings and the blocks no device took."""
    first_dev = est.n_layer + 1 - k
    plan = DevicePlan("CPU (this machine)", max(first_dev, 0) if k < est.n_layers else 0, needed, free, kind="CPU",
                      output_layer=k == 0, memory_source="psutil")
    if first_dev > 0:
        plan.first_layer, plan.last_layer = 0, min(first_dev, est.n_layer) - 1
    return plan


def _plan_from(est: Estimate, mem: SystemMemory, settings: "Settings", source: str) -> FitPlan:
    targets = list(mem.workers) + list(mem.gpus)  # llama.cpp's order: RPC workers first, then local GPUs
    margins = [0 if d.memory_source == "budget" else settings.vram_margin for d in targets]
    devs = place(est, targets, settings.vram_margin, margins=margins) if targets else []
    k = sum(d.layers for d in devs)
    ram_needed = est.host_bytes(k)
    draft_layers, draft_note = _place_draft(est, devs, targets, settings.vram_margin, k)
    if est.draft is not None and not draft_layers:
        ram_needed += est.draft.total
    ram_budget = mem.ram_free - settings.ram_margin
    fits = ram_needed <= ram_budget
    on_workers = sum(d.layers for d in devs if d.kind == "RPC")
    if not fits:
        label = "Won't fit"
    elif on_workers:
        n_w = len({d.name.split("#")[0] for d in devs if d.layers and d.kind == "RPC"})
        label = (f"Split: {n_w} worker{'s' if n_w > 1 else ''}" + (" + GPU" if k > on_workers else "")
                 + ("" if k >= est.n_layers else f" + RAM ({est.n_layers - k} of {est.n_layers} layers)"))
    elif k >= est.n_layers:
        label = "Full GPU"
    elif k > 0:
        label = f"Partial ({k} of {est.n_layers} layers)"
    else:
        label = "CPU only"
    used = [d for d in devs if d.layers]
    split = [float(d.layers) for d in devs] if len(used) > 1 or (mem.workers and k) else None
    if mem.workers:
        devs = devs + [host_plan(est, k, ram_needed, mem.ram_free)]
    return FitPlan(label=label, fits=fits, n_gpu_layers=k, n_layers=est.n_layers, n_ctx=est.n_ctx,
                   type_k=est.type_k, type_v=est.type_v, flash_attn=est.flash_attn,
                   vram_needed=sum(d.needed for d in devs if d.kind != "CPU"), ram_needed=ram_needed,
                   vram_free=sum(g.free for g in targets), ram_free=mem.ram_free, devices=devs,
                   tensor_split=split, estimate=est, source=source,
                   notes=list(est.notes) + list(mem.notes) + ([draft_note] if draft_note else []),
                   threads=choose_threads(settings.n_threads), parallel=settings.parallel,
                   draft_bytes=est.draft.total if est.draft is not None else 0, draft_gpu_layers=draft_layers,
                   draft_tensor_split=[0.0] * (len(targets) - 1) + [1.0] if draft_layers and len(targets) > 1 else None)


def _place_draft(est: Estimate, devs: list[DevicePlan], gpus: list[Device], margin: int, k: int) -> tuple[int, str]:
    """The draft model's GPU layers (all of it on the last GPU, beside a fully offloaded target, when it
    fits there; else 0: it runs on the CPU) and a note saying where it went ("" without a draft)."""
    draft = est.draft
    if draft is None:
        return 0, ""
    name, size = est.draft_name or "the draft model", human_bytes(draft.total)
    last = devs[-1] if devs and k >= est.n_layers and gpus and gpus[-1].kind != "RPC" else None
    if last is not None and last.needed + draft.total + GPU_RUNTIME_OVERHEAD <= last.free - margin:
        last.needed += draft.total  # (on the last device: the plan's draft_tensor_split says so)
        return draft.n_layers, f"draft model {name}: {size} on {last.name} beside the model"
    return 0, f"draft model {name}: {size} in RAM (it runs on the CPU)"


def choose(make: Callable[[int, str, str, bool], Estimate], mem: SystemMemory, settings: "Settings", *,
           n_ctx: int | str | None, n_ctx_train: int | None, type_k: str, type_v: str, flash_attn: bool,
           kv_quant: bool = False, source: str = "file", n_ctx_min: int = N_CTX_MIN) -> FitPlan:
    """The best plan: requested settings first; then quantized KV (if allowed); then a shorter context
    (if ``n_ctx="auto"``). ``make(n_ctx, type_k, type_v, flash_attn)`` builds an Estimate."""
    auto = n_ctx == "auto"
    ctx = int(n_ctx_train or settings.default_ctx) if auto else int(n_ctx or settings.default_ctx)
    plan = _plan_from(make(ctx, type_k, type_v, flash_attn), mem, settings, source)
    want_full = bool(mem.gpus or mem.workers)

    def good(p: FitPlan) -> bool:
        return p.fits and (p.full_gpu or not want_full)

    if good(plan):
        return plan
    tried = [plan]
    if kv_quant and type_k == "f16" and type_v == "f16":
        for q in ("q8_0", "q4_0"):
            p = _plan_from(make(ctx, q, q, True), mem, settings, source)
            p.notes.append(f"KV cache quantized to {q} (flash attention on) to fit")
            tried.append(p)
            if good(p):
                return p
    if auto:
        lo_ctx = min(n_ctx_min, ctx)
        kinds = [(type_k, type_v, flash_attn)] + ([(q, q, True) for q in ("q8_0", "q4_0")] if kv_quant else [])
        for tk, tv, fa in kinds:
            lo, hi, best = lo_ctx // 256, pad(ctx) // 256, None
            while lo <= hi:  # largest context (multiple of 256) that is good
                mid = (lo + hi) // 2
                p = _plan_from(make(mid * 256, tk, tv, fa), mem, settings, source)
                if good(p):
                    best, lo = p, mid + 1
                else:
                    hi = mid - 1
            if best is not None:
                best.notes.append(f"context shrunk to {best.n_ctx} to fit (n_ctx=auto)")
                return best
        p = _plan_from(make(lo_ctx, type_k, type_v, flash_attn), mem, settings, source)
        p.notes.append(f"context set to {p.n_ctx} (n_ctx=auto); the model does not fit fully at any length")
        tried.append(p)
    # nothing is fully on the GPU: the plan with the most layers that fits in RAM
    fitting = [p for p in tried if p.fits]
    return max(fitting, key=lambda p: (p.n_gpu_layers, p.n_ctx)) if fitting else tried[0]


# --- the draft model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DraftSource:
    """Speculative decoding's draft model, counted beside the model planned: a local GGUF (``path``)
    or, not downloaded yet, a catalog variant (``card``, ``quant``: planned from catalog numbers)."""

    name: str
    path: Path | None = None
    card: "ModelCard | None" = None
    quant: str | None = None

    def estimate(self, ctx: int, tk: str, tv: str, fa: bool, swa_full: bool, n_ubatch: int) -> Estimate:
        if self.path is not None:
            from fmgguf.runtime.gguf.gguf_file import read_gguf

            return estimate_file(read_gguf(self.path), n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa,
                                 swa_full=swa_full, n_ubatch=n_ubatch, measure=False)
        assert self.card is not None and self.quant is not None
        return estimate_card(self.card, self.quant, n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa,
                             swa_full=swa_full, n_ubatch=n_ubatch)


def _with_draft(est: Estimate, draft: DraftSource | None) -> Estimate:
    if draft is None:
        return est
    return replace(est, draft=draft.estimate(est.n_ctx, est.type_k, est.type_v, est.flash_attn, est.swa_full,
                                             est.n_ubatch), draft_name=draft.name)


# --- public entry points ------------------------------------------------------------------------------
def _memory(settings: "Settings", vram: int | None, mem: SystemMemory | None,
            workers: "Sequence[WorkerSpec] | None" = None, need_workers: bool = True) -> SystemMemory:
    if mem is None:
        override = vram if vram is not None else settings.vram_override
        mem = system_memory(vram_override=override)
    if workers:
        from fmgguf.runtime.rpc.rpc import worker_devices

        devs, notes = worker_devices(workers, need_reachable=need_workers)
        mem = replace(mem, workers=devs, notes=list(mem.notes) + notes)
    return mem


def plan_for_file(path: str | Path, n_ctx: int | str | None = None, settings: "Settings | None" = None,
                  vram: int | None = None, type_k: str = "f16", type_v: str = "f16", flash_attn: bool = False,
                  kv_quant: bool = False, swa_full: bool = True, n_ubatch: int = 512, measure: bool = True,
                  mem: SystemMemory | None = None, info: "GGUFInfo | None" = None,
                  workers: "Sequence[WorkerSpec] | None" = None, need_workers: bool = True,
                  draft: DraftSource | None = None) -> FitPlan:
    """The plan for a local GGUF on this machine (or for ``vram`` bytes of GPU memory). ``info``: the
    file's header as :func:`~fmgguf.runtime.gguf.gguf_file.read_gguf` already returned it (not read again).
    ``workers``: RPC workers the layers may go to as well (probed; see :func:`fmgguf.runtime.rpc.rpc.worker_devices`)."""
    from fmgguf.settings import load_settings

    settings = settings or load_settings()
    if info is None:
        from fmgguf.runtime.gguf.gguf_file import read_gguf

        info = read_gguf(path)
    mem = _memory(settings, vram, mem, workers, need_workers)

    def make(ctx: int, tk: str, tv: str, fa: bool) -> Estimate:
        return _with_draft(estimate_file(info, n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa, swa_full=swa_full,
                                         n_ubatch=n_ubatch, measure=False), draft)

    plan = choose(make, mem, settings, n_ctx=n_ctx, n_ctx_train=info.n_ctx_train, type_k=type_k, type_v=type_v,
                  flash_attn=flash_attn, kv_quant=kv_quant, source="file")
    if measure:  # replace the compute-buffer formula by llama.cpp's own figure, then place again
        est = estimate_file(info, n_ctx=plan.n_ctx, type_k=plan.type_k, type_v=plan.type_v,
                            flash_attn=plan.flash_attn, swa_full=swa_full, n_ubatch=n_ubatch, measure=True,
                            n_gpu_layers=plan.n_gpu_layers if mem.source == "ggml" else 0)
        est = _with_draft(est, draft)
        notes = [n for n in plan.notes if n not in est.notes]
        plan = _plan_from(est, mem, settings, "file")
        plan.notes = notes + [n for n in plan.notes if n not in notes]
    return plan


def plan_for_card(card: "ModelCard", quant: str, n_ctx: int | str | None = None, settings: "Settings | None" = None,
                  vram: int | None = None, type_k: str = "f16", type_v: str = "f16", flash_attn: bool = False,
                  kv_quant: bool = False, swa_full: bool = True, n_ubatch: int = 512, path: str | Path | None = None,
                  remote: bool = True, mem: SystemMemory | None = None, workers: "Sequence[WorkerSpec] | None" = None,
                  need_workers: bool = True, draft: DraftSource | None = None) -> FitPlan:
    """The plan for a catalog model: from the local file when given, else from its header read with
    HTTP Range requests, else (offline, or the hub unreachable) from catalog numbers."""
    from fmgguf.errors import FmggufError
    from fmgguf.settings import load_settings

    settings = settings or load_settings()
    if path is not None:
        return plan_for_file(path, n_ctx, settings, vram, type_k, type_v, flash_attn, kv_quant, swa_full, n_ubatch,
                             mem=mem, workers=workers, need_workers=need_workers, draft=draft)
    mem = _memory(settings, vram, mem, workers, need_workers)
    variant = card.variant(quant)
    note = None
    if remote and not settings.offline and len(variant.files) == 1:
        from fmgguf.runtime.gguf.remote_header import read_remote_gguf

        try:
            info = read_remote_gguf(settings, variant.repo, variant.files[0].name, variant.revision)
        except FmggufError as exc:
            note = f"header not read ({exc.message}); planned from catalog numbers"
        else:
            def make_h(ctx: int, tk: str, tv: str, fa: bool) -> Estimate:
                return _with_draft(estimate_file(info, n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa,
                                                 swa_full=swa_full, n_ubatch=n_ubatch, source="header"), draft)

            return choose(make_h, mem, settings, n_ctx=n_ctx, n_ctx_train=info.n_ctx_train, type_k=type_k,
                          type_v=type_v, flash_attn=flash_attn, kv_quant=kv_quant, source="header")

    def make_c(ctx: int, tk: str, tv: str, fa: bool) -> Estimate:
        return _with_draft(estimate_card(card, quant, n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa,
                                         swa_full=swa_full, n_ubatch=n_ubatch), draft)

    plan = choose(make_c, mem, settings, n_ctx=n_ctx, n_ctx_train=card.arch.context_length if card.arch else None,
                  type_k=type_k, type_v=type_v, flash_attn=flash_attn, kv_quant=kv_quant, source="catalog")
    if note:
        plan.notes.insert(0, note)
    return plan
