"""Autocomplete fast lane: KV prefix reuse between FIM requests on the same file, through a live server.

    .venv/bin/python benchmarks/bench_fim_cache.py [--rounds 3] [--tokens 1500] [--json]

Each round: a fresh ~1,500-token Python file (cursor near its end, a few lines after it) goes to
POST /infill (cold: nothing of it is in the KV cache), then the same request after one typed
character (warm). Prints, against the cold request measured in the same run:

- ``warm time to first token``: client-side, first streamed content (target <= 0.3x cold);
- ``tokens_cached share``: tokens_cached / prompt tokens of the warm request (target >= 0.90).

Uses the bench-size tiny qwen2 model (Q4_K_M, real Qwen2.5 FIM tokens) served from a loopback hub.
``--llama-server PATH`` also runs the same rounds against llama.cpp's own server (built from the
vendored sources) on the same file, and prints the two side by side (no target).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import Report  # noqa: E402

MODEL = "bench-qwen"


def source_file(seed: int, n_tokens: int) -> str:
    """Plausible Python of about ``n_tokens`` tokens (Qwen's tokenizer: ~3.5 characters a token)."""
    parts, i = [], 0
    while sum(map(len, parts)) < n_tokens * 3.4:
        parts.append(f"def handler_{seed}_{i}(request, limit={i % 7 + 1}):\n"
                     f"    \"\"\"Handle request {i} of batch {seed}.\"\"\"\n"
                     f"    items = [x * {i + 2} for x in request.items if x > {i % 5}]\n"
                     f"    return sorted(items)[:limit]\n\n\n")
        i += 1
    return "".join(parts)


def serve(root: Path) -> tuple[object, str, object]:
    import uvicorn
    import yaml

    from fmgguf.server.app import create_app
    from fmgguf.server.runner import bind_socket
    from fmgguf.settings import Settings
    from fmgguf.testing import HubServer, tiny_card, tiny_repo_files

    repo = f"fmgguf-test/{MODEL}-GGUF"
    card = tiny_card(MODEL, arch="qwen2", size="bench", repo=repo, quants=("Q4_K_M",))
    hub = HubServer({repo: tiny_repo_files(MODEL, arch="qwen2", size="bench", quants=("Q4_K_M",))}).__enter__()
    (root / "catalog.yaml").write_text(yaml.safe_dump({"models": [card]}), encoding="utf-8")
    settings = Settings.load(env={}, home=root / "home", config_file=root / "config.yaml",
                             catalog_file=root / "catalog.yaml", hf_endpoint=hub.endpoint, hub_cache=root / "hub",
                             keep_alive=0.0, default_ctx=4096)
    app = create_app(settings)
    app.state.fmgguf.downloader.download_model(MODEL, "Q4_K_M")
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}", hub


def infill(client: object, url: str, prefix: str, suffix: str) -> tuple[float, dict]:
    """(seconds to the first streamed event, the final answer) of one streamed /infill."""
    body = {"input_prefix": prefix, "input_suffix": suffix, "prompt": "", "n_predict": 8, "temperature": 0,
            "stream": True, "cache_prompt": True, "model": MODEL}
    t0 = time.perf_counter()
    first, final = None, {}
    # a fresh connection each time: llama-server closes idle keep-alive connections under a pooled client
    with client.stream("POST", url + "/infill", json=body, timeout=300,  # type: ignore[attr-defined]
                       headers={"Connection": "close"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if first is None:
                first = time.perf_counter() - t0
            data = json.loads(line[6:])
            if data.get("stop"):
                final = data
    return first or (time.perf_counter() - t0), final


def llama_server_rounds(binary: str, model: Path, rounds: int, n_tokens: int) -> list[dict]:
    """The same cold/warm rounds against llama.cpp's llama-server (``--cache-reuse 256``)."""
    import subprocess

    import httpx

    from fmgguf.server.runner import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([binary, "-m", str(model), "--port", str(port), "--host", "127.0.0.1", "-c", "4096",
                             "--cache-reuse", "256", "-np", "1", "--no-webui"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return _rounds(url, rounds, n_tokens)
    finally:
        proc.terminate()
        proc.wait(10)


def _rounds(url: str, rounds: int, n_tokens: int) -> list[dict]:
    import httpx

    rows = []
    with httpx.Client() as client:
        infill(client, url, "def warm_up():\n    ", "\n")  # loads the model; not measured
        for seed in range(rounds):
            text = source_file(seed, n_tokens)
            cut = text.rfind("    return", 0, len(text) - 120)  # a few lines before the end
            prefix, suffix = text[:cut] + "    return so", text[cut + len("    return so"):]
            cold_s, cold = infill(client, url, prefix, suffix)
            warm_s, warm = infill(client, url, prefix + "r", suffix[1:] if suffix.startswith("r") else suffix)
            prompt = warm.get("tokens_evaluated") or (warm["timings"]["prompt_n"] + warm["tokens_cached"])
            rows.append({"cold_ttft_s": cold_s, "warm_ttft_s": warm_s, "prompt_tokens": prompt,
                         "tokens_cached": warm["tokens_cached"], "cold_prompt_n": cold["timings"]["prompt_n"],
                         "warm_prompt_n": warm["timings"]["prompt_n"]})
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--llama-server", default=None, metavar="PATH", help="also measure llama.cpp's llama-server")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fmgguf-bench-fim-") as tmp:
        server, url, hub = serve(Path(tmp))
        try:
            rows = _rounds(url, args.rounds, args.tokens)
        finally:
            server.should_exit = True
            hub.__exit__(None, None, None)
    if args.llama_server:
        from fmgguf.testing import tiny_repo_files

        (model,) = tiny_repo_files(MODEL, arch="qwen2", size="bench", quants=("Q4_K_M",)).values()
        theirs = llama_server_rounds(args.llama_server, model, args.rounds, args.tokens)
        for name, rs in (("fmgguf", rows), ("llama-server", theirs)):
            c, w = statistics.median(r["cold_ttft_s"] for r in rs), statistics.median(r["warm_ttft_s"] for r in rs)
            print(f"{name:12s} cold TTFT {c:.3f} s, warm TTFT {w:.3f} s ({w / c:.2f}x), warm prompt tokens "
                  f"decoded {rs[0]['warm_prompt_n']} of {rs[0]['prompt_tokens']}", flush=True)
    cold = statistics.median(r["cold_ttft_s"] for r in rows)
    warm = statistics.median(r["warm_ttft_s"] for r in rows)
    share = min(r["tokens_cached"] / r["prompt_tokens"] for r in rows)
    if args.json:
        print(json.dumps({"rounds": rows, "cold_ttft_s": cold, "warm_ttft_s": warm, "cached_share": share}, indent=2))
    report = Report()
    report.ratio("warm time to first token", warm, cold, "<= 0.3", warm <= 0.3 * cold,
                 f"(prompt {rows[0]['prompt_tokens']} tokens)")
    report.ratio("tokens_cached share", share, 1.0, ">= 0.90", share >= 0.90,
                 f"(cached {rows[0]['tokens_cached']} of {rows[0]['prompt_tokens']})")
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
