"""The package surface: cheap to import, one llama_cpp importer, options passed through to llama.cpp."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fmgguf.errors import InvalidRequestError

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_runtime_does_not_load_llama_cpp() -> None:
    code = ("import sys; import fmgguf.runtime as r; r.ModelManager; r.GenerationResult; r.GenerationStream; "
            "r.get_model_manager; from fmgguf import get_model_manager; "
            "assert 'llama_cpp' not in sys.modules, 'llama_cpp imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_only_the_engine_imports_llama_cpp() -> None:
    importers = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "fmgguf").rglob("*.py")
                       if re.search(r"^\s*(import|from) llama_cpp\b", p.read_text(encoding="utf-8"), re.M))
    assert importers == ["fmgguf/runtime/engine/llama_lib.py"]


def test_get_model_manager_is_one_per_process() -> None:
    from fmgguf.runtime import get_model_manager

    assert get_model_manager() is get_model_manager()


def test_multi_gpu_options_reach_llama_cpp() -> None:
    from fmgguf.runtime.engine.engine import LoadOptions

    kw = LoadOptions(n_ctx=256, n_gpu_layers=20, tensor_split=(3.0, 1.0), main_gpu=1, split_mode="row",
                     type_k="q8_0", type_v="q8_0", flash_attn=True).llama_kwargs()
    assert kw["tensor_split"] == [3.0, 1.0] and kw["main_gpu"] == 1 and kw["split_mode"] == 2
    assert kw["type_k"] == 8 and kw["type_v"] == 8 and kw["flash_attn"] is True and kw["n_gpu_layers"] == 20
    assert kw["verbose"] is False  # llama.cpp's log goes to our logger, never stderr
    with pytest.raises(InvalidRequestError):
        LoadOptions(split_mode="diagonal").llama_kwargs()
    with pytest.raises(InvalidRequestError):
        LoadOptions(type_k="q3_weird").llama_kwargs()


def test_split_options_load_on_a_cpu_machine(fresh_manager, llama_path: Path) -> None:
    m = fresh_manager()
    r = m.load_file(llama_path, n_ctx=128, n_gpu_layers=0, tensor_split=[1.0], main_gpu=0, split_mode="layer")
    assert r.success and m.generate_text("x", max_tokens=2).completion_tokens >= 1
    assert r.as_dict()["n_gpu_layers"] == 0
