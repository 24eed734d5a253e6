"""Memory needed by a catalog model, from catalog numbers alone (before any byte is downloaded).

The exact, file-based estimate lives in ``fmgguf.runtime``; this one uses the same KV formula
(llama.cpp's: context padded to 256, K and V rows per layer, MLA caches the latent only, Gemma's
sliding window) with the published file size as the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmgguf.catalog.schema import Architecture, ModelCard

#: bytes per element of the KV cache types llama.cpp accepts (block scales included)
KV_TYPE_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                                   "q4_1": 20 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32, "iq4_nl": 18 / 32}

#: what llama.cpp and the CUDA/Metal runtime take beyond weights, KV and compute (measured order)
RUNTIME_OVERHEAD = 150 * 1024**2


def pad(n: int, to: int = 256) -> int:
    return (n + to - 1) // to * to


def kv_cache_bytes(arch: Architecture, n_ctx: int, type_k: str = "f16", type_v: str = "f16",
                   swa_full: bool = False, n_ubatch: int = 512) -> int:
    """KV cache size llama.cpp allocates for ``n_ctx`` tokens (one sequence)."""
    bk, bv = KV_TYPE_BYTES[type_k], KV_TYPE_BYTES[type_v]
    cells = pad(n_ctx)
    if arch.kv_lora_rank:  # MLA: K holds the latent + rope part, no V
        per_token_layer = (arch.kv_lora_rank + (arch.rope_dim or 64)) * bk
        return int(cells * arch.n_layer * per_token_layer)
    per_token_layer = arch.n_head_kv * (arch.head_dim * bk + (arch.head_dim_v or arch.head_dim) * bv)
    if arch.sliding_window and not swa_full:
        # gemma2: every other layer local; gemma3: 5 of 6 layers local
        n_swa_layers = arch.n_layer // 2 if arch.name == "gemma2" else arch.n_layer - arch.n_layer // 6
        cells_swa = min(cells, pad(arch.sliding_window + n_ubatch))
        return int(per_token_layer * (cells * (arch.n_layer - n_swa_layers) + cells_swa * n_swa_layers))
    return int(cells * arch.n_layer * per_token_layer)


def compute_buffer_bytes(arch: Architecture, n_ctx: int, n_ubatch: int = 512) -> int:
    """A rough compute-buffer size: logits for a ubatch plus the attention scores (no flash-attn)."""
    logits = 4 * arch.vocab * n_ubatch
    scores = 4 * pad(n_ctx) * min(n_ubatch, 512) * arch.n_head // 8
    return int(max(logits, scores) + 4 * n_ubatch * (arch.n_embd * 4 + (arch.n_ff or 4 * arch.n_embd)))


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int | None
    kv_cache: int
    compute: int
    overhead: int

    @property
    def total(self) -> int | None:
        return None if self.weights is None else self.weights + self.kv_cache + self.compute + self.overhead

    def as_dict(self) -> dict:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "compute": self.compute,
                "overhead": self.overhead, "total": self.total}


def estimate_card(card: ModelCard, quant: str, n_ctx: int = 4096, type_k: str = "f16", type_v: str = "f16") -> MemoryEstimate:
    """Memory to run ``card`` fully on one device at ``n_ctx`` (weights = the published file size)."""
    variant = card.variant(quant)
    if card.arch is None:  # a user entry without architecture numbers: weights only
        return MemoryEstimate(weights=variant.approx_size, kv_cache=0, compute=0, overhead=RUNTIME_OVERHEAD)
    return MemoryEstimate(
        weights=variant.approx_size,
        kv_cache=kv_cache_bytes(card.arch, n_ctx, type_k, type_v),
        compute=compute_buffer_bytes(card.arch, n_ctx),
        overhead=RUNTIME_OVERHEAD,
    )
