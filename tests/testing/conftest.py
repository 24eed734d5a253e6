"""Shared fixtures for the tiny-model tests: models live in FMGGUF_CACHE (kept between runs)."""

from __future__ import annotations

import pytest

from fmgguf.tiny.tiny_specs import ARCHES

QUANTS = ("F16", "Q8_0", "Q4_K_M")


@pytest.fixture(scope="session")
def all_unit_models() -> dict[tuple[str, str], object]:
    """(arch, quant) -> path of every unit-size tiny model, built once per cache."""
    from fmgguf.testing import build_tiny_model

    return {(a, q): build_tiny_model(a, "unit", q) for a in ARCHES for q in QUANTS}
