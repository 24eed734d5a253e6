"""Write a tiny, random-weight but real llama.cpp GGUF (F16) for a :class:`TinySpec`.

The tokenizer (tokens, merges/scores, special ids, template) is copied from one of llama.cpp's
vocab-only GGUFs, so tokenization is real; the weights are seeded Gaussian noise (deterministic
per tensor name and seed), so the text is gibberish but every code path of loading, offload,
quantization and generation is exercised for real.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fmgguf.tiny.tiny_specs import QWEN25_EXTRA_TOKENS, TEMPLATES, TinySpec

_CONTROL = 3  # llama.cpp token type


def _copy_tokenizer(writer, spec: TinySpec, vocab_path: Path) -> int:
    """Copy every ``tokenizer.*`` key of the vocab file; returns the vocabulary size."""
    import gguf

    from fmgguf.tiny.vocab import read_kv

    fields = {k: v for k, v in read_kv(vocab_path).items() if k.startswith("tokenizer.")}
    tokens: list[str] = fields["tokenizer.ggml.tokens"][0]  # type: ignore[assignment]
    if spec.vocab == "qwen2":
        types: list[int] = fields["tokenizer.ggml.token_type"][0]  # type: ignore[assignment]
        for tid, text in QWEN25_EXTRA_TOKENS.items():
            tokens[tid] = text
            types[tid] = _CONTROL
    template = TEMPLATES.get(spec.chat_template)
    if template is not None:
        fields["tokenizer.chat_template"] = (template, gguf.GGUFValueType.STRING, None)
    for name, (value, vtype, sub) in fields.items():
        writer.add_key_value(name, value, gguf.GGUFValueType(vtype),
                             sub_type=None if sub is None else gguf.GGUFValueType(sub))
    if spec.fim:
        index = {text: i for i, text in enumerate(tokens)}
        for role, text in spec.fim.items():
            writer.add_uint32(f"tokenizer.ggml.fim_{role}_token_id", index[text])
    return len(tokens)


def _metadata(writer, spec: TinySpec, n_vocab: int) -> None:
    a = spec.arch
    writer.add_name(f"tiny-{a}-{spec.size}")
    writer.add_string("general.description", "fmgguf tiny test model: random weights, real tokenizer")
    writer.add_string("general.license", "apache-2.0")
    writer.add_uint32("general.file_type", 1)  # mostly F16
    writer.add_uint32(f"{a}.context_length", spec.context_length)
    writer.add_uint32(f"{a}.embedding_length", spec.n_embd)
    writer.add_uint32(f"{a}.block_count", spec.n_layer)
    writer.add_uint32(f"{a}.feed_forward_length", spec.n_ff)
    writer.add_uint32(f"{a}.attention.head_count", spec.n_head)
    writer.add_uint32(f"{a}.attention.head_count_kv", spec.n_head_kv)
    writer.add_float32(f"{a}.rope.freq_base", spec.rope_base)
    writer.add_uint32(f"{a}.vocab_size", n_vocab)
    if a == "starcoder2":
        writer.add_float32(f"{a}.attention.layer_norm_epsilon", spec.norm_eps)
    else:
        writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.norm_eps)
    if a == "deepseek2":
        writer.add_uint32(f"{a}.rope.dimension_count", spec.rope_dim)
        writer.add_uint32(f"{a}.attention.key_length", spec.kv_lora_rank + spec.rope_dim)  # MQA view of the latent
        writer.add_uint32(f"{a}.attention.value_length", spec.kv_lora_rank)
        writer.add_uint32(f"{a}.attention.key_length_mla", spec.head_dim)
        writer.add_uint32(f"{a}.attention.value_length_mla", spec.v_head_dim)
        writer.add_uint32(f"{a}.attention.q_lora_rank", spec.q_lora_rank)
        writer.add_uint32(f"{a}.attention.kv_lora_rank", spec.kv_lora_rank)
        writer.add_uint32(f"{a}.leading_dense_block_count", spec.n_dense_lead)
        writer.add_uint32(f"{a}.expert_count", spec.n_expert)
        writer.add_uint32(f"{a}.expert_used_count", spec.n_expert_used)
        writer.add_uint32(f"{a}.expert_shared_count", spec.n_expert_shared)
        writer.add_uint32(f"{a}.expert_feed_forward_length", spec.n_ff_exp)
        writer.add_float32(f"{a}.expert_weights_scale", 1.0)
        writer.add_bool(f"{a}.expert_weights_norm", False)
        writer.add_uint32(f"{a}.expert_gating_func", 1)  # softmax
    else:
        writer.add_uint32(f"{a}.rope.dimension_count", spec.head_dim)
        writer.add_uint32(f"{a}.attention.key_length", spec.head_dim)
        writer.add_uint32(f"{a}.attention.value_length", spec.head_dim)
    if spec.sliding_window:
        writer.add_uint32(f"{a}.attention.sliding_window", spec.sliding_window)


def tensor_shapes(spec: TinySpec, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) of every tensor, in file order. numpy shape = reversed ggml ne."""
    e = spec.n_embd
    yield "token_embd.weight", (n_vocab, e)
    for i in range(spec.n_layer):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (e,)
        if spec.arch == "starcoder2":
            yield b + "attn_norm.bias", (e,)
        for name, shape in _attention_shapes(spec):
            yield b + name, shape
        yield b + "ffn_norm.weight", (e,)
        for name, shape in _ffn_shapes(spec, i):
            yield b + name, shape
    yield "output_norm.weight", (e,)
    if spec.arch == "starcoder2":
        yield "output_norm.bias", (e,)
    if not spec.tied:
        yield "output.weight", (n_vocab, e)


def _attention_shapes(spec: TinySpec) -> Iterator[tuple[str, tuple[int, ...]]]:
    """One layer's attention tensors after attn_norm, names without the ``blk.N.`` prefix."""
    e, hd = spec.n_embd, spec.head_dim
    q, kv = spec.n_head * hd, spec.n_head_kv * hd
    if spec.arch == "deepseek2":
        r, lk, nope = spec.q_lora_rank, spec.kv_lora_rank, spec.head_dim - spec.rope_dim
        yield "attn_q_a_norm.weight", (r,)
        yield "attn_kv_a_norm.weight", (lk,)
        yield "attn_q_a.weight", (r, e)
        yield "attn_q_b.weight", (spec.n_head * hd, r)
        yield "attn_kv_a_mqa.weight", (lk + spec.rope_dim, e)
        yield "attn_k_b.weight", (spec.n_head, lk, nope)
        yield "attn_v_b.weight", (spec.n_head, spec.v_head_dim, lk)
        yield "attn_output.weight", (e, spec.n_head * spec.v_head_dim)
    else:
        yield "attn_q.weight", (q, e)
        yield "attn_k.weight", (kv, e)
        yield "attn_v.weight", (kv, e)
        if spec.arch in ("qwen2", "starcoder2"):
            yield "attn_q.bias", (q,)
            yield "attn_k.bias", (kv,)
            yield "attn_v.bias", (kv,)
        yield "attn_output.weight", (e, q)
    if spec.arch == "starcoder2":
        yield "attn_output.bias", (e,)
    if spec.arch == "gemma3":
        yield "attn_q_norm.weight", (hd,)
        yield "attn_k_norm.weight", (hd,)
        yield "post_attention_norm.weight", (e,)


def _ffn_shapes(spec: TinySpec, layer: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Layer ``layer``'s feed-forward tensors after ffn_norm, names without the ``blk.N.`` prefix."""
    e, ff = spec.n_embd, spec.n_ff
    if spec.arch == "starcoder2":
        yield "ffn_norm.bias", (e,)
        yield "ffn_up.weight", (ff, e)
        yield "ffn_up.bias", (ff,)
        yield "ffn_down.weight", (e, ff)
        yield "ffn_down.bias", (e,)
    elif spec.arch == "deepseek2" and layer >= spec.n_dense_lead:
        n, fe, sh = spec.n_expert, spec.n_ff_exp, spec.n_ff_exp * spec.n_expert_shared
        yield "ffn_gate_inp.weight", (n, e)
        yield "ffn_gate_exps.weight", (n, fe, e)
        yield "ffn_up_exps.weight", (n, fe, e)
        yield "ffn_down_exps.weight", (n, e, fe)
        yield "ffn_gate_shexp.weight", (sh, e)
        yield "ffn_up_shexp.weight", (sh, e)
        yield "ffn_down_shexp.weight", (e, sh)
    else:
        yield "ffn_gate.weight", (ff, e)
        yield "ffn_up.weight", (ff, e)
        yield "ffn_down.weight", (e, ff)
    if spec.arch == "gemma3":
        yield "post_ffw_norm.weight", (e,)


def _values(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith("norm.weight"):
        # GGUF norm weights are multiplicative (gemma's "w - 1" is undone by the converter)
        return (1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if name.endswith(".bias") or name.endswith("ffn_gate_inp.weight"):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    fan_in = shape[-1]
    std = 0.02 if name == "token_embd.weight" else 1.0 / np.sqrt(fan_in)
    return (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)


def write_f16(spec: TinySpec, vocab_path: Path, out: Path, seed: int = 0) -> None:
    """Write the F16 model to ``out`` (the caller renames it into place)."""
    import gguf

    writer = gguf.GGUFWriter(str(out), spec.arch)
    n_vocab = _copy_tokenizer(writer, spec, vocab_path)
    _metadata(writer, spec, n_vocab)
    tensors = [(name, _values(name, shape, seed)) for name, shape in tensor_shapes(spec, n_vocab)]
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
