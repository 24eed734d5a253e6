"""RPC benchmark: generation over two loopback `fmgguf worker`s against the same model run locally.

    .venv/bin/python benchmarks/bench_rpc.py [--arch qwen2] [--size bench] [--quant Q4_K_M] [--tokens 48] [--runs 3]

Prints ``name: ratio X (target ...)`` lines against baselines measured in this same run:

- ``rpc tokens/s``: greedy generation with the layers split over two CPU workers on 127.0.0.1 (half
  each, through ModelManager(rpc=...)) vs the local CPU (target >= 0.2). The ratio is the price of the
  hop: every token crosses to each worker and back, so on loopback it shows the protocol's own cost;
  a real network adds its latency per token on top.
- ``worker start``: `fmgguf worker` from spawn to an open port vs `python -c pass` (target: under
  3 s absolute; the worker serves from the same library, nothing is built).

Each generation runs in a fresh child process (workers stay attached to the process that used them);
runs alternate local / split so both see the same machine load. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import Report  # noqa: E402

_GEN = r"""
import json, sys
from fmgguf.runtime import ModelManager
from fmgguf.settings import load_settings
path, rpc, n_tok, split = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
m = ModelManager(load_settings(), keep_alive=0)
opts = {"n_ctx": 512, "n_threads": 1}  # as each worker (--threads 1); 2 cores are shared here
if rpc:
    opts.update(rpc=rpc, n_gpu_layers=-1, tensor_split=split)
m.load_file(path, **opts)
m.generate_text("def quicksort(xs):", max_tokens=4, temperature=0)  # warm-up
r = m.generate_text("def fibonacci(n):\n    ", max_tokens=n_tok, temperature=0, seed=0)
print("RESULT" + json.dumps({"tps": r.tokens_per_s, "tokens": r.completion_tokens, "text": r.text}))
m.close()
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def start_worker() -> tuple[subprocess.Popen, int, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "worker", "--port", "0", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env())
    assert proc.stderr is not None
    for line in proc.stderr:
        if "worker listening on " in line:
            port = int(line.split("worker listening on ")[1].split()[0].rsplit(":", 1)[1])
            return proc, port, time.perf_counter() - t0
    raise SystemExit(f"the worker did not start (exit {proc.wait()})")


def generate(path: Path, rpc: str, tokens: int, split: list[float]) -> dict:
    out = subprocess.run([sys.executable, "-c", _GEN, str(path), rpc, str(tokens), json.dumps(split)],
                         capture_output=True, text=True, timeout=600, env=env())
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"generation failed ({'split' if rpc else 'local'}): {out.stderr[-800:]}")
    return json.loads(line[len("RESULT"):])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="qwen2")
    ap.add_argument("--size", default="bench")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model(args.arch, args.size, args.quant)
    n_layer = read_gguf(path).n_layer
    split = [float(n_layer // 2), float(n_layer + 1 - n_layer // 2)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    python_start = time.perf_counter() - t0
    workers = [start_worker(), start_worker()]
    try:
        rpc = ",".join(f"127.0.0.1:{port}" for _, port, _ in workers)
        local, remote = [], []
        for _ in range(args.runs):
            local.append(generate(path, "", args.tokens, split))
            remote.append(generate(path, rpc, args.tokens, split))
    finally:
        for proc, _, _ in workers:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    same = sum(r["text"] == local[0]["text"] for r in remote)
    print(f"greedy text of the split equal to the local one in {same} of {len(remote)} runs (quantized CPU kernels "
          "may differ: the local CPU backend repacks Q4_K weights, a worker does not; tests check equality on F16)")
    base, value = statistics.median(r["tps"] for r in local), statistics.median(r["tps"] for r in remote)
    start = statistics.median(s for _, _, s in workers)
    report = Report()
    report.ratio("rpc tokens/s (2 loopback workers vs local)", value, base, ">= 0.2", value >= 0.2 * base,
                 f"{path.name}, {n_layer} blocks split {split[0]:g}/{split[1]:g}, {args.tokens} tokens")
    report.ratio("worker start (s, vs python -c pass)", start, python_start, "< 3 s", start < 3.0)
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
