"""The quantize child converts a quantized GGUF back to F16 only when asked to (``--requantize``: the
draft-model benchmark makes its F16 target from the catalog's Q4_K_M file that way)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fmgguf.runtime.gguf.gguf_file import read_gguf

F16 = 1  # LLAMA_FTYPE_MOSTLY_F16


def _quantize(src: Path, dst: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmgguf.runtime.engine.engine_child", "--quantize", str(src), str(dst),
                           str(F16), "1", *extra], capture_output=True, text=True, timeout=300)


def test_a_quantized_file_goes_back_to_f16_only_with_requantize(tmp_path: Path) -> None:
    from fmgguf.testing import build_tiny_model

    src = build_tiny_model("qwen2", "unit", "Q8_0")
    refused = _quantize(src, tmp_path / "no.gguf")
    assert refused.returncode != 0
    done = _quantize(src, tmp_path / "f16.gguf", "--requantize")
    assert done.returncode == 0, done.stderr[-500:]
    info = read_gguf(tmp_path / "f16.gguf")
    assert info.file_type == F16 and (tmp_path / "f16.gguf").stat().st_size > src.stat().st_size
