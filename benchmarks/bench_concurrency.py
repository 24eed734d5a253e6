"""Serving many at once: ``fmgguf serve`` against llama.cpp's own ``llama-server -np 4`` (built from
the same vendored source by ``benchmarks/_llama_server.py``), the same GGUF, one server after the
other in this same run, driven over the llama.cpp API both speak (``/completion``, ``/infill``).

    .venv/bin/python benchmarks/bench_concurrency.py [--model FILE.gguf] [--tokens 128] [--runs 5] [--json]

- ``1 client``: generation tokens/s of one stream (after its first token);
- ``4 clients``: aggregate tokens/s of 4 streams at once (all tokens / wall time of the burst);
- ``FIM idle``: time to first token of an /infill (the first streamed event that carries text);
- ``FIM busy``: the same while 2 long completions stream.

Targets (issue 17): 4 clients >= 0.9x llama-server's 4 clients and >= 1.5x our 1 client; FIM busy
<= 1.5x FIM idle; 1 client >= 0.95x llama-server's. Exits 1 when a target is missed.

The model: ``--model``, else ``FMGGUF_QWEN_GGUF``, else the catalog's Qwen2.5-Coder-0.5B-Instruct Q4_K_M from
its PyPI source.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

N_CTX = 4096
LONG_PROMPT = ("# A complete, well documented Python module: a tokenizer, a parser and an interpreter for a small\n"
               "# arithmetic language, with tests for every function.\n\nimport re\n\n\n")
PROMPT = "def quicksort(items):\n    \"\"\"Sort a list of numbers with quicksort and return the new list.\"\"\"\n"
FIM_PREFIX = "import os\n\n\ndef read_lines(path):\n    \"\"\"Return the lines of the text file at path.\"\"\"\n    "
FIM_SUFFIX = "\n    return lines\n\n\ndef count_words(path):\n    return sum(len(l.split()) for l in read_lines(path))\n"


@dataclass
class Stream:
    """One streamed request as the client saw it."""

    started: float
    first_text: float | None = None
    ended: float | None = None
    tokens: int = 0
    text: str = ""

    @property
    def ttft(self) -> float:
        return (self.first_text or self.started) - self.started

    @property
    def rate(self) -> float:
        """Tokens/s after the first token."""
        if self.first_text is None or self.ended is None or self.tokens < 2 or self.ended <= self.first_text:
            return 0.0
        return (self.tokens - 1) / (self.ended - self.first_text)


def _events(resp: httpx.Response) -> Iterator[dict]:
    for line in resp.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                yield json.loads(data)


def stream(client: httpx.Client, path: str, body: dict, started: threading.Event | None = None) -> Stream:
    """POST a streamed llama.cpp request; time to the first event carrying text, tokens from the last event.
    A kept-alive connection the server closed before answering (seen with llama-server) is retried once."""
    try:
        return _stream(client, path, body, started)
    except httpx.RemoteProtocolError:
        return _stream(client, path, body, started)


def _stream(client: httpx.Client, path: str, body: dict, started: threading.Event | None) -> Stream:
    out = Stream(started=time.perf_counter())
    with client.stream("POST", path, json={**body, "stream": True}) as resp:
        resp.raise_for_status()
        for ev in _events(resp):
            text = ev.get("content") or ""
            if text and out.first_text is None:
                out.first_text = time.perf_counter()
                if started is not None:
                    started.set()
            out.text += text
            if ev.get("stop"):
                out.tokens = int(ev.get("tokens_predicted") or ev.get("timings", {}).get("predicted_n") or 0)
    out.ended = time.perf_counter()
    return out


def _completion(n: int, seed: int, prompt: str = PROMPT) -> dict:
    return {"prompt": prompt, "n_predict": n, "temperature": 0.7, "seed": seed, "top_k": 40, "top_p": 0.95}


def _fim(i: int) -> dict:
    # a keystroke later: the same file with one more character typed
    return {"input_prefix": FIM_PREFIX + "lines = [" + "x" * (i % 3), "input_suffix": FIM_SUFFIX, "prompt": "",
            "n_predict": 16, "temperature": 0.0}


def burst(client: httpx.Client, tokens: int, seed: int, n: int = 4) -> float:
    """Aggregate tokens/s of ``n`` completions sent at once: all their tokens over the burst's wall time."""
    results: list[Stream] = []

    def one(i: int) -> None:
        results.append(stream(client, "/completion", _completion(tokens, seed + i)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(s.ended or t0 for s in results) - t0
    return sum(s.tokens for s in results) / wall


def note(what: str, name: str, values: list[float]) -> None:
    """Each figure as soon as it is measured (with the load average): a run cut short still says something."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  {what} {name}: {', '.join(f'{v:.3f}' for v in values)} (load average {load:.2f})",
          file=sys.stderr, flush=True)


def measure(url: str, tokens: int, runs: int, what: str = "") -> dict:
    with httpx.Client(base_url=url, timeout=600) as client:
        stream(client, "/completion", _completion(8, 0))  # warm-up
        stream(client, "/infill", _fim(0))
        one = [stream(client, "/completion", _completion(tokens, i)).rate for i in range(runs)]
        note(what, "1 client tok/s", one)
        # three samples at least for the ratios with a tight target: the median then drops one outlier
        bursts = [burst(client, tokens, 100 + 10 * r) for r in range(max(3, runs // 2))]
        note(what, "4 clients tok/s", bursts)
        idle = [stream(client, "/infill", _fim(i)).ttft for i in range(1, runs + 1)]
        note(what, "FIM idle s", idle)
        busy = []
        for i in range(max(3, runs // 2)):
            started = [threading.Event(), threading.Event()]
            longs = [threading.Thread(target=stream, args=(client, "/completion", _completion(
                4 * tokens, 500 + 2 * i + k, LONG_PROMPT), started[k])) for k in range(2)]
            for t in longs:
                t.start()
            for ev in started:
                ev.wait(120)
            time.sleep(0.3)  # both decoding
            busy.append(stream(client, "/infill", _fim(i + 1)).ttft)
            for t in longs:
                t.join()
        note(what, "FIM busy s", busy)
    return {"one_client_tps": statistics.median(one), "four_clients_tps": statistics.median(bursts),
            "fim_idle_s": statistics.median(idle), "fim_busy_s": statistics.median(busy)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer /health in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_fmgguf(model: Path, tokens: int, runs: int, home: Path) -> dict:
    port = free_port()
    env = {**os.environ, "FMGGUF_HOME": str(home), "FMGGUF_KEEP_ALIVE": "0", "FMGGUF_CTX": str(N_CTX)}
    proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "serve", "--model", str(model), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, "fmgguf serve")
        return measure(url, tokens, runs, "fmgguf")
    finally:
        stop(proc)


def run_llama_server(model: Path, tokens: int, runs: int) -> dict:
    """llama-server with 4 slots over a 4 x N_CTX unified KV cache (every slot can hold N_CTX)."""
    from _llama_server import LlamaServer, ensure_llama_server  # built once, cached like the wheel

    with LlamaServer(ensure_llama_server(), ["-m", str(model), "-np", "4", "-c", str(4 * N_CTX)]) as srv:
        return measure(srv.url, tokens, runs, "llama-server")


def model_path(arg: str | None) -> Path:
    from _harness import qwen_file

    if arg and not Path(arg).is_file():
        raise SystemExit(f"--model {arg} is not a file")
    return Path(arg) if arg else qwen_file()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model = model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="fmgguf-bench-conc-") as tmp:
        ours = run_fmgguf(model, args.tokens, args.runs, Path(tmp))
    theirs = run_llama_server(model, args.tokens, args.runs)
    checks = [
        ("4 clients vs llama-server -np 4", ours["four_clients_tps"] / theirs["four_clients_tps"], ">= 0.90",
         f"{ours['four_clients_tps']:.1f} vs {theirs['four_clients_tps']:.1f} tok/s aggregate"),
        ("4 clients vs 1 client", ours["four_clients_tps"] / ours["one_client_tps"], ">= 1.50",
         f"{ours['four_clients_tps']:.1f} vs {ours['one_client_tps']:.1f} tok/s (llama-server: "
         f"{theirs['four_clients_tps'] / theirs['one_client_tps']:.2f}x)"),
        ("FIM first token busy vs idle", ours["fim_busy_s"] / ours["fim_idle_s"], "<= 1.50",
         f"{ours['fim_busy_s'] * 1000:.0f} vs {ours['fim_idle_s'] * 1000:.0f} ms (llama-server: "
         f"{theirs['fim_busy_s'] * 1000:.0f} vs {theirs['fim_idle_s'] * 1000:.0f} ms)"),
        ("1 client vs llama-server", ours["one_client_tps"] / theirs["one_client_tps"], ">= 0.95",
         f"{ours['one_client_tps']:.1f} vs {theirs['one_client_tps']:.1f} tok/s"),
    ]
    failed = 0
    for name, ratio, target, detail in checks:
        ok = ratio >= float(target[3:]) if target.startswith(">=") else ratio <= float(target[3:])
        failed += not ok
        print(f"{'ok  ' if ok else 'MISS'} {name}: {ratio:.2f}x (target {target}) - {detail}")
    if args.json:
        print(json.dumps({"model": str(model), "fmgguf": ours, "llama_server": theirs}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
