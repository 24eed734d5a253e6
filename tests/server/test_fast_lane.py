"""The autocomplete fast lane on a live server: KV prefix reuse reported as tokens_cached, a newer
request from the same client cancelling the one it supersedes, and t_max_predict_ms."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx

PREFIX = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(40))
SUFFIX = "\n\nprint(f1(2))\n"


def _infill(url: str, headers: dict | None = None, **body: Any) -> dict:
    base = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "prompt": "", "n_predict": 4, "temperature": 0}
    r = httpx.post(url + "/infill", json={**base, **body}, headers=headers or {}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_second_request_reuses_the_prefix(served: Any) -> None:
    _infill(served.url, input_prefix="x = 1\n")  # something else in the cache first
    cold = _infill(served.url)
    warm = _infill(served.url, prompt="d")
    assert cold["tokens_cached"] < 0.2 * cold["tokens_evaluated"]
    assert warm["tokens_cached"] >= 0.8 * warm["tokens_evaluated"]
    assert warm["timings"]["prompt_n"] < 0.2 * cold["timings"]["prompt_n"]
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    cached = next(ln for ln in metrics.splitlines() if ln.startswith('fmgguf_tokens_total{kind="cached"}'))
    assert int(cached.split()[-1]) >= warm["tokens_cached"]


def test_time_limit_stops_generation(served: Any) -> None:
    out = _infill(served.url, n_predict=3000, t_max_predict_ms=30, input_prefix="x = [", input_suffix="")
    assert out["stop_type"] == "limit" and out["timings"]["predicted_n"] < 3000
    assert out["timings"]["predicted_ms"] < 5000


def _stream(url: str, ua: str, out: dict, key: str, **body: Any) -> None:
    base = {"input_prefix": "x = [", "input_suffix": "", "prompt": "", "n_predict": 3000, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", url + "/infill", json={**base, **body}, headers={"User-Agent": ua}, timeout=120) as r:
        out[key + "_status"] = r.status_code
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if data.get("stop"):
                    out[key] = data


def test_newer_request_from_the_same_client_cancels_the_older(served: Any) -> None:
    out: dict = {}
    first = threading.Thread(target=_stream, args=(served.url, "editor-a", out, "first"))
    first.start()
    deadline = time.monotonic() + 30
    while not served.state.gate.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the first one is generating now
    started = time.monotonic()
    _stream(served.url, "editor-a", out, "second", n_predict=3)
    first.join(30)
    assert out["first"]["stop_type"] == "none"  # cancelled, not finished
    assert out["first"]["tokens_predicted"] < 3000
    assert out["second"]["tokens_predicted"] >= 1 and time.monotonic() - started < 20
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    assert "fmgguf_superseded_total 1" in metrics or "fmgguf_superseded_total 2" in metrics


def test_other_clients_are_not_cancelled(served: Any) -> None:
    out: dict = {}
    first = threading.Thread(target=_stream, args=(served.url, "editor-b", out, "first"), kwargs={"n_predict": 40})
    first.start()
    time.sleep(0.3)
    _stream(served.url, "editor-c", out, "second", n_predict=3)
    first.join(60)
    assert out["first"]["stop_type"] in ("limit", "eos") and out["first"]["stop_type"] != "none"


def test_dropped_context_chunk_keeps_the_rest_cached(served: Any) -> None:
    """llama.vscode's ring buffer evicts its oldest chunk: the chunks after it move down in the KV cache."""
    old = {"filename": "old.py", "text": "".join(f"OLD_{i} = {i} * 3\n" for i in range(60))}
    kept = {"filename": "kept.py", "text": "".join(f"def kept_{i}(v):\n    return v + {i}\n" for i in range(40))}
    first = _infill(served.url, input_extra=[old, kept], prompt="x")
    second = _infill(served.url, input_extra=[kept], prompt="x")
    assert first["tokens_evaluated"] - second["tokens_evaluated"] > 200  # the old chunk is gone
    assert second["tokens_cached"] >= 0.8 * second["tokens_evaluated"], second


def test_a_client_that_goes_away_frees_the_model(served: Any) -> None:
    for path, body in (("/infill", {"input_prefix": "x = [", "n_predict": 3000, "stream": True}),
                       ("/api/generate", {"model": "tiny-qwen", "prompt": "x = [", "suffix": "]",
                                          "options": {"num_predict": 3000}}),
                       ("/v1/fim/completions", {"prompt": "x = [", "max_tokens": 3000, "stream": True})):
        with httpx.stream("POST", served.url + path, json=body, timeout=60) as r:
            next(r.iter_lines())  # it is generating
        deadline = time.monotonic() + 10
        while served.state.gate.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not served.state.gate.busy, path  # cancelled at the next token, not after 3000
