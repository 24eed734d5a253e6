from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fmgguf.testing import gpu


def test_backend_detection_reads_the_lib_dir(tmp_path: Path) -> None:
    assert gpu.has_cuda_backend(tmp_path) is False
    (tmp_path / "libggml-cpu.so").write_bytes(b"\x7fELF cpu only")
    assert gpu.has_cuda_backend(tmp_path) is False
    (tmp_path / "libggml.so").write_bytes(b"\x7fELF ... ggml_backend_cuda_init ...")
    assert gpu.has_cuda_backend(tmp_path) is True
    other = tmp_path / "other"
    other.mkdir()
    (other / "libggml-cuda.so").write_bytes(b"\x7fELF")
    assert gpu.has_cuda_backend(other) is True


def test_the_installed_build_is_described_consistently() -> None:
    lib = gpu.llama_cpp_lib_dir()
    assert lib is not None and any(lib.glob("libllama*"))
    assert gpu.cuda_available() == (gpu.nvidia_gpu_present() and gpu.has_cuda_backend())


def test_checking_does_not_import_llama_cpp() -> None:
    code = ("import sys; from fmgguf.testing.gpu import cuda_available; cuda_available(); "
            "import fmgguf.testing; print('llama_cpp' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.gpu
def test_tiny_model_runs_fully_offloaded() -> None:
    from fmgguf.testing import build_tiny_model
    from fmgguf.testing.smoke import smoke_generate

    assert gpu.cuda_available()
    out = smoke_generate(build_tiny_model("qwen2", "unit", "Q4_K_M"), n_tokens=6, n_gpu_layers=-1)
    assert len(out["tokens"]) == 6
