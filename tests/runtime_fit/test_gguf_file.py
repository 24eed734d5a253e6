"""GGUF header parsing and validation: real tiny models parse exactly as gguf's own reader sees them;
a corpus of broken files gives GGUFError with a reason, never a crash or a hang."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest

from fmgguf.errors import GGUFError
from fmgguf.runtime.gguf.gguf_file import read_gguf


# --- a minimal GGUF writer for targeted corruption ----------------------------------------------
def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, v: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, v)


def kv_str(key: str, v: str) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(v)


def tensor_info(name: str, shape: tuple[int, ...], ttype: int, offset: int) -> bytes:
    return _s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<q", d) for d in shape) \
        + struct.pack("<iQ", ttype, offset)


def make_gguf(kvs: list[bytes] | None = None, tensors: list[tuple[str, tuple[int, ...], int, int]] | None = None,
              data: bytes | None = None, version: int = 3, magic: bytes = b"GGUF", n_kv: int | None = None,
              n_tensors: int | None = None) -> bytes:
    kvs = kvs if kvs is not None else [kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1),
                                       kv_u32("llama.embedding_length", 32)]
    tensors = tensors if tensors is not None else [("token_embd.weight", (32, 4), 0, 0), ("blk.0.w", (32,), 0, 512)]
    head = magic + struct.pack("<Iqq", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensor_info(*t) for t in tensors)
    body += b"\0" * (-len(body) % 32)
    return body + (data if data is not None else b"\0" * 1024)


def _check_error(tmp_path: Path, content: bytes, expect: str | None = None) -> str:
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    start = time.monotonic()
    with pytest.raises(GGUFError) as info:
        read_gguf(p)
    assert time.monotonic() - start < 2.0
    msg = str(info.value)
    assert "\n" not in msg
    if expect:
        assert expect in msg, msg
    return msg


def test_minimal_file_is_valid(tmp_path: Path) -> None:
    p = tmp_path / "ok.gguf"
    p.write_bytes(make_gguf())
    info = read_gguf(p, check=False)  # well-formed; not a loadable model (no context length, no blocks)
    assert info.arch == "llama" and info.n_layer == 1 and [t.n_bytes for t in info.tensors] == [512, 128]


@pytest.mark.parametrize(("content", "expect"), [
    (b"", "too short"),
    (b"GGML" + b"\0" * 100, "bad magic"),
    (make_gguf(magic=b"gguf"), "bad magic"),
    (make_gguf(version=1), "version 1"),
    (make_gguf(version=4), "version 4"),
    (b"GGUF" + struct.pack(">I", 3) + b"\0" * 40, "big-endian"),
    (make_gguf(n_tensors=1 << 60), "tensor count"),
    (make_gguf(n_tensors=-1), "tensor count"),
    (make_gguf(n_kv=1 << 62), "metadata count"),
    (make_gguf(n_kv=-5), "metadata count"),
    (make_gguf(kvs=[struct.pack("<Q", 1 << 61) + b"x"]), "claims"),
    (make_gguf(kvs=[_s("a") + struct.pack("<IIQ", 9, 4, 1 << 60)]), "more than the file can hold"),
    (make_gguf(kvs=[_s("a") + struct.pack("<IIQ", 9, 8, 1 << 59)]), "more than the file can hold"),
    (make_gguf(kvs=[_s("a") + struct.pack("<IIQ", 9, 9, 1)]), "array of arrays"),
    (make_gguf(kvs=[_s("a") + struct.pack("<IIQ", 9, 77, 1)]), "unknown array element type"),
    (make_gguf(kvs=[_s("a") + struct.pack("<I", 13) + b"\0" * 8]), "unknown value type"),
    (make_gguf(kvs=[_s(b"\xff\xfe") + struct.pack("<II", 4, 1)]), "UTF-8"),
    (make_gguf(kvs=[kv_u32("a", 1), kv_u32("a", 2)]), "duplicate metadata key"),
    (make_gguf(kvs=[kv_u32("llama.block_count", 1)]), "general.architecture is missing"),
    (make_gguf(kvs=[kv_str("general.architecture", "not-an-arch"), kv_u32("not-an-arch.block_count", 1)]),
     "not supported"),
    (make_gguf(kvs=[kv_str("general.architecture", "llama"), kv_u32("llama.embedding_length", 32)]),
     "block_count"),
    (make_gguf(kvs=[kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1),
                    kv_u32("llama.embedding_length", 32), kv_u32("general.alignment", 24)]), "alignment"),
    (make_gguf(tensors=[("t", (32,), 99, 0)]), "unknown ggml type 99"),
    (make_gguf(tensors=[("t", (32,), 4, 0)]), "unknown ggml type 4"),
    (make_gguf(tensors=[("t", (), 0, 0)]), "0 dimensions"),
    (make_gguf(tensors=[("t", (1, 1, 1, 1, 1), 0, 0)]), "5 dimensions"),
    (make_gguf(tensors=[("t", (32, -1), 0, 0)]), "negative"),
    (make_gguf(tensors=[("t", (1 << 40, 1 << 40), 0, 0)]), "absurd shape"),
    (make_gguf(tensors=[("t", (33,), 8, 0)]), "block size"),
    (make_gguf(tensors=[("t" * 64, (32,), 0, 0)]), "name is"),
    (make_gguf(tensors=[("t", (32,), 0, 0), ("t", (32,), 0, 128)]), "duplicate tensor"),
    (make_gguf(tensors=[("t", (32,), 0, 16)]), "not aligned"),
    (make_gguf(tensors=[("t", (32,), 0, 64)]), "expected 0"),
    (make_gguf(tensors=[("t", (32,), 0, 0), ("u", (32,), 0, 1 << 40)]), "expected 128"),
    (make_gguf(tensors=[("t", (1024, 1024), 0, 0)]), "past the end"),
    (make_gguf(tensors=[("blk.900.w", (32,), 0, 0)]), "layer 900"),
])
def test_broken_files_raise(tmp_path: Path, content: bytes, expect: str) -> None:
    _check_error(tmp_path, content, expect)


def test_truncated_real_model_at_many_offsets(tmp_path: Path, llama_f16: Path) -> None:
    data = llama_f16.read_bytes()
    info = read_gguf(llama_f16)
    header_end = info.data_offset
    cuts = sorted({*range(0, 64), *range(64, header_end, max(1, header_end // 60)), header_end - 1, header_end,
                   header_end + 1, len(data) // 2, len(data) - 1})
    for cut in cuts:
        _check_error(tmp_path, data[:cut])


def test_random_header_corruption_never_crashes(tmp_path: Path, llama_f16: Path) -> None:
    """Flipped bytes in the header: either still a valid file or GGUFError, never anything else."""
    info = read_gguf(llama_f16)
    head = bytearray(llama_f16.read_bytes()[:info.data_offset + 4096])
    rng = random.Random(1234)
    p = tmp_path / "fuzz.gguf"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(100):
        buf = bytearray(head)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(0, min(len(buf), 4096)) if rng.random() < 0.7 else rng.randrange(len(buf))
            buf[pos] = rng.randrange(256)
        p.write_bytes(bytes(buf))
        try:
            read_gguf(p)
            outcomes["ok"] += 1
        except GGUFError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="directory"):
        read_gguf(tmp_path)
    with pytest.raises(GGUFError, match="cannot open"):
        read_gguf(tmp_path / "missing.gguf")


def test_tiny_model_matches_gguf_reader(tiny: dict) -> None:
    """Our tensor table equals gguf.GGUFReader's (names, sizes, absolute offsets)."""
    from gguf import GGUFReader

    path = tiny[("llama", "Q4_K_M")]
    info = read_gguf(path)
    ref = GGUFReader(path)
    assert [t.name for t in info.tensors] == [t.name for t in ref.tensors]
    assert [t.n_bytes for t in info.tensors] == [int(t.n_bytes) for t in ref.tensors]
    assert [info.data_offset + t.offset for t in info.tensors] == [int(t.data_offset) for t in ref.tensors]
    assert info.n_vocab == len(ref.fields["tokenizer.ggml.tokens"].data)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "starcoder2", "gemma3", "deepseek2"])
def test_tiny_models_parse(tiny: dict, arch: str) -> None:
    path = tiny[(arch, "Q4_K_M")]
    info = read_gguf(path)
    assert info.arch == arch and info.n_layer >= 2 and info.n_vocab and info.n_vocab > 1000
    assert info.data_offset + info.tensors[-1].offset + info.tensors[-1].n_bytes <= path.stat().st_size
    mix = info.quant_mix()
    assert sum(v["bytes"] for v in mix.values()) == info.tensor_bytes
    assert "Q4_K" in mix or "Q5_0" in mix
    summary = info.summary()
    assert summary["chat_template"] == (info.chat_template is not None)
    assert summary["n_layer"] == info.n_layer


def test_fim_tokens_of_qwen2(tiny: dict) -> None:
    info = read_gguf(tiny[("qwen2", "F16")])
    fim = info.fim_tokens
    assert {"pre", "suf", "mid"} <= set(fim)


def _string_array(key: str, items: list[bytes], count: int | None = None) -> bytes:
    return _s(key) + struct.pack("<IIQ", 9, 8, len(items) if count is None else count) + b"".join(map(_s, items))


def test_long_string_arrays_are_counted_across_read_blocks(tmp_path: Path) -> None:
    """A vocabulary longer than the kept-array limit and larger than a read block (1 MiB) is stepped
    over exactly: its count is kept, the keys after it parse, and every bad length is caught."""
    base = [kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1),
            kv_u32("llama.embedding_length", 32)]
    words = [(b"w%05d" % i) * (i % 97) for i in range(20000)]  # ~5.8 MB of strings of mixed length
    vocab = _string_array("tokenizer.ggml.tokens", words)
    assert len(vocab) > 4 << 20
    p = tmp_path / "vocab.gguf"
    p.write_bytes(make_gguf(kvs=[*base, vocab, kv_u32("after.vocab", 7)]))
    info = read_gguf(p, check=False)  # a vocabulary-only file: parsed, not a loadable model
    assert info.n_vocab == 20000 and info.metadata["after.vocab"] == 7
    good = make_gguf(kvs=[*base, vocab])
    head_len = len(good) - 1024 - 64  # cuts that end inside the vocabulary, in and across blocks
    for cut in (1 << 20, (1 << 20) + 3, (1 << 20) + 9, 3 << 20, head_len - 200, head_len - 3):
        msg = _check_error(tmp_path, good[:cut])
        assert "truncated" in msg or "claims" in msg, msg
    big = words[:5000] + [b"x" * 10]  # the last string claims more bytes than remain
    bad = _string_array("tokenizer.ggml.tokens", big)
    bad = bad[:-18] + struct.pack("<Q", 1 << 40) + b"x" * 10
    _check_error(tmp_path, make_gguf(kvs=[*base, bad]), "claims")
    _check_error(tmp_path, make_gguf(kvs=[*base, _string_array("t", words[:6000], count=6001)]))
