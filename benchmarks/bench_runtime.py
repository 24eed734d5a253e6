"""Runtime benchmark: ModelManager against llama_cpp.Llama called directly, and memory after switching.

    .venv/bin/python benchmarks/bench_runtime.py [--arch qwen2] [--quant Q4_K_M] [--runs 5] [--switches 20]
                                                 [--child] [--json]

Prints ``name: ratio X (target ...)`` lines, each against a baseline measured in this same run:

- ``generation tokens/s``: ModelManager.generate_text vs Llama.create_completion, same model file, same
  load and sampling parameters, greedy, same number of tokens (target >= 0.98);
- ``load time``: ModelManager.load_file (validation and plan cached per file identity, as in a
  long-running process) vs Llama(...) (target <= 1.05); the cold first load is printed too;
- ``switch memory``: RSS after 20 switches between two models vs RSS with the first one loaded
  (target <= 1.05); ``--child`` also measures the child-process alternative (Ollama's design).

Exits 1 when a target is missed. Uses the bench-size tiny models (50-150M parameters).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_CTX = 1024
PROMPT = "def fibonacci(n):\n    "


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_speed(path: Path, runs: int, max_tokens: int) -> dict:
    """Loads alternate (direct, manager, ...); then both stay loaded and generations alternate,
    so each pair is measured close in time (other load on the machine hits both alike)."""
    import llama_cpp

    from fmgguf.runtime import ModelManager
    from fmgguf.runtime.engine.engine import release_memory
    from fmgguf.settings import load_settings

    manager = ModelManager(load_settings(), keep_alive=0, isolation="inprocess")  # the engine vs llama_cpp
    sampling = dict(temperature=0.0, top_p=0.95, seed=0)
    from fmgguf.runtime.hw.threads import choose_threads

    # the threads the manager's engine uses (one per core): llama-cpp-python's own default is half the
    # logical CPUs, and a different thread count would be measured instead of the manager's overhead
    threads = choose_threads().n_threads
    params = dict(n_ctx=N_CTX, n_batch=512, n_ubatch=512, n_gpu_layers=0, flash_attn=False, verbose=False,
                  n_threads=threads, n_threads_batch=threads)
    t = time.perf_counter()
    manager.load_file(path, n_ctx=N_CTX)  # cold: validation + plan + load
    cold = time.perf_counter() - t
    manager.unload()
    loads: dict[str, list[float]] = {"manager": [], "direct": []}
    for i in range(2 * runs):  # loads are short: twice the samples for a steadier median
        for who in (("direct", "manager") if i % 2 == 0 else ("manager", "direct")):
            gc.collect()
            t = time.perf_counter()
            if who == "direct":
                llm = llama_cpp.Llama(str(path), **params)
                loads[who].append(time.perf_counter() - t)
                llm.close()
                del llm
                release_memory()
            else:
                manager.load_file(path, n_ctx=N_CTX, n_gpu_layers="auto")
                loads[who].append(time.perf_counter() - t)
                manager.unload()
    llm = llama_cpp.Llama(str(path), **params)
    manager.load_file(path, n_ctx=N_CTX, n_gpu_layers="auto")
    gens: dict[str, list[float]] = {"manager": [], "direct": []}
    tokens: dict[str, set[int]] = {"manager": set(), "direct": set()}
    for i in range(2 * runs):
        for who in (("direct", "manager") if i % 2 == 0 else ("manager", "direct")):
            t = time.perf_counter()
            if who == "direct":
                out = llm.create_completion(PROMPT, max_tokens=max_tokens, top_k=40, min_p=0.05,
                                            repeat_penalty=1.0, **sampling)
                n = out["usage"]["completion_tokens"]
            else:
                n = manager.generate_text(PROMPT, max_tokens=max_tokens, **sampling).completion_tokens
            gens[who].append(n / (time.perf_counter() - t))
            tokens[who].add(n)
    llm.close()
    manager.unload()
    med = {k: {"load_s": statistics.median(loads[k]), "tokens_per_s": statistics.median(gens[k])} for k in loads}
    return {"cold_load_s": cold, "median": med, "tokens": {k: sorted(v) for k, v in tokens.items()},
            "load_ratio": med["manager"]["load_s"] / med["direct"]["load_s"],
            "gen_ratio": med["manager"]["tokens_per_s"] / med["direct"]["tokens_per_s"]}


def bench_switch(path_a: Path, path_b: Path, switches: int) -> dict:
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    manager = ModelManager(load_settings(), keep_alive=0, isolation="inprocess")  # the engine vs llama_cpp
    manager.load_file(path_a, n_ctx=N_CTX)
    manager.generate_text(PROMPT, max_tokens=16, temperature=0)
    one = rss()
    t = time.perf_counter()
    for i in range(switches):
        target = path_b if i % 2 == 0 else path_a
        manager.load_file(target, n_ctx=N_CTX)
        manager.generate_text(PROMPT, max_tokens=16, temperature=0)
    per_switch = (time.perf_counter() - t) / max(switches, 1)
    if switches % 2:
        manager.load_file(path_a, n_ctx=N_CTX)
    after = rss()
    manager.unload()
    return {"rss_one_model": one, "rss_after": after, "ratio": after / one, "switch_s": per_switch,
            "rss_unloaded": rss()}


_CANARY = r"""
import sys, llama_cpp
llama_cpp.Llama(sys.argv[1], n_ctx=128, verbose=False).create_completion("def f():", max_tokens=4, temperature=0)
"""

_CHILD = r"""
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), verbose=False)
llm.create_completion("def f():", max_tokens=16, temperature=0)
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024, flush=True)
sys.stdin.read()
"""


def bench_child(path_a: Path, path_b: Path, switches: int) -> dict:
    """Ollama's design: one engine process per loaded model, killed on switch."""
    def start(path: Path) -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(N_CTX)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return proc, int(proc.stdout.readline())

    def stop(proc: subprocess.Popen) -> None:
        proc.stdin.close()
        proc.wait(timeout=30)

    proc, one = start(path_a)
    t = time.perf_counter()
    for i in range(switches):
        stop(proc)
        proc, child_rss = start(path_b if i % 2 == 0 else path_a)
    per_switch = (time.perf_counter() - t) / max(switches, 1)
    stop(proc)
    return {"child_rss_one_model": one, "child_rss_last": child_rss, "switch_s": per_switch,
            "parent_rss": rss()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen2")
    ap.add_argument("--other-arch", default="llama")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--child", action="store_true", help="also measure the child-process alternative")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from fmgguf.testing import build_tiny_model

    path_a = build_tiny_model(args.arch, "bench", args.quant)
    path_b = build_tiny_model(args.other_arch, "bench", args.quant)
    for path in (path_a, path_b):  # a llama.cpp build that crashes here must not look like a slow one
        proc = subprocess.run([sys.executable, "-c", _CANARY, str(path)], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            print(f"error: llama.cpp crashes on {path.name} in this build (exit {proc.returncode}): "
                  f"{(proc.stderr.strip().splitlines() or ['?'])[-1]} — rebuild llama-cpp-python for this CPU")
            return 2
    report: dict = {"model": str(path_a), "other_model": str(path_b), "n_ctx": N_CTX, "cpus": os.cpu_count()}
    report["speed"] = speed = bench_speed(path_a, args.runs, args.tokens)
    report["switch"] = sw = bench_switch(path_a, path_b, args.switches)
    if args.child:
        report["child"] = bench_child(path_a, path_b, args.switches)
    ok = True
    lines = []

    def line(name: str, ratio: float, target: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok = ok and passed
        lines.append(f"{name}: ratio {ratio:.3f} (target {target}) {'ok' if passed else 'MISSED'}  [{detail}]")

    m, d = speed["median"]["manager"], speed["median"]["direct"]
    same = speed["tokens"]["manager"] == speed["tokens"]["direct"]
    line("generation tokens/s", speed["gen_ratio"], ">= 0.98", speed["gen_ratio"] >= 0.98 and same,
         f"manager {m['tokens_per_s']:.1f} vs direct {d['tokens_per_s']:.1f} tok/s, tokens {speed['tokens']}")
    line("load time", speed["load_ratio"], "<= 1.05", speed["load_ratio"] <= 1.05,
         f"manager {m['load_s'] * 1000:.0f} ms vs direct {d['load_s'] * 1000:.0f} ms; "
         f"cold first load with validation + plan {speed['cold_load_s'] * 1000:.0f} ms")
    line("switch memory", sw["ratio"], "<= 1.05", sw["ratio"] <= 1.05,
         f"RSS {sw['rss_one_model'] / 2**20:.0f} MiB with one model, {sw['rss_after'] / 2**20:.0f} MiB after "
         f"{args.switches} switches, {sw['switch_s'] * 1000:.0f} ms per switch in-process")
    if args.child:
        c = report["child"]
        lines.append(f"child-process switching (reference): {c['switch_s'] * 1000:.0f} ms per switch, child RSS "
                     f"{c['child_rss_one_model'] / 2**20:.0f} -> {c['child_rss_last'] / 2**20:.0f} MiB")
    if args.json:
        print(json.dumps(report, indent=2))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
