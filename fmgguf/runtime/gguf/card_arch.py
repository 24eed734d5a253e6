"""The catalog's architecture numbers and parameter counts, read from a parsed GGUF header.

One reader for everyone who turns a file into a catalog card: `fmgguf info` for a downloaded
user model, the converter's catalog entry, the tiny test models' cards.
"""

from __future__ import annotations

from fmgguf._util import JsonObject, json_int
from fmgguf.runtime.gguf.gguf_info import GGUFInfo


def _int(value: object) -> int | None:
    if isinstance(value, list):  # per-layer values (head counts, FFN widths): the largest
        value = max(value) if value else None
    return json_int(value) if value is not None else None


def card_numbers(info: GGUFInfo) -> tuple[JsonObject, dict[str, int]]:
    """(``arch`` block valid for the catalog schema, ``parameters`` {total, active})."""
    n_embd, n_head = _int(info.key("embedding_length")), _int(info.key("attention.head_count"))
    n_head_kv = _int(info.key("attention.head_count_kv")) or n_head
    head_dim = _int(info.key("attention.key_length_mla")) or _int(info.key("attention.key_length")) \
        or (n_embd // n_head if n_embd and n_head else None)
    head_dim_v = _int(info.key("attention.value_length_mla")) or _int(info.key("attention.value_length"))
    names = {t.name for t in info.tensors}
    arch: JsonObject = {
        "name": info.arch,
        "n_layer": _int(info.key("block_count")),
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "head_dim": head_dim,
        "n_ff": _int(info.key("feed_forward_length")) or None,
        "vocab": info.n_vocab,
        "context_length": info.n_ctx_train,
        "tied_embeddings": "output.weight" not in names,
    }
    if head_dim_v and head_dim_v != head_dim:
        arch["head_dim_v"] = head_dim_v
    rope = _int(info.key("rope.dimension_count"))
    if rope and rope != head_dim:
        arch["rope_dim"] = rope
    for key, name in (("attention.kv_lora_rank", "kv_lora_rank"), ("attention.sliding_window", "sliding_window")):
        if _int(info.key(key)):
            arch[name] = _int(info.key(key))
    total = info.n_params
    active = total
    n_expert, n_used = _int(info.key("expert_count")), _int(info.key("expert_used_count"))
    if n_expert and n_used:
        moe: dict[str, int | None] = {"n_expert": n_expert, "n_expert_used": n_used,
                                      "n_expert_shared": _int(info.key("expert_shared_count")) or 0}
        arch["moe"] = moe
        if _int(info.key("expert_feed_forward_length")):
            moe["expert_ff"] = _int(info.key("expert_feed_forward_length"))
        expert = 0
        for t in info.tensors:
            if "_exps." in t.name:
                n = 1
                for d in t.shape:
                    n *= d
                expert += n
        active = total - expert + expert * n_used // n_expert
    return arch, {"total": total, "active": max(active, 1)}
