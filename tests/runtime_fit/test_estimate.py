"""The estimate against what llama.cpp really allocates (a real load in a child process), on every
tiny architecture: weights and KV equal, the total within 2%; the catalog estimate within 10%."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.plan.dryrun import MIB, measure
from fmgguf.runtime.plan.estimate import estimate_card, estimate_file, kv_layers_for

from .conftest import ARCHES, NO_EXTRA_BUFTS

#: llama.cpp prints sizes in MiB with two decimals: each printed figure is within this of the truth
PRINT_TOL = 0.0051 * MIB  # (a hair over half a unit in the last printed digit)

CONFIGS = [  # (type_k, type_v, flash_attn, swa_full, n_ctx)
    ("f16", "f16", False, True, 1500),
    ("q8_0", "q8_0", True, False, 3000),
]


def compare(path: Path, arch: str, type_k: str, type_v: str, fa: bool, swa_full: bool, n_ctx: int) -> dict:
    extra = False if arch in NO_EXTRA_BUFTS else None
    info = read_gguf(path)
    est = estimate_file(info, n_ctx=n_ctx, type_k=type_k, type_v=type_v, flash_attn=fa, swa_full=swa_full,
                        measure=True, use_extra_bufts=extra, use_mmap=False)
    real = measure(path, n_ctx=n_ctx, type_k=type_k, type_v=type_v, flash_attn=fa, swa_full=swa_full, alloc=True,
                   use_mmap=False, use_extra_bufts=extra)
    assert real.ok, real.error
    real_total = real.model_size + real.kv_total + real.compute_total + real.output_total
    return {"est": est, "real": real, "real_total": real_total}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("config", CONFIGS, ids=["f16", "q8_0-fa-swa"])
def test_estimate_matches_llama_cpp(tiny: dict, arch: str, config: tuple) -> None:
    type_k, type_v, fa, swa_full, n_ctx = config
    quant = "F16" if type_k == "f16" else "Q4_K_M"
    r = compare(tiny[(arch, quant)], arch, type_k, type_v, fa, swa_full, n_ctx)
    est, real = r["est"], r["real"]
    assert est.compute_source == "dry-run", est.notes
    assert est.weights_total == real.model_size  # exact: llama_model_size()
    assert sum(real.model_buffers.values()) >= real.model_size - PRINT_TOL * len(real.model_buffers)
    # every model buffer llama.cpp prints (CPU, and CPU_REPACK where this CPU repacks Q4_K), to its 2 decimals
    assert abs(est.model_buffers - sum(real.model_buffers.values())) <= PRINT_TOL * len(real.model_buffers)
    assert abs(est.kv_total - real.kv_total) <= PRINT_TOL * len(real.kv_caches)
    assert est.n_ctx == real.n_ctx
    assert abs(est.output_buffer - real.output_total) <= PRINT_TOL
    assert abs(est.total - r["real_total"]) <= 0.02 * r["real_total"]


def test_swa_and_mla_shrink_the_cache(tiny: dict) -> None:
    g = read_gguf(tiny[("gemma3", "F16")])
    full = sum(kv_layers_for(g.arch, g.n_layer, g.metadata, 8192, "f16", "f16", True, 512))
    small = sum(kv_layers_for(g.arch, g.n_layer, g.metadata, 8192, "f16", "f16", False, 512))
    assert small < full / 2
    d = read_gguf(tiny[("deepseek2", "F16")])
    mla = kv_layers_for(d.arch, d.n_layer, d.metadata, 4096, "f16", "f16", True, 512)
    k_len = d.key("attention.key_length")
    assert mla == [4096 * k_len * 2] * d.n_layer  # the latent only, no V


def test_quantized_v_needs_flash_attention(tiny: dict) -> None:
    from fmgguf.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="flash attention"):
        estimate_file(read_gguf(tiny[("llama", "F16")]), n_ctx=1024, type_k="q8_0", type_v="q8_0", flash_attn=False)


@pytest.mark.parametrize("arch", ARCHES)
def test_catalog_estimate_within_10_percent(tiny: dict, arch: str) -> None:
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.testing import tiny_card

    card = ModelCard.model_validate(tiny_card(f"tiny-{arch}", arch=arch, quants=("Q4_K_M",)))
    from fmgguf.testing import tiny_repo_files

    path = next(iter(tiny_repo_files(f"tiny-{arch}", arch=arch, quants=("Q4_K_M",)).values()))
    for n_ctx in (2048, 4096):
        by_card = estimate_card(card, "Q4_K_M", n_ctx=n_ctx)
        by_file = estimate_file(read_gguf(path), n_ctx=n_ctx, measure=True,
                                use_extra_bufts=False if arch in NO_EXTRA_BUFTS else None)
        assert abs(by_card.total - by_file.total) <= 0.10 * by_file.total, (by_card.as_dict(), by_file.as_dict())
        assert abs(by_card.kv_total - by_file.kv_total) <= 0.10 * by_file.kv_total
