"""How much memory a model takes, per layer and per device, from its GGUF header or its catalog card.

Weights come from the real tensor sizes (per ``blk.N`` layer, the input embeddings that always stay
on the CPU, and the output layer, which llama.cpp offloads *first*). The KV cache follows
llama.cpp's own arithmetic (offload.md §4): context padded to 256, per-layer K/V rows of the cache
type (f16, q8_0, q4_0, ... with their block scales), per-layer GQA head counts, Gemma's sliding
window (small SWA cache unless ``swa_full``), DeepSeek-V2's MLA (the latent only, no V). The
compute buffer is measured by llama.cpp's no-alloc dry run when asked (``measure=True``), else a
formula. Before download the same breakdown is built from catalog numbers (:func:`estimate_card`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.gguf.gguf_file import GGUFInfo, row_bytes

if TYPE_CHECKING:
    from fmgguf.catalog.schema import ModelCard

MIB = 1024 * 1024
KV_TYPES = ("f16", "q8_0", "q4_0", "f32", "bf16", "q4_1", "q5_0", "q5_1", "iq4_nl")
#: a GPU runtime's own footprint beyond llama.cpp's buffers (CUDA context, cuBLAS workspace)
GPU_RUNTIME_OVERHEAD = 300 * MIB
#: SWA architectures: default layer pattern and whether the dense layer comes first (llama.cpp models/*.cpp)
SWA_PATTERNS: dict[str, tuple[int, bool]] = {"gemma2": (2, False), "gemma3": (6, False), "cohere2": (4, False),
                                             "gpt-oss": (2, False), "olmo2": (4, False), "exaone4": (4, False),
                                             "gemma-embedding": (6, False), "smallthinker": (4, True)}
#: architectures whose sliding window is on even without a `sliding_window` key (gemma2: 4096)
SWA_DEFAULT_WINDOW = {"gemma2": 4096}


def pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


@dataclass
class Estimate:
    """Memory breakdown for one configuration (bytes). Layer lists are indexed by block number."""

    arch: str
    n_layer: int
    n_ctx: int  # padded, as llama_n_ctx() reports
    type_k: str
    type_v: str
    flash_attn: bool
    swa_full: bool
    n_ubatch: int
    layer_weights: list[int]
    input_weights: int  # token_embd and other non-block tensors: always on the CPU
    output_weights: int  # output.weight + output_norm (+ the duplicated token_embd when tied)
    tied_output: bool  # no output.weight: token_embd is duplicated onto the output device
    weights_total: int  # every tensor once = llama_model_size()
    kv_layers: list[int]
    compute: int  # the compute buffer of the device that runs the graph
    output_buffer: int  # logits on the host
    source: str  # "file" | "header" | "catalog"
    compute_source: str  # "dry-run" | "formula"
    notes: list[str] = field(default_factory=list)
    #: CPU-only: llama.cpp's model buffers (CPU_Mapped/CPU + CPU_REPACK, as printed) minus weights_total
    host_extra: int = 0
    #: bytes each block / the output layer adds in CPU_REPACK while it stays on the CPU (mmap: a second copy)
    repack_layers: list[int] = field(default_factory=list)
    repack_output: int = 0
    #: speculative decoding's draft model, resident beside this one at the same context (its own estimate)
    draft: "Estimate | None" = None
    draft_name: str | None = None

    @property
    def n_layers(self) -> int:
        """llama.cpp's layer count for n_gpu_layers: the blocks plus the output layer."""
        return self.n_layer + 1

    @property
    def kv_total(self) -> int:
        return sum(self.kv_layers)

    @property
    def total(self) -> int:
        """Everything on one device (CPU-only or full offload): weights (+ the CPU's repacked copies) + KV
        + compute + output buffer."""
        return self.weights_total + self.host_extra + self.kv_total + self.compute + self.output_buffer

    @property
    def model_buffers(self) -> int:
        """llama.cpp's model buffers on a CPU-only load, as its log prints them."""
        return self.weights_total + self.host_extra

    def device_bytes(self, k: int) -> int:
        """Bytes on the (single) GPU with ``n_gpu_layers=k``: output layer first, then blocks from the top."""
        k = max(0, min(k, self.n_layers))
        if k == 0:
            return 0
        first = self.n_layer + 1 - k
        layers = range(first, self.n_layer)
        return (self.output_weights + sum(self.layer_weights[i] + self.kv_layers[i] for i in layers)
                + self.compute)

    def host_bytes(self, k: int) -> int:
        """Bytes in RAM with ``n_gpu_layers=k`` (weights counted whether mmapped or not)."""
        k = max(0, min(k, self.n_layers))
        first = self.n_layer + 1 - k
        on_gpu = range(max(first, 0), self.n_layer)
        weights = self.weights_total - sum(self.layer_weights[i] for i in on_gpu)
        if k >= 1 and not self.tied_output:
            weights -= self.output_weights
        kv = sum(self.kv_layers[i] for i in range(self.n_layer) if i not in on_gpu)
        # with every layer offloaded the host keeps only small staging buffers for the inputs
        compute = self.compute if k < self.n_layers else 4 * self.n_ubatch * 1024
        if k == 0:
            weights += self.host_extra
        else:  # the blocks still on the CPU keep their repacked copies
            weights += sum(self.repack_layers[i] for i in range(min(first, len(self.repack_layers))))
        return weights + kv + compute + self.output_buffer

    def as_dict(self) -> JsonObject:
        d = asdict(self)
        d.update(kv_total=self.kv_total, total=self.total, n_layers=self.n_layers)
        return d


# --- KV cache --------------------------------------------------------------------------------------
def _per_layer(value: object, n_layer: int, default: int) -> list[int]:
    if isinstance(value, list):
        if len(value) < n_layer:
            value = list(value) + [value[-1] if value else default] * (n_layer - len(value))
        return [int(v) for v in value[:n_layer]]
    return [int(value if value is not None else default)] * n_layer


def swa_layers(info_arch: str, n_layer: int, metadata: Mapping[str, object]) -> tuple[list[bool], int]:
    """(is_swa per layer, window) following llama.cpp's set_swa_pattern; window 0 = no SWA."""
    window = metadata.get(f"{info_arch}.attention.sliding_window", SWA_DEFAULT_WINDOW.get(info_arch, 0)) or 0
    if info_arch not in SWA_PATTERNS or not window:
        return [False] * n_layer, 0
    n_pattern, dense_first = SWA_PATTERNS[info_arch]
    pattern = metadata.get(f"{info_arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        flags = [bool(x) for x in pattern[:n_layer]] + [False] * max(0, n_layer - len(pattern))
        return flags, int(window)
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        n_pattern = pattern
    if dense_first:
        return [n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer)], int(window)
    return [n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer)], int(window)


def check_kv_types(type_k: str, type_v: str, flash_attn: bool) -> None:
    for t in (type_k, type_v):
        if t not in KV_TYPES:
            raise InvalidRequestError(f"KV cache type {t!r} is not one llama.cpp accepts",
                                      fix=f"use one of {', '.join(KV_TYPES[:3])}")
    if type_v not in ("f16", "f32", "bf16") and not flash_attn:
        raise InvalidRequestError(f"a quantized V cache ({type_v}) needs flash attention",
                                  fix="pass flash_attn=True (--flash-attn) or keep type_v f16")


def kv_layers_for(arch: str, n_layer: int, metadata: Mapping[str, object], n_ctx: int, type_k: str, type_v: str,
                  swa_full: bool, n_ubatch: int, n_seq_max: int = 1, flash_attn: bool = False) -> list[int]:
    """Per-layer KV bytes as llama.cpp allocates them (llama-kv-cache.cpp, -iswa.cpp)."""
    n_embd = int(metadata[f"{arch}.embedding_length"])
    n_head = _per_layer(metadata.get(f"{arch}.attention.head_count"), n_layer, 1)
    n_head_kv = _per_layer(metadata.get(f"{arch}.attention.head_count_kv"), n_layer, 0)
    n_head_kv = [hkv if hkv else h for hkv, h in zip(n_head_kv, n_head, strict=True)]
    head_default = n_embd // max(n_head[0], 1)
    head_k = int(metadata.get(f"{arch}.attention.key_length", head_default))
    head_v = int(metadata.get(f"{arch}.attention.value_length", head_default))
    is_mla = f"{arch}.attention.key_length_mla" in metadata
    cells = pad(n_ctx)  # n_seq_max=1 / unified: one stream of n_ctx' cells
    if n_seq_max > 1:
        cells = pad(cells // n_seq_max)
    n_stream = n_seq_max
    flags, window = swa_layers(arch, n_layer, metadata)
    cells_swa = cells if swa_full or not window else min(cells, pad(window + n_ubatch))
    v_gqa = [hkv * head_v for hkv in n_head_kv]
    v_trans_max = max(v_gqa) if not flash_attn else None  # without FA V is transposed and padded to the max
    out = []
    for il in range(n_layer):
        c = cells_swa if flags[il] else cells
        k = row_bytes(type_k, n_head_kv[il] * head_k) * c
        v = 0 if is_mla else row_bytes(type_v, (v_trans_max or v_gqa[il])) * c
        out.append(n_stream * (k + v))
    return out


# --- compute buffer formula (the dry run measures it exactly) -------------------------------------
def compute_formula(n_vocab: int, n_embd: int, n_head: int, n_ff: int, n_ctx: int, n_ubatch: int,
                    flash_attn: bool, mla_extra: int = 0) -> int:
    """Peak of llama.cpp's worst-case graph at ``n_ubatch`` tokens, approximately (fitted to dry runs of
    the tiny models): the logits, or the attention (without flash attention the f32 scores of every
    head and the mask over the whole cache), or the FFN activations, plus the residual stream.
    ``mla_extra``: floats per token of MLA's absorbed query and latent output (n_head·(k_len+v_len))."""
    ub, kv = n_ubatch, pad(n_ctx)
    logits = n_vocab + 3 * n_embd
    attn = 6 * n_embd + mla_extra + (kv if flash_attn else (n_head + 1) * kv)
    ffn = 2 * n_ff + 3 * n_embd
    return 4 * ub * max(logits, attn, ffn)


# --- from a GGUF -----------------------------------------------------------------------------------
def split_weights(info: GGUFInfo) -> tuple[list[int], int, int, bool]:
    """(per-layer bytes, input bytes, output bytes incl. a tied duplicate, tied?)."""
    layers = [0] * info.n_layer
    inp = out = 0
    names = {t.name for t in info.tensors}
    tied = "output.weight" not in names
    embd = 0
    for t in info.tensors:
        if t.layer is not None and t.layer < info.n_layer:
            layers[t.layer] += t.n_bytes
        elif t.name.startswith("output") or t.layer is not None:  # nextn/MTP blocks ride with the output
            out += t.n_bytes
        else:
            inp += t.n_bytes
            if t.name == "token_embd.weight":
                embd = t.n_bytes
    if tied:
        out += embd
    return layers, inp, out, tied


def estimate_file(info: GGUFInfo, n_ctx: int | None = None, type_k: str = "f16", type_v: str = "f16",
                  flash_attn: bool = False, swa_full: bool = True, n_ubatch: int = 512, n_batch: int = 512,
                  n_seq_max: int = 1, measure: bool = False, source: str = "file",
                  use_extra_bufts: bool | None = None, n_gpu_layers: int = 0, use_mmap: bool = True) -> Estimate:
    """Breakdown for a parsed GGUF. ``measure=True`` runs llama.cpp's dry run for the compute buffer
    (and the KV/output sizes, which must agree with ours). The CPU's extra buffers (repacked weights,
    fmgguf.runtime.plan.repack) count as llama.cpp allocates them with ``use_mmap`` (the engine's default)."""
    check_kv_types(type_k, type_v, flash_attn)
    n_ctx = int(n_ctx or info.n_ctx_train or 4096)
    n_ubatch = min(n_ubatch, n_batch, n_ctx)
    layers, inp, out, tied = split_weights(info)
    kv = kv_layers_for(info.arch, info.n_layer, info.metadata, n_ctx, type_k, type_v, swa_full, n_ubatch,
                       n_seq_max, flash_attn)
    n_vocab = info.n_vocab or 32000
    n_ff = info.key("feed_forward_length", 4 * info.n_embd)
    n_ff = max(n_ff) if isinstance(n_ff, list) else int(n_ff)
    mla = 0
    if info.key("attention.key_length_mla") is not None:
        mla = info.n_head * (int(info.key("attention.key_length", 0)) + int(info.key("attention.value_length", 0)))
    compute = compute_formula(n_vocab, info.n_embd, info.n_head, n_ff, n_ctx, n_ubatch, flash_attn, mla)
    est = Estimate(arch=info.arch, n_layer=info.n_layer, n_ctx=pad(n_ctx), type_k=type_k, type_v=type_v,
                   flash_attn=flash_attn, swa_full=swa_full, n_ubatch=n_ubatch, layer_weights=layers,
                   input_weights=inp, output_weights=out, tied_output=tied, weights_total=info.tensor_bytes,
                   kv_layers=kv, compute=compute, output_buffer=4 * n_vocab * n_seq_max, source=source,
                   compute_source="formula")
    _add_extra_buffers(est, info, use_extra_bufts is not False, use_mmap)
    if measure:
        from fmgguf.errors import EngineError
        from fmgguf.runtime.plan.dryrun import measure as dry_run

        kw = dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, type_k=type_k, type_v=type_v,
                  flash_attn=flash_attn, swa_full=swa_full, n_seq_max=n_seq_max, n_gpu_layers=n_gpu_layers)
        try:
            m = dry_run(info.path, use_extra_bufts=use_extra_bufts, **kw)
        except EngineError as exc:
            try:  # this llama.cpp aborts on MoE graphs with the CPU's AMX/repack buffers: measure without them
                m = None if use_extra_bufts is False else dry_run(info.path, use_extra_bufts=False, **kw)
            except EngineError:
                m = None
            if m is None:
                est.notes.append(f"dry run failed ({exc.message}); compute buffer from the formula")
                return est
        if m.ok and m.compute_buffers:
            device = {k: v for k, v in m.compute_buffers.items() if not (k.startswith("CPU") or k.endswith("_Host"))}
            est.compute = max((device if n_gpu_layers and device else m.compute_buffers).values())
            est.compute_source = "dry-run"
            if abs(m.kv_total - est.kv_total) > 0.01 * MIB * max(1, len(m.kv_caches)):
                est.notes.append(f"llama.cpp reports a {m.kv_total} B KV cache, the formula {est.kv_total} B")
        elif m.error:
            est.notes.append(f"dry run: {m.error}")
    return est


def _add_extra_buffers(est: Estimate, info: GGUFInfo, extra_bufts: bool, use_mmap: bool) -> None:
    """The CPU's model buffers as llama.cpp prints them: the mapped (or allocated) weights and CPU_REPACK.

    Modelled for CPU builds; where the build has a GPU backend, CPU-resident weights go to its pinned
    host buffers first (llama.cpp's make_cpu_buft_list), which this does not model (a note says so)."""
    from fmgguf.runtime.hw.devices import ggml_devices
    from fmgguf.runtime.plan.repack import cpu_kernels, host_buffers

    kernels = cpu_kernels() if extra_bufts else None
    if kernels is not None and any(d.kind in ("GPU", "IGPU") for d in ggml_devices()):
        est.notes.append("GPU build: CPU-side buffers (pinned host, repack) are not modelled")
        kernels = None
    if kernels is not None and kernels.amx:
        est.notes.append("this CPU build has AMX buffers, which the estimate does not model")
    bufs = host_buffers(info, kernels, use_mmap)
    est.host_extra = bufs.total - info.tensor_bytes
    est.repack_layers = list(bufs.repack_layers)
    est.repack_output = bufs.repack_output


# --- from a catalog card (before download) --------------------------------------------------------
#: bits per weight of the tensors a quantization writes (llama-quant.cpp mixtures)
_QUANT_TYPES = {"Q4_K_M": ("q4_K", "q6_K"), "Q8_0": ("q8_0", "q8_0"), "F16": ("f16", "f16"),
                "Q4_0": ("q4_0", "q6_K"), "Q5_K_M": ("q5_K", "q6_K"), "Q6_K": ("q6_K", "q6_K")}


def estimate_card(card: "ModelCard", quant: str, n_ctx: int | None = None, type_k: str = "f16",
                  type_v: str = "f16", flash_attn: bool = False, swa_full: bool = True,
                  n_ubatch: int = 512) -> Estimate:
    """The same breakdown from catalog numbers: the published file size as weights, split into the
    embeddings (input), the output layer and equal blocks; the KV cache from the architecture."""
    from fmgguf.errors import CatalogError

    check_kv_types(type_k, type_v, flash_attn)
    arch = card.arch
    variant = card.variant(quant)
    size = variant.approx_size
    if arch is None or size is None:
        raise CatalogError(f"{card.id} has no architecture numbers or file size in the catalog",
                           fix="download it (fmgguf pull) and plan from the file, or add `arch:` to the entry")
    n_ctx = int(n_ctx or arch.context_length)
    n_ubatch = min(n_ubatch, n_ctx)
    emb_type, out_type = _QUANT_TYPES.get(quant, ("q8_0", "q8_0"))
    emb = row_bytes(emb_type, pad(arch.n_embd, 256)) * arch.vocab
    out_w = row_bytes(out_type, pad(arch.n_embd, 256)) * arch.vocab
    inp = emb
    out = emb if arch.tied_embeddings else out_w  # tied: token_embd is duplicated onto the output device
    body = max(size - inp - (0 if arch.tied_embeddings else out_w), 0)
    layers = [body // arch.n_layer] * arch.n_layer
    metadata = _card_metadata(card)
    kv = kv_layers_for(arch.name, arch.n_layer, metadata, n_ctx, type_k, type_v, swa_full, n_ubatch, 1, flash_attn)
    mla = arch.n_head * (2 * arch.kv_lora_rank + (arch.rope_dim or 64)) if arch.kv_lora_rank else 0
    compute = compute_formula(arch.vocab, arch.n_embd, arch.n_head, arch.n_ff or 4 * arch.n_embd, n_ctx, n_ubatch,
                              flash_attn, mla)
    return Estimate(arch=arch.name, n_layer=arch.n_layer, n_ctx=pad(n_ctx), type_k=type_k, type_v=type_v,
                    flash_attn=flash_attn, swa_full=swa_full, n_ubatch=n_ubatch, layer_weights=layers,
                    input_weights=inp, output_weights=out, tied_output=arch.tied_embeddings, weights_total=size,
                    kv_layers=kv, compute=compute, output_buffer=4 * arch.vocab, source="catalog",
                    compute_source="formula")


def _card_metadata(card: "ModelCard") -> dict[str, object]:
    """The GGUF keys the KV formula reads, rebuilt from a card's architecture numbers."""
    a = card.arch
    assert a is not None
    p = a.name
    md: dict[str, object] = {f"{p}.embedding_length": a.n_embd, f"{p}.attention.head_count": a.n_head,
                          f"{p}.attention.head_count_kv": a.n_head_kv, f"{p}.attention.key_length": a.head_dim,
                          f"{p}.attention.value_length": a.head_dim_v or a.head_dim}
    if a.kv_lora_rank:  # MLA as the converter writes it: one KV head of latent + rope
        md.update({f"{p}.attention.head_count_kv": 1,
                   f"{p}.attention.key_length": a.kv_lora_rank + (a.rope_dim or 64),
                   f"{p}.attention.value_length": a.kv_lora_rank,
                   f"{p}.attention.key_length_mla": a.head_dim})
    if a.sliding_window:
        md[f"{p}.attention.sliding_window"] = a.sliding_window
    return md
