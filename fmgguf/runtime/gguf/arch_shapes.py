"""The tensor shapes llama.cpp's loader expects, derived from a GGUF's metadata, per architecture.

Each dimension carries the metadata key it comes from, so a mismatch names the key that lies
(``llama.embedding_length``), not only the tensor. Mirrors ``load_arch_tensors`` of llama.cpp's
src/models/{llama,qwen2,starcoder2,gemma,gemma3,deepseek2}.cpp in llama-cpp-python 0.3.36.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeGuard

from fmgguf._util import json_int
from fmgguf.runtime.gguf.gguf_info import GGUFInfo

#: architectures whose attn_q/attn_output are n_embd wide whatever the head count
Q_IS_EMBD = frozenset({"qwen2", "starcoder2"})


@dataclass(frozen=True)
class Hparams:
    """The hyperparameters the shapes come from, read and checked by :mod:`fmgguf.runtime.gguf.validation`."""

    n_layer: int
    n_embd: int
    n_vocab: int | None
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_ff: tuple[int, ...]
    head_k: int
    head_v: int
    n_rot: int
    explicit_head_k: bool


@dataclass(frozen=True)
class Dim:
    """One expected tensor dimension: its size and the metadata key it comes from."""

    size: int | None  # None: not known (not checked)
    field: str
    how: str = ""


def mla_key_length(info: GGUFInfo) -> int:
    mla = info.key("attention.key_length_mla")
    return mla if _is_int(mla) and mla > 0 else json_int(info.key("attention.key_length") or 0)



def _dense_shapes(info: GGUFInfo, hp: Hparams) -> Iterator[tuple[str, tuple[Dim, ...]]]:
    a = info.arch
    E = Dim(hp.n_embd, f"{a}.embedding_length")
    V = Dim(hp.n_vocab, "tokenizer.ggml.tokens", "the vocabulary size")
    yield "token_embd.weight", (E, V)
    yield "output.weight", (E, V)
    yield "output_norm.weight", (E,)
    yield "output_norm.bias", (E,)
    heads = f"{a}.attention.key_length" if hp.explicit_head_k else f"{a}.attention.head_count"
    for il in range(hp.n_layer):
        h, kv, ff = hp.n_head[il], hp.n_head_kv[il], hp.n_ff[il]
        b = f"blk.{il}."
        for norm in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"):
            yield b + norm + ".weight", (E,)
            yield b + norm + ".bias", (E,)
        if h:
            Q = E if a in Q_IS_EMBD else Dim(h * hp.head_k, heads, f"{h} heads × {hp.head_k}")
            K = Dim(kv * hp.head_k, f"{a}.attention.head_count_kv", f"{kv} KV heads × {hp.head_k}")
            Vv = Dim(kv * hp.head_v, f"{a}.attention.head_count_kv", f"{kv} KV heads × {hp.head_v}")
            yield b + "attn_q.weight", (E, Q)
            yield b + "attn_k.weight", (E, K)
            yield b + "attn_v.weight", (E, Vv)
            yield b + "attn_q.bias", (Q,)
            yield b + "attn_k.bias", (K,)
            yield b + "attn_v.bias", (Vv,)
            yield b + "attn_output.weight", (Q, E)
            yield b + "attn_output.bias", (E,)
            hk = Dim(hp.head_k, heads, "the key head size")
            yield b + "attn_q_norm.weight", (hk,)
            yield b + "attn_k_norm.weight", (hk,)
        if ff:
            F = Dim(ff, f"{a}.feed_forward_length")
            yield b + "ffn_gate.weight", (E, F)
            yield b + "ffn_up.weight", (E, F)
            yield b + "ffn_down.weight", (F, E)
            yield b + "ffn_gate.bias", (F,)
            yield b + "ffn_up.bias", (F,)
            yield b + "ffn_down.bias", (E,)


def _deepseek2_shapes(info: GGUFInfo, hp: Hparams) -> Iterator[tuple[str, tuple[Dim, ...]]]:
    a = info.arch
    E = Dim(hp.n_embd, f"{a}.embedding_length")
    V = Dim(hp.n_vocab, "tokenizer.ggml.tokens", "the vocabulary size")
    yield "token_embd.weight", (E, V)
    yield "output.weight", (E, V)
    yield "output_norm.weight", (E,)

    def key(suffix: str) -> int | None:
        v = info.key(suffix)
        return int(v) if _is_int(v) else None

    H = hp.n_head[0]
    hk = mla_key_length(info)
    hv = key("attention.value_length_mla") or hp.head_v
    rot = hp.n_rot
    ql = Dim(key("attention.q_lora_rank"), f"{a}.attention.q_lora_rank")
    kvl_size = key("attention.kv_lora_rank")
    kvl = Dim(kvl_size, f"{a}.attention.kv_lora_rank")
    qk = Dim(H * hk, f"{a}.attention.key_length_mla", f"{H} heads × {hk}")
    n_expert = key("expert_count") or 0
    NE = Dim(n_expert, f"{a}.expert_count")
    fe = key("expert_feed_forward_length")
    FE = Dim(fe, f"{a}.expert_feed_forward_length")
    shared = key("expert_shared_count")
    SH = Dim(fe * shared if fe is not None and shared is not None else None, f"{a}.expert_shared_count")
    dense = key("leading_dense_block_count") or 0
    for il in range(hp.n_layer):
        b = f"blk.{il}."
        yield b + "attn_norm.weight", (E,)
        yield b + "ffn_norm.weight", (E,)
        yield b + "attn_q_a_norm.weight", (ql,)
        yield b + "attn_kv_a_norm.weight", (kvl,)
        yield b + "attn_q_a.weight", (E, ql)
        yield b + "attn_q_b.weight", (ql, qk)
        yield b + "attn_q.weight", (E, qk)
        yield b + "attn_kv_a_mqa.weight", (E, Dim(kvl_size + rot if kvl_size is not None else None,
                                                  f"{a}.rope.dimension_count", f"kv_lora_rank + {rot} rope dims"))
        yield b + "attn_k_b.weight", (Dim(hk - rot, f"{a}.attention.key_length_mla", f"{hk} - {rot} rope dims"), kvl,
                                      Dim(H, f"{a}.attention.head_count"))
        yield b + "attn_v_b.weight", (kvl, Dim(hv, f"{a}.attention.value_length_mla"), Dim(H, f"{a}.attention.head_count"))
        yield b + "attn_output.weight", (Dim(H * hv, f"{a}.attention.value_length_mla", f"{H} heads × {hv}"), E)
        if il < dense:
            F = Dim(hp.n_ff[il], f"{a}.feed_forward_length")
            yield b + "ffn_gate.weight", (E, F)
            yield b + "ffn_up.weight", (E, F)
            yield b + "ffn_down.weight", (F, E)
        else:
            yield b + "ffn_gate_inp.weight", (E, NE)
            yield b + "ffn_gate_exps.weight", (E, FE, NE)
            yield b + "ffn_up_exps.weight", (E, FE, NE)
            yield b + "ffn_down_exps.weight", (FE, E, NE)
            yield b + "ffn_gate_shexp.weight", (E, SH)
            yield b + "ffn_up_shexp.weight", (E, SH)
            yield b + "ffn_down_shexp.weight", (SH, E)


def expected_shapes(info: GGUFInfo, hp: Hparams) -> dict[str, tuple[Dim, ...]]:
    """tensor name -> expected ggml shape (ne0 first), for the tensors of this architecture we know."""
    return dict(_deepseek2_shapes(info, hp) if info.arch == "deepseek2" else _dense_shapes(info, hp))


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)
