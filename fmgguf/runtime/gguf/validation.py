"""What a GGUF's metadata claims, checked against its tensors the way llama.cpp's loader uses them.

:mod:`fmgguf.runtime.gguf.gguf_file` checks that the file is well-formed. This module checks that it
is *loadable*: every hyperparameter llama.cpp turns into a shape or a float (``load_hparams`` in
src/llama-model.cpp and the per-architecture ``load_arch_hparams``/``load_arch_tensors`` in
src/models/ of llama-cpp-python 0.3.36's vendored llama.cpp). Several lies there are not refused
cleanly by llama.cpp but abort the whole process, at load (``GGML_ASSERT`` in the loader or the
graph) or only at the first decode (a NaN or negative norm epsilon, an odd or too-large rope
dimension count): those are exactly the ones a Python check must catch before llama.cpp sees the
file. Each problem names the metadata key (or tensor) that is wrong.

Checks that need the tensor layout of an architecture (widths, head counts, rope dimensions) run
for the architectures we ship and test (:data:`SHAPED_ARCHES`); the rest (counts, floats, block
coverage, experts) hold for every architecture, and llama.cpp's own dry run covers the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeGuard

from fmgguf.runtime.gguf.arch_shapes import Q_IS_EMBD, Dim, Hparams, expected_shapes, mla_key_length
from fmgguf.runtime.gguf.gguf_info import GGUFArray, GGUFInfo

#: llama-hparams.h
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
#: llama-model.cpp LLAMA_ROPE_SCALING_TYPES (anything else trips GGML_ASSERT at load)
ROPE_SCALING_TYPES = frozenset({"none", "linear", "yarn", "longrope"})
#: architectures whose tensor shapes we derive from the metadata (catalog + tiny test models)
SHAPED_ARCHES = frozenset({"llama", "qwen2", "qwen3", "starcoder2", "gemma", "gemma2", "gemma3", "deepseek2"})
#: the norm epsilon key each of them requires (llama.cpp: "key not found" otherwise)
_EPS_KEY = {"starcoder2": "attention.layer_norm_epsilon"}
_RMS_EPS = "attention.layer_norm_rms_epsilon"
#: graph builders that GGML_ASSERT(n_embd_head == n_rot) (llama.cpp's loader throws for llama)
_ROT_IS_HEAD = frozenset({"llama", "qwen2", "qwen3", "starcoder2"})
#: float keys that must be > 0 (norm epsilons: ggml asserts eps >= 0 at the first decode; a rope
#: base of 0 or less makes every rotation NaN)
_POSITIVE_FLOATS = ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "rope.freq_base",
                    "rope.freq_base_swa")
_NON_NEGATIVE_FLOATS = ("rope.scaling.factor", "rope.scale_linear", "final_logit_softcapping",
                        "attn_logit_softcapping", "attention.scale")


@dataclass(frozen=True)
class Problem:
    """One thing llama.cpp would refuse or abort on: the metadata key (or tensor) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field} {self.message}"


class _Collect:
    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.items: list[Problem] = []
        self._fields: set[str] = set()

    def add(self, field: str, message: str) -> None:
        if field not in self._fields:  # one problem per field: a wrong width breaks many tensors
            self._fields.add(field)
            self.items.append(Problem(field, message))


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: object) -> TypeGuard[float]:
    return isinstance(v, float) or _is_int(v)


def check_model(info: GGUFInfo, tensors: bool = True) -> list[Problem]:
    """Everything the file claims that llama.cpp would refuse or abort on (empty: loadable).

    ``tensors=False`` leaves out what needs the whole tensor table (block coverage, shapes): for a
    part of a gguf-split model whose other parts are not at hand."""
    out = _Collect(info.arch)
    _check_counts(info, out)
    _check_floats(info, out)
    if out.items:  # the numbers below divide by and multiply these: stop at the first broken ones
        return out.items
    hp = _hparams(info, out)
    if hp is None or out.items:
        return out.items
    if info.arch in SHAPED_ARCHES:  # head layouts differ (attention-free layers, MLA views) elsewhere
        _check_heads_and_rope(info, hp, out)
    _check_experts(info, hp, out)
    if tensors:
        _check_blocks(info, out)
    if tensors and not out.items and info.arch in SHAPED_ARCHES:
        _check_shapes(info, hp, out)
    return out.items


# --- counts and floats ---------------------------------------------------------------------------
def _check_counts(info: GGUFInfo, out: _Collect) -> None:
    a = info.arch
    n_layer = info.key("block_count")
    if not _is_int(n_layer) or not 0 < n_layer <= LLAMA_MAX_LAYERS:
        out.add(f"{a}.block_count", f"is {n_layer!r}; llama.cpp needs 1 to {LLAMA_MAX_LAYERS} (it aborts otherwise)")
    ctx = info.key("context_length")
    if not _is_int(ctx) or ctx <= 0:
        out.add(f"{a}.context_length", f"is {ctx!r}; llama.cpp needs a positive integer")
    rope_type = info.key("rope.scaling.type")
    if rope_type is not None and rope_type not in ROPE_SCALING_TYPES:
        out.add(f"{a}.rope.scaling.type", f"is {rope_type!r}; llama.cpp knows {', '.join(sorted(ROPE_SCALING_TYPES))} "
                "(it aborts otherwise)")
    if a in SHAPED_ARCHES:
        eps_key = _EPS_KEY.get(a, _RMS_EPS)
        if info.key(eps_key) is None:
            out.add(f"{a}.{eps_key}", "is missing; llama.cpp requires it for this architecture")


def _check_floats(info: GGUFInfo, out: _Collect) -> None:
    prefix = f"{info.arch}."
    for key, value in info.metadata.items():
        if not key.startswith(prefix) or isinstance(value, GGUFArray):
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            out.add(key, f"is {bad[0]!r}; llama.cpp needs a finite number (NaN/inf poison or abort the first decode)")
    for suffix in _POSITIVE_FLOATS:
        v = info.key(suffix)
        if v is not None and (not _is_float(v) or not v > 0):
            out.add(prefix + suffix, f"is {v!r}; it must be a positive number (llama.cpp aborts at the first decode)")
    for suffix in _NON_NEGATIVE_FLOATS:
        v = info.key(suffix)
        if v is not None and (not _is_float(v) or not v >= 0):
            out.add(prefix + suffix, f"is {v!r}; it must be zero or positive")


# --- hyperparameters -----------------------------------------------------------------------------
def _per_layer(info: GGUFInfo, suffix: str, n_layer: int, default: tuple[int, ...] | None,
               out: _Collect) -> tuple[int, ...] | None:
    """A scalar-or-per-layer integer key as one value per layer (llama.cpp's get_key_or_arr)."""
    field = f"{info.arch}.{suffix}"
    v = info.key(suffix)
    if v is None:
        return default
    if isinstance(v, list):
        if len(v) != n_layer:
            out.add(field, f"has {len(v)} values but block_count is {n_layer} (llama.cpp refuses the file)")
            return None
        values = v
    else:
        values = [v] * n_layer
    if not all(_is_int(x) and 0 <= x < 1 << 31 for x in values):
        out.add(field, f"is {v!r}; llama.cpp needs non-negative integers")
        return None
    return tuple(values)


def _optional_int(info: GGUFInfo, suffix: str, out: _Collect) -> int | None:
    v = info.key(suffix)
    if v is None:
        return None
    if not _is_int(v) or not 0 < v < 1 << 31:
        out.add(f"{info.arch}.{suffix}", f"is {v!r}; llama.cpp needs a positive integer")
        return None
    return v


def _hparams(info: GGUFInfo, out: _Collect) -> Hparams | None:
    n_layer, n_embd = info.n_layer, info.n_embd
    n_head = _per_layer(info, "attention.head_count", n_layer, (0,) * n_layer, out)
    n_head_kv = _per_layer(info, "attention.head_count_kv", n_layer, n_head, out)
    n_ff = _per_layer(info, "feed_forward_length", n_layer, (0,) * n_layer, out)
    key_len = _optional_int(info, "attention.key_length", out)
    val_len = _optional_int(info, "attention.value_length", out)
    if n_head is None or n_head_kv is None or n_ff is None or out.items:
        return None
    head0 = n_head[0]
    head_k = key_len or (n_embd // head0 if head0 else 0)
    head_v = val_len or (n_embd // head0 if head0 else 0)
    rot = info.key("rope.dimension_count", head_k)
    if not _is_int(rot) or rot < 0:
        out.add(f"{info.arch}.rope.dimension_count", f"is {rot!r}; llama.cpp needs a non-negative integer")
        return None
    toks = info.metadata.get("tokenizer.ggml.tokens")
    return Hparams(n_layer, n_embd, len(toks) if toks is not None else None, n_head, n_head_kv, n_ff,
                   head_k, head_v, rot, key_len is not None)


def _check_heads_and_rope(info: GGUFInfo, hp: Hparams, out: _Collect) -> None:
    a = info.arch
    if not any(hp.n_head):
        out.add(f"{a}.attention.head_count", "is missing or 0; this architecture needs attention heads")
        return
    for il, (h, kv) in enumerate(zip(hp.n_head, hp.n_head_kv, strict=True)):
        if not h:
            continue
        if kv == 0 or kv > h or h % kv:
            where = f" (layer {il})" if len(set(hp.n_head_kv)) > 1 else ""
            out.add(f"{a}.attention.head_count_kv", f"is {kv}{where}; it must divide attention.head_count {h} "
                    "(llama.cpp aborts building the attention graph)")
            break
    if not hp.explicit_head_k and hp.n_embd % hp.n_head[0]:
        out.add(f"{a}.attention.head_count", f"is {hp.n_head[0]}, which does not divide embedding_length "
                f"{hp.n_embd} and no attention.key_length is given")
    if hp.head_k == 0 or hp.head_v == 0:
        out.add(f"{a}.attention.key_length", "is 0: heads need a size")
        return
    if a in Q_IS_EMBD and hp.n_head[0] * hp.head_k != hp.n_embd:
        out.add(f"{a}.attention.head_count", f"× key head size is {hp.n_head[0]} × {hp.head_k}, but {a}'s query "
                f"is embedding_length {hp.n_embd} wide (llama.cpp aborts building the attention graph)")
    head = mla_key_length(info) if a == "deepseek2" else hp.head_k
    field = f"{a}.rope.dimension_count"
    if hp.n_rot % 2:
        out.add(field, f"is {hp.n_rot}, an odd number; llama.cpp's rope aborts at the first decode")
    elif a == "deepseek2" and hp.n_rot >= head:
        out.add(field, f"is {hp.n_rot}, not below the key head size {head} (llama.cpp aborts at load)")
    elif hp.n_rot > head:
        out.add(field, f"is {hp.n_rot}, more than the key head size {head}; llama.cpp's rope aborts at the first decode")
    elif a in _ROT_IS_HEAD and hp.n_rot != head:
        out.add(field, f"is {hp.n_rot}, but {a} rotates whole heads of {head} (llama.cpp refuses or aborts)")


def _check_experts(info: GGUFInfo, hp: Hparams, out: _Collect) -> None:
    a = info.arch
    n_expert = info.key("expert_count", 0)
    used = _per_layer(info, "expert_used_count", hp.n_layer, (0,) * hp.n_layer, out)
    if not _is_int(n_expert) or not 0 <= n_expert <= LLAMA_MAX_EXPERTS:
        out.add(f"{a}.expert_count", f"is {n_expert!r}; llama.cpp allows 0 to {LLAMA_MAX_EXPERTS} (it aborts otherwise)")
        return
    if used is None:
        return
    top = max(used, default=0)
    if top > n_expert:
        out.add(f"{a}.expert_used_count", f"is {top}, more than expert_count {n_expert} (llama.cpp aborts)")
    elif n_expert and not top:
        out.add(f"{a}.expert_used_count", f"is missing or 0 with {n_expert} experts (llama.cpp aborts)")


def _check_blocks(info: GGUFInfo, out: _Collect) -> None:
    """Every block below block_count has tensors; no tensors sit in blocks past it (nextn layers aside)."""
    n_layer = info.n_layer
    nextn = info.key("nextn_predict_layers", 0)
    present = {t.layer for t in info.tensors if t.layer is not None}
    extra = sorted(i for i in present if i >= n_layer + (nextn if _is_int(nextn) else 0))
    field = f"{info.arch}.block_count"
    if extra:
        out.add(field, f"is {n_layer}, but the file has tensors for block {extra[0]}")
        return
    if _is_int(nextn) and nextn > 0:
        return  # MTP-only or trunk-only files leave some blocks out on purpose
    missing = [i for i in range(n_layer) if i not in present]
    if missing:
        have = len(set(range(n_layer)) & present)
        out.add(field, f"is {n_layer}, but the file has tensors for only {have} of them (block {missing[0]} is "
                "missing; llama.cpp refuses or aborts)")


# --- tensor shapes ---------------------------------------------------------------------------------
def _check_shapes(info: GGUFInfo, hp: Hparams, out: _Collect) -> None:
    expected = expected_shapes(info, hp)
    for t in info.tensors:
        dims = expected.get(t.name)
        if dims is None:
            continue
        got = tuple(t.shape) + (1,) * (4 - len(t.shape))
        want = tuple(dims) + (Dim(1, t.name),) * (4 - len(dims))
        for i, d in enumerate(want):
            if d.size is not None and got[i] != d.size:
                how = f" ({d.how})" if d.how else ""
                out.add(d.field, f"disagrees with tensor {t.name}: its dimension {i} is {got[i]}, "
                        f"the metadata makes it {d.size}{how}; llama.cpp refuses or aborts on the file")
                break
