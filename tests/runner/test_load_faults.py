"""Load and faults: 64 requests from 8 clients over 3 dialects and 2 models on a live server, one
runner SIGKILLed in the middle. Every request completes or gets a clean 502 naming its model, the
other model's requests all complete, the restarted runner serves the next request, and the
server's memory is back where it was."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

CLIENTS, PER_CLIENT, KILL_AFTER = 8, 8, 16


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def _send(client: httpx.Client, dialect: int, model: str, seed: int) -> tuple[int, str]:
    """(status, text or error line) of one request in dialect 0 OpenAI, 1 Ollama, 2 llama.cpp."""
    prompt = f"def task_{seed}(x):"
    if dialect == 0:
        r = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 16,
                                                 "temperature": 0.7, "seed": seed})
        ok = r.status_code == 200
        return r.status_code, r.json()["choices"][0]["text"] if ok else r.json()["error"]["message"]
    if dialect == 1:
        r = client.post("/api/generate", json={"model": model, "prompt": prompt, "stream": False, "raw": True,
                                               "options": {"num_predict": 16, "seed": seed}})
        return r.status_code, r.json()["response"] if r.status_code == 200 else r.json()["error"]
    r = client.post("/completion", json={"model": model, "prompt": prompt, "n_predict": 16, "seed": seed})
    return r.status_code, r.json()["content"] if r.status_code == 200 else r.json()["error"]["message"]


def _drive(url: str, on_done: Any, per_client: int = PER_CLIENT) -> list[tuple[str, int, str]]:
    """``per_client`` requests from each of the clients at once; (model, status, text or error) of each."""
    out: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"User-Agent": f"load-client-{c}"}) as client:
            for i in range(per_client):
                model = ("good", "other")[(c + i) % 2]
                status, text = _send(client, (c + i) % 3, model, c * 100 + i)
                with lock:
                    out.append((model, status, text))
                    n = len(out)
                on_done(n)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return out


def test_64_requests_8_clients_3_dialects_2_models_one_runner_killed(tmp_path: Path, good_path: Path,
                                                                     other_path: Path, runner_tools: Any) -> None:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime import ModelManager
    from fmgguf.server.app import create_app
    from fmgguf.settings import Settings

    shared = os.environ.get("FMGGUF_CACHE") or str(Path.home() / ".cache" / "fmgguf")
    settings = Settings.load(env={"FMGGUF_HOME": str(tmp_path / "home"), "FMGGUF_CONFIG_DIR": str(tmp_path / "config"),
                                  "FMGGUF_CATALOG": str(tmp_path / "catalog.yaml"), "HF_HUB_CACHE": str(tmp_path / "hub"),
                                  "HF_ENDPOINT": "http://127.0.0.1:9", "FMGGUF_KEEP_ALIVE": "0", "FMGGUF_CACHE": shared})
    runner_tools.register_unchecked(settings, good_path, "good")
    runner_tools.register_unchecked(settings, other_path, "other")
    catalog = Catalog.load(settings)
    downloader = ModelDownloader(settings, catalog=catalog)
    manager = ModelManager(settings, catalog=catalog, downloader=downloader, isolation="process", max_queue=64)
    app = create_app(settings, manager=manager, downloader=downloader, catalog=catalog)
    with runner_tools.LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=120) as warm:
        for model in ("good", "other"):  # both resident, each answered once in each dialect
            for dialect in range(3):
                assert _send(warm, dialect, model, 1)[0] == 200
        # the same load once without a fault, so the baseline has the server's threads and buffers
        assert all(s == 200 for _, s, _ in _drive(live.url, lambda n: None, per_client=3))
        gc.collect()
        before = _rss()
        victim = next(m.pid for m in manager.loaded() if m.id == "other")
        killed = threading.Event()

        def on_done(n: int) -> None:
            if n >= KILL_AFTER and not killed.is_set():
                killed.set()
                os.kill(victim, signal.SIGKILL)

        started = time.monotonic()
        results = _drive(live.url, on_done)
        assert killed.is_set() and len(results) == CLIENTS * PER_CLIENT, len(results)
        for model, status, text in results:
            if model == "good":
                assert status == 200, text  # the other model's runner died: nothing of this one's
            else:
                assert status == 200 or (status == 502 and "other" in text and "SIGKILL" in text), (status, text)
        assert sum(1 for m, s, _ in results if m == "other" and s == 200) >= PER_CLIENT  # it came back
        # the restarted runner serves the next request
        assert all(_send(warm, d, "other", 7)[0] == 200 for d in range(3))
        after_pid = next(m.pid for m in manager.loaded() if m.id == "other")
        assert after_pid != victim and manager.runner_restarts >= 1
        print(f"64 requests in {time.monotonic() - started:.1f} s, "
              f"{sum(1 for _, s, _ in results if s == 502)} answered 502")
        gc.collect()
        after = _rss()
    manager.close()
    assert after <= before * 1.05, f"RSS grew from {before >> 20} MiB to {after >> 20} MiB"
