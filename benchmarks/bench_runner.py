"""Runner benchmark: a model in its own runner process (isolation="process") against the same model in
this process (isolation="inprocess"), measured in this same run.

    .venv/bin/python benchmarks/bench_runner.py [--arch qwen2] [--quant Q4_K_M] [--runs 7] [--cycles 20] [--json]

- ``tokens/s``: generation speed after the first token, runner / in-process (target >= 0.97);
- ``time to first token``: runner / in-process, with the absolute ms (target <= 1.10);
- ``switch time``: load + 16 tokens of the other model, runner vs in-process (reported);
- ``parent RSS``: the server's RSS after 20 loads and unloads of models through runners, against its
  RSS after the first one (target <= 1.05: llama.cpp's memory lives and dies with the runners).

Exits 1 when a target is missed. Uses the bench-size tiny model (greedy, same prompt, same tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_CTX = 1024
PROMPT = "def fibonacci(n):\n    " + "# compute the n-th Fibonacci number iteratively\n    " * 4


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _manager(isolation: str, home: Path):
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    return ModelManager(load_settings(home=home), keep_alive=0, isolation=isolation)


def bench_speed(path: Path, runs: int, tokens: int, home: Path) -> dict:
    """Both managers loaded; generations alternate so each pair sees the same machine load."""
    managers = {iso: _manager(iso, home) for iso in ("inprocess", "process")}
    for m in managers.values():
        m.load_file(path, n_ctx=N_CTX)
        m.generate_text(PROMPT, max_tokens=8, temperature=0, seed=0)  # warm-up
    rate: dict[str, list[float]] = {k: [] for k in managers}
    ttft: dict[str, list[float]] = {k: [] for k in managers}
    texts: dict[str, set[str]] = {k: set() for k in managers}
    for i in range(runs):
        order = list(managers) if i % 2 == 0 else list(reversed(managers))
        for iso in order:
            res = managers[iso].generate_text(PROMPT, max_tokens=tokens, temperature=0, seed=0)
            rate[iso].append(res.tokens_per_s)
            ttft[iso].append(res.ttft_s)
            texts[iso].add(res.text)
    for m in managers.values():
        m.close()
    med = {iso: {"tokens_per_s": statistics.median(rate[iso]), "ttft_s": statistics.median(ttft[iso])}
           for iso in managers}
    # the ratio of each back-to-back pair, then their median: slow drifts of the machine's load cancel
    pairs = list(zip(rate["process"], rate["inprocess"], ttft["process"], ttft["inprocess"], strict=True))
    return {"median": med, "same_text": texts["process"] == texts["inprocess"] and len(texts["process"]) == 1,
            "rate_ratio": statistics.median(p / i for p, i, _, _ in pairs),
            "ttft_ratio": statistics.median(p / i for _, _, p, i in pairs)}


def bench_switch(path_a: Path, path_b: Path, switches: int, home: Path) -> dict:
    out = {}
    for iso in ("inprocess", "process"):
        m = _manager(iso, home)
        m.load_file(path_a, n_ctx=N_CTX)
        t = time.perf_counter()
        for i in range(switches):
            m.load_file(path_b if i % 2 == 0 else path_a, n_ctx=N_CTX)
            m.generate_text(PROMPT, max_tokens=16, temperature=0)
        out[iso] = (time.perf_counter() - t) / max(switches, 1)
        m.close()
    return {"switch_s": out, "ratio": out["process"] / out["inprocess"]}


def bench_parent_rss(path_a: Path, path_b: Path, cycles: int, home: Path) -> dict:
    """The server's manager (process isolation) through ``cycles`` loads and unloads."""
    from fmgguf.server.app import create_app
    from fmgguf.settings import load_settings

    app = create_app(load_settings(home=home))
    manager = app.state.fmgguf.manager
    assert manager.isolation == "process"
    manager.load_file(path_a, n_ctx=N_CTX)
    manager.generate_text(PROMPT, max_tokens=16, temperature=0)
    manager.unload()
    first = rss()
    for i in range(cycles):
        manager.load_file(path_b if i % 2 == 0 else path_a, n_ctx=N_CTX)
        manager.generate_text(PROMPT, max_tokens=16, temperature=0)
        manager.unload()
    after = rss()
    manager.close()
    return {"rss_first": first, "rss_after": after, "ratio": after / first}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen2")
    ap.add_argument("--other-arch", default="llama")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--switches", type=int, default=6)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from fmgguf.testing import build_tiny_model

    path_a = build_tiny_model(args.arch, "bench", args.quant)
    path_b = build_tiny_model(args.other_arch, "bench", args.quant)
    with tempfile.TemporaryDirectory(prefix="fmgguf-bench-runner-") as tmp:
        home = Path(tmp)
        speed = bench_speed(path_a, args.runs, args.tokens, home)
        print(f"  speed: runner/in-process tokens/s {speed['rate_ratio']:.3f}, time to first token "
              f"{speed['ttft_ratio']:.3f} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        report = {"model": str(path_a), "other_model": str(path_b), "n_ctx": N_CTX, "speed": speed,
                  "switch": bench_switch(path_a, path_b, args.switches, home),
                  "parent_rss": bench_parent_rss(path_a, path_b, args.cycles, home)}
    speed, sw, mem = report["speed"], report["switch"], report["parent_rss"]
    p, i = speed["median"]["process"], speed["median"]["inprocess"]
    checks = [
        ("tokens/s", speed["rate_ratio"], ">= 0.97", speed["rate_ratio"] >= 0.97 and speed["same_text"],
         f"runner {p['tokens_per_s']:.1f} vs in-process {i['tokens_per_s']:.1f} tok/s, same text: {speed['same_text']}"),
        ("time to first token", speed["ttft_ratio"], "<= 1.10", speed["ttft_ratio"] <= 1.10,
         f"runner {p['ttft_s'] * 1000:.1f} ms vs in-process {i['ttft_s'] * 1000:.1f} ms"),
        ("switch time", sw["ratio"], "reported", True,
         f"runner {sw['switch_s']['process'] * 1000:.0f} ms vs in-process {sw['switch_s']['inprocess'] * 1000:.0f} ms "
         "per switch (load + 16 tokens)"),
        ("parent RSS", mem["ratio"], "<= 1.05", mem["ratio"] <= 1.05,
         f"{mem['rss_first'] / 2**20:.0f} MiB after the first load/unload, {mem['rss_after'] / 2**20:.0f} MiB after "
         f"{args.cycles} more"),
    ]
    ok = all(c[3] for c in checks)
    if args.json:
        print(json.dumps(report, indent=2))
    for name, ratio, target, passed, detail in checks:
        print(f"{name}: ratio {ratio:.3f} (target {target}) {'ok' if passed else 'MISSED'}  [{detail}]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
