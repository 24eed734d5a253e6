from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path

import pytest

from fmgguf.errors import InvalidRequestError
from fmgguf.tiny.vocab import SDIST_FILE, VOCAB_FILES, ensure_sdist, ensure_vocab, read_kv

EXPECTED_TOKENS = {"qwen2": 151936, "starcoder": 49152, "deepseek-coder": 32256, "llama-spm": 32000}


@pytest.mark.parametrize("name", sorted(VOCAB_FILES))
def test_vocab_files_are_real_tokenizers(name: str) -> None:
    path = ensure_vocab(name)
    assert path.name == VOCAB_FILES[name]
    kv = read_kv(path)
    tokens = kv["tokenizer.ggml.tokens"][0]
    assert len(tokens) == EXPECTED_TOKENS[name]
    assert kv["tokenizer.ggml.model"][0] in ("gpt2", "llama")
    assert ensure_vocab(f"ggml-vocab-{name}.gguf") == path  # the file name works too


def test_read_kv_agrees_with_gguf_reader() -> None:
    import gguf

    path = ensure_vocab("llama-spm")
    ours = read_kv(path)
    reader = gguf.GGUFReader(str(path))
    theirs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert set(ours) == set(theirs)
    for key, field in theirs.items():
        value, vtype, sub = ours[key]
        assert vtype == field.types[0].value, key
        expected = field.contents()
        if isinstance(expected, float):
            assert value == pytest.approx(expected), key
        else:
            assert value == expected, key


def test_unknown_vocab_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="use one of"):
        ensure_vocab("gpt-5")


def _extract(cache: str, name: str) -> str:
    return str(ensure_vocab(name, cache_dir=cache))


def test_extraction_from_the_cached_sdist_is_safe_across_processes(tmp_path: Path) -> None:
    sdist = ensure_sdist()
    assert sdist.name == SDIST_FILE
    (tmp_path / "sdist").mkdir()
    os.link(sdist, tmp_path / "sdist" / SDIST_FILE) if sdist.stat().st_dev == tmp_path.stat().st_dev \
        else (tmp_path / "sdist" / SDIST_FILE).symlink_to(sdist)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        got = list(pool.map(_extract, [str(tmp_path)] * 2, ["qwen2", "starcoder"]))
    assert [Path(p).parent for p in got] == [tmp_path / "vocab"] * 2
    files = sorted(p.name for p in (tmp_path / "vocab").iterdir() if not p.name.endswith(".lock"))
    assert files == sorted(VOCAB_FILES.values())  # one pass extracted all of them, no temp files left
    for f in VOCAB_FILES.values():
        assert (tmp_path / "vocab" / f).read_bytes() == (ensure_vocab(f).read_bytes())


def test_read_header_tensors_agree_with_gguf_reader() -> None:
    import gguf

    from fmgguf.testing import build_tiny_model
    from fmgguf.tiny.vocab import read_header

    path = build_tiny_model("llama", "unit", "Q4_K_M")
    _kv, tensors = read_header(path)
    theirs = gguf.GGUFReader(str(path)).tensors
    assert list(tensors) == [t.name for t in theirs]
    for t in theirs:
        assert tensors[t.name] == (tuple(int(d) for d in t.shape), t.tensor_type.value)
