"""Memory estimate vs what llama.cpp really allocates, on every tiny architecture (CPU).

Baseline, measured in this run: a real load of each tiny model in a child process (llama.cpp's
log of its KV/compute/output buffers and llama_model_size()). Estimate: fmgguf.runtime.estimate
from the GGUF header (+ llama.cpp's no-alloc dry run for the compute buffer), and from catalog
numbers alone (before download). Prints `name: ratio X (target ...)`; exits 1 when a target is missed.

    .venv/bin/python benchmarks/bench_estimate.py [--archs llama,qwen2] [--size unit|bench]
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
    from fmgguf.runtime.dryrun import measure
    from fmgguf.runtime.estimate import estimate_card, estimate_file
    from fmgguf.runtime.gguf_file import read_gguf
    from fmgguf.testing import build_tiny_model, tiny_card

    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="llama,qwen2,starcoder2,gemma3,deepseek2")
    ap.add_argument("--size", default="unit")
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
                                measure=True, use_extra_bufts=extra)
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
    if failed:
        print(f"MISSED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
