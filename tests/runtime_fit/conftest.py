"""Shared tiny models for the runtime-fit tests (built once, cached in FMGGUF_CACHE)."""

from __future__ import annotations

from pathlib import Path

import pytest

ARCHES = ("llama", "qwen2", "starcoder2", "gemma3", "deepseek2")
#: llama.cpp 0.3.36 aborts (GGML_ASSERT in the scheduler) loading MoE models with the CPU's AMX
#: extra buffers on; llama_cpp.Llama cannot turn them off, so measurements of deepseek2 turn them off
NO_EXTRA_BUFTS = {"deepseek2"}


@pytest.fixture(scope="session")
def tiny() -> dict[tuple[str, str], Path]:
    from fmgguf.testing import build_tiny_model

    out = {}
    for arch in ARCHES:
        for quant in ("F16", "Q4_K_M"):
            out[(arch, quant)] = build_tiny_model(arch, quant=quant)
    return out


@pytest.fixture(scope="session")
def llama_f16(tiny: dict[tuple[str, str], Path]) -> Path:
    return tiny[("llama", "F16")]
