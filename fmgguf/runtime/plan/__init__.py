"""Memory and the fit plan: estimates per layer and device, llama.cpp's own dry-run measurement, the CPU's
repacked buffers, and the plan (layers offloaded, context, KV type, threads)."""
