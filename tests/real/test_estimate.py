"""The memory estimate against llama.cpp's printed figures on the real model and on requantized copies
of it (Q4_0, IQ4_NL and Q4_K are repacked into CPU_REPACK on AVX2/ARM CPUs; Q4_1 and Q8_0 are not
on x86): every model buffer, the KV cache, the output and compute buffers, to llama.cpp's 2 decimals."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.plan.dryrun import MIB, measure
from fmgguf.runtime.plan.estimate import estimate_file

pytestmark = pytest.mark.real

#: llama.cpp prints sizes in MiB with two decimals: each printed figure is within this of the truth
PRINT_TOL = 0.0051 * MIB
N_CTX = 2048


CASES = [("Q4_1", True), ("Q4_0", True), ("Q4_0", False), ("IQ4_NL", True), ("Q4_K_M", True), ("Q4_K_M", False),
         ("Q8_0", True)]


def _path(real_path: Path, quant: str) -> Path:
    from fmgguf.testing.real_quants import derived_quant

    return real_path if quant == "Q4_1" else derived_quant(real_path, quant)


@pytest.mark.parametrize(("quant", "use_mmap"), CASES, ids=[f"{q}-{'mmap' if m else 'no-mmap'}" for q, m in CASES])
def test_estimate_matches_llama_cpp_printed_buffers(real_path: Path, quant: str, use_mmap: bool) -> None:
    path = _path(real_path, quant)
    est = estimate_file(read_gguf(path), n_ctx=N_CTX, measure=True, use_mmap=use_mmap)
    real = measure(path, n_ctx=N_CTX, alloc=True, use_mmap=use_mmap)
    assert real.ok, real.error
    repack = sum(est.repack_layers) + est.repack_output
    printed = dict(real.model_buffers)
    assert abs(printed.pop("CPU_REPACK", 0) - repack) <= PRINT_TOL, (quant, real.model_buffers, repack)
    (name, weights), = printed.items()  # the one other buffer: CPU_Mapped (mmap) or CPU
    assert name == ("CPU_Mapped" if use_mmap else "CPU")
    assert abs(weights - (est.model_buffers - repack)) <= PRINT_TOL, (quant, real.model_buffers, est.model_buffers)
    assert abs(est.kv_total - real.kv_total) <= PRINT_TOL * len(real.kv_caches)
    assert abs(est.output_buffer - real.output_total) <= PRINT_TOL
    assert est.compute_source == "dry-run" and est.compute == real.compute_total
    figures = len(real.model_buffers) + len(real.kv_caches) + 2
    assert abs(est.total - real.allocated_total) <= PRINT_TOL * figures
    print(f"\n{quant} {'mmap' if use_mmap else 'no-mmap'}: llama.cpp {real.allocated_total / MIB:.2f} MiB "
          f"({', '.join(f'{k} {v / MIB:.2f}' for k, v in real.model_buffers.items())}), "
          f"estimate {est.total / MIB:.2f} MiB, ratio {est.total / real.allocated_total:.5f}")


def test_the_fit_plan_counts_the_repacked_copy(real_path: Path) -> None:
    """On a CPU that repacks Q4_0, the plan's RAM figure includes the CPU_REPACK copy (mmap)."""
    from fmgguf.runtime.plan.repack import cpu_kernels, repack_interleave
    from fmgguf.testing.real_quants import derived_quant

    kernels = cpu_kernels()
    if kernels is None or not kernels.repack or repack_interleave("Q4_0", kernels) is None:
        pytest.skip("this CPU build does not repack Q4_0")
    info = read_gguf(derived_quant(real_path, "Q4_0"))
    est = estimate_file(info, n_ctx=N_CTX)
    assert est.host_bytes(0) - est.kv_total - est.compute - est.output_buffer >= info.tensor_bytes * 1.5
