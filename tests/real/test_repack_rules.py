"""Which weights llama.cpp repacks into CPU_REPACK, per CPU (the rules of ggml-cpu/repack.cpp), and what the
CPU's model buffers come to with and without mmap, on a small GGUF written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmgguf.runtime.gguf.gguf_file import TensorInfo, read_gguf
from fmgguf.runtime.plan.repack import CpuKernels, host_buffers, pad, repack_interleave, repacked

AVX2 = CpuKernels(frozenset({"AVX2", "REPACK"}))
AVX512 = CpuKernels(frozenset({"AVX2", "AVX512", "REPACK"}))
ARM_DOT = CpuKernels(frozenset({"NEON", "DOTPROD", "REPACK"}))
NO_REPACK = CpuKernels(frozenset({"AVX2"}))


def test_the_repack_table() -> None:
    assert [repack_interleave(t, AVX2) for t in ("Q4_0", "Q4_K", "IQ4_NL", "MXFP4")] == [8, 8, 8, 8]
    assert [repack_interleave(t, AVX2) for t in ("Q4_1", "Q8_0", "Q5_K", "Q6_K", "Q2_K", "F16")] == [None] * 6
    assert repack_interleave("Q2_K", AVX512) == 8
    assert [repack_interleave(t, ARM_DOT) for t in ("Q4_0", "Q8_0", "IQ4_NL", "Q4_K", "Q6_K")] == [4, 4, 4, 8, 8]


def test_only_matmul_weights_with_whole_row_groups_are_repacked() -> None:
    def t(name: str, shape: tuple, type_: str = "Q4_0") -> TensorInfo:
        return TensorInfo(name, shape, type_, 0, 1024)

    assert repacked(t("blk.0.attn_q.weight", (576, 576)), AVX2)
    assert not repacked(t("blk.0.attn_k.weight", (576, 196)), AVX2)  # 196 rows: not a multiple of 8
    assert repacked(t("blk.0.attn_k.weight", (576, 196)), ARM_DOT)  # a multiple of 4 is enough there
    assert not repacked(t("token_embd.weight", (576, 49152)), AVX2)  # GET_ROWS, not a matmul
    assert not repacked(t("blk.0.attn_norm.weight", (576,), "F32"), AVX2)
    assert repacked(t("blk.0.ffn_up_exps.weight", (576, 1536, 8)), AVX2)  # MUL_MAT_ID
    assert not repacked(t("blk.0.attn_q.weight", (576, 576)), NO_REPACK)  # built without the repack code


def test_host_buffers_with_and_without_mmap(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(96)
    w.add_head_count(1)
    w.add_context_length(128)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(0)
    tensors = {"token_embd.weight": (64, 32), "blk.0.attn_q.weight": (32, 32), "blk.0.attn_norm.weight": (32,),
               "blk.0.ffn_up.weight": (96, 32)}
    for name, shape in tensors.items():  # numpy order (rows, cols)
        data = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 2:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_gguf(path)
    by_name = {t.name: t for t in info.tensors}
    q, up = by_name["blk.0.attn_q.weight"], by_name["blk.0.ffn_up.weight"]
    # tied output (no output.weight): a Q4_0 token_embd of 64 rows is duplicated into CPU_REPACK as the output
    emb = by_name["token_embd.weight"]
    mm = host_buffers(info, AVX2, use_mmap=True)
    assert mm.repack == pad(q.n_bytes) + pad(up.n_bytes) + pad(emb.n_bytes)
    assert mm.repack_output == pad(emb.n_bytes) and mm.repack_layers == (pad(q.n_bytes) + pad(up.n_bytes),)
    kept = [t for t in info.tensors if t.name in ("token_embd.weight", "blk.0.attn_norm.weight")]
    assert mm.cpu == max(t.offset + t.n_bytes for t in kept) - min(t.offset for t in kept)  # the mapped range
    no_mm = host_buffers(info, AVX2, use_mmap=False)
    assert no_mm.cpu == sum(pad(t.n_bytes) for t in kept) and no_mm.repack == mm.repack
    plain = host_buffers(info, None, use_mmap=False)
    assert plain.repack == 0 and plain.cpu == sum(pad(t.n_bytes) for t in info.tensors)
