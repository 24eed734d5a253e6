"""The converter's error paths: each is one clear ConvertError/DiskSpaceError, raised before anything slow."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fmgguf.convert import convert_checkpoint
from fmgguf.convert.checkpoint import check_architecture, read_checkpoint
from fmgguf.convert.quantize import load_imatrix
from fmgguf.convert.toolchain import REQUIREMENTS, ensure_requirements, supported_architectures
from fmgguf.errors import ConvertError, DiskSpaceError, exit_code_for

REPO = Path(__file__).resolve().parents[2]


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], with_data: bool = True) -> None:
    """A safetensors file (header + zeroed data); with_data=False writes only the header."""
    header, offset = {}, 0
    sizes = {"F16": 2, "F32": 4}
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        if with_data:
            fh.write(b"\0" * offset)


def _checkpoint(root: Path, arch: str = "LlamaForCausalLM", tokenizer: bool = True, weights: bool = True,
                config: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if config:
        (root / "config.json").write_text(json.dumps({"architectures": [arch], "hidden_size": 8}))
    if tokenizer:
        (root / "tokenizer.json").write_text("{}")
    if weights:
        _safetensors(root / "model.safetensors", {"model.embed_tokens.weight": ("F16", [16, 8])})
    return root


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="is not a directory"):
        convert_checkpoint(tmp_path / "nope", "X", tmp_path / "out")


def test_hub_repo_id_says_download_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConvertError, match="hf download Qwen/Qwen2.5-Coder-0.5B"):
        convert_checkpoint("Qwen/Qwen2.5-Coder-0.5B", "X", tmp_path / "out")


def test_missing_config(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", config=False)
    with pytest.raises(ConvertError, match="has no config.json") as err:
        convert_checkpoint(ck, "X", tmp_path / "out")
    assert exit_code_for(err.value) == 22
    assert not (tmp_path / "out" / "X-F16.gguf").exists()


def test_config_without_architectures(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck")
    (ck / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConvertError, match="names no `architectures`"):
        read_checkpoint(ck)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ConvertError, match="is not valid JSON"):
        read_checkpoint(ck)


def test_missing_tokenizer(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", tokenizer=False)
    with pytest.raises(ConvertError, match="has no tokenizer") as err:
        convert_checkpoint(ck, "X", tmp_path / "out")
    assert "tokenizer.json or tokenizer.model" in err.value.fix


def test_missing_weights(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", weights=False)
    with pytest.raises(ConvertError, match="has no weights"):
        convert_checkpoint(ck, "X", tmp_path / "out")


def test_corrupt_safetensors(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", weights=False)
    (ck / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ConvertError, match="not a readable safetensors"):
        read_checkpoint(ck)


def test_too_little_disk_is_checked_first_with_numbers(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", weights=False)
    # a header announcing a 2 PB F16 model (no data written): the check must refuse before converting
    _safetensors(ck / "model.safetensors", {"w": ("F32", [1_000_000, 1_000_000_000])}, with_data=False)
    assert read_checkpoint(ck).f16_bytes == 2 * 10**15
    with pytest.raises(DiskSpaceError) as err:
        convert_checkpoint(ck, "Huge", tmp_path / "out")
    msg = err.value.message
    assert "needs about" in msg and "only" in msg and "× 2.5" in msg
    assert err.value.details["need"] == int(2 * 10**15 * 2.5)
    assert exit_code_for(err.value) == 9
    assert not list((tmp_path / "out").glob("*.gguf*"))


def test_bad_name_and_quant(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck")
    with pytest.raises(ConvertError, match="not a usable file-name stem"):
        convert_checkpoint(ck, "../evil", tmp_path / "out")
    with pytest.raises(ConvertError, match="cannot quantize to IQ9"):
        convert_checkpoint(ck, "X", tmp_path / "out", quants=("IQ9",))
    with pytest.raises(ConvertError, match="is not a catalog id"):
        convert_checkpoint(ck, "X", tmp_path / "out", model_id="Bad Id")
    with pytest.raises(ConvertError, match="is not of the form owner/name"):
        convert_checkpoint(ck, "X", tmp_path / "out", repo="no-slash")


def test_missing_imatrix_file(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck")
    with pytest.raises(ConvertError, match="imatrix file .* does not exist"):
        convert_checkpoint(ck, "X", tmp_path / "out", imatrix=tmp_path / "none.gguf")


def test_architecture_check_against_registry(tmp_path: Path) -> None:
    pkg = tmp_path / "conv" / "conversion"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('from typing import Any\nTEXT_MODEL_MAP: dict[str, str] = {\n'
                                     '    "LlamaForCausalLM": "llama",\n    "Qwen2ForCausalLM": "qwen",\n}\n')
    supported = supported_architectures(tmp_path / "conv")
    assert supported == {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen"}
    check_architecture("Qwen2ForCausalLM", supported)
    with pytest.raises(ConvertError, match="architecture Qwen9ForCausalLM is not supported.*similar: Qwen2ForCausalLM"):
        check_architecture("Qwen9ForCausalLM", supported)
    (pkg / "__init__.py").write_text("OTHER = 1\n")
    with pytest.raises(ConvertError, match="no TEXT_MODEL_MAP"):
        supported_architectures(tmp_path / "conv")


@pytest.mark.slow
def test_unsupported_architecture_with_the_real_converter(tmp_path: Path) -> None:
    """Uses the pinned sdist's registry (fetched and cached once)."""
    ck = _checkpoint(tmp_path / "ck", arch="MyInventedForCausalLM")
    with pytest.raises(ConvertError, match="MyInventedForCausalLM is not supported by llama.cpp's converter"):
        convert_checkpoint(ck, "X", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.gguf"))


def test_concurrent_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from filelock import FileLock

    ck = _checkpoint(tmp_path / "ck")
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".X.convert.lock")):
        with pytest.raises(ConvertError, match="another conversion of X"):
            convert_checkpoint(ck, "X", out)


def test_missing_requirement_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REQUIREMENTS, "fmgguf-no-such-dist", "fmgguf-no-such-dist>=1")
    with pytest.raises(ConvertError, match="not installed: fmgguf-no-such-dist>=1") as err:
        ensure_requirements(install=False)
    assert err.value.fix == "run: pip install 'fmgguf-no-such-dist>=1'"


def test_imatrix_that_is_not_one(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00\x00\x00\x00hello")
    with pytest.raises(ConvertError, match="not an imatrix file"):
        load_imatrix(junk)
    from gguf import GGUFWriter

    plain = tmp_path / "plain.gguf"  # a GGUF, but without llama-imatrix's metadata
    w = GGUFWriter(str(plain), arch="llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConvertError, match="has no imatrix metadata"):
        load_imatrix(plain)


def test_cli_prints_one_line_and_exit_code(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path / "ck", tokenizer=False)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "convert" / "convert.py"), str(ck), "--name", "X",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 22
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "has no tokenizer" in lines[0]
    assert "Traceback" not in proc.stderr
