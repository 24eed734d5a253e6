"""The autocomplete fast lane on a live server: KV prefix reuse reported as tokens_cached, a newer
request from the same client cancelling the one it supersedes, and t_max_predict_ms."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

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


# --- exact counters, and the supersede table in every FIM dialect ------------------------------------------
def _metric(url: str, sample: str) -> float:
    """The value of one /metrics sample (``name{labels}`` exactly as rendered); 0 when absent."""
    for ln in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        name, _, value = ln.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


SUPERSEDED = "fmgguf_superseded_total"


def _cancelled(dialect: str) -> str:
    return f'fmgguf_generations_total{{dialect="{dialect}",finish="cancelled"}}'


def test_cached_token_counter_grows_by_exactly_the_cached_tokens(served: Any) -> None:
    """Across one request the counters grow by that request's own numbers: cached by tokens_cached
    (not by its prompt tokens), prompt by tokens_evaluated."""
    cached, prompt = 'fmgguf_tokens_total{kind="cached"}', 'fmgguf_tokens_total{kind="prompt"}'
    _infill(served.url, input_prefix="y = 2\n")  # something else in the cache first
    for body in ({}, {"prompt": "d"}):  # cold (little cached), then warm (most of it cached)
        before = (_metric(served.url, cached), _metric(served.url, prompt))
        out = _infill(served.url, **body)
        after = (_metric(served.url, cached), _metric(served.url, prompt))
        assert out["tokens_cached"] < out["tokens_evaluated"], out  # else cached == prompt could not tell
        assert after[0] - before[0] == out["tokens_cached"], (before, after, out)
        assert after[1] - before[1] == out["tokens_evaluated"], (before, after, out)
    assert out["tokens_cached"] > 0


class _Streamer(threading.Thread):
    """POSTs a streaming request and keeps its lines; ``first`` is set at the first line (it is
    generating), ``ended`` is when the response ended; ``stop`` set: hang up (a client going away)."""

    def __init__(self, url: str, path: str, body: dict, ua: str) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.body, self.ua = url, path, body, ua
        self.first, self.stop = threading.Event(), threading.Event()
        self.lines: list[str] = []
        self.status: int | None = None
        self.ended: float | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + self.path, json=self.body, headers={"User-Agent": self.ua},
                              timeout=120) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.strip():
                        self.lines.append(line)
                        self.first.set()
                    if self.stop.is_set():
                        break
        finally:
            self.ended = time.monotonic()
            self.first.set()

    def final(self) -> dict:
        """The last JSON object of the stream (SSE ``data:`` or NDJSON)."""
        for line in reversed(self.lines):
            text = line[6:] if line.startswith("data: ") else line
            if text.startswith("{"):
                return json.loads(text)
        raise AssertionError(f"no JSON in {self.lines[-3:]}")


#: dialect -> (path, body for n tokens): every route that takes fill-in-the-middle as a stream
FIM_STREAMS = {
    "llama.cpp": ("/infill", lambda n: {"model": "tiny-qwen", "input_prefix": "x = [", "input_suffix": "]",
                                        "prompt": "", "n_predict": n, "temperature": 0, "stream": True}),
    "ollama": ("/api/generate", lambda n: {"model": "tiny-qwen", "prompt": "x = [", "suffix": "]", "stream": True,
                                           "options": {"num_predict": n, "temperature": 0}}),
    "openai": ("/v1/completions", lambda n: {"model": "tiny-qwen", "prompt": "x = [", "suffix": "]", "max_tokens": n,
                                             "temperature": 0, "stream": True}),
    "mistral": ("/v1/fim/completions", lambda n: {"model": "tiny-qwen", "prompt": "x = [", "suffix": "]",
                                                  "max_tokens": n, "temperature": 0, "stream": True}),
}


@pytest.mark.parametrize("dialect", sorted(FIM_STREAMS))
def test_every_fim_dialect_cancels_the_older_request_of_the_same_client(served: Any, dialect: str) -> None:
    path, body = FIM_STREAMS[dialect]
    ua = f"editor-{dialect}"
    superseded, cancelled = _metric(served.url, SUPERSEDED), _metric(served.url, _cancelled(dialect))
    older = _Streamer(served.url, path, body(3000), ua)
    older.start()
    assert older.first.wait(60) and older.lines, older.status
    newer = _Streamer(served.url, path, body(3), ua)
    newer.start()
    newer.join(60)
    older.join(30)
    assert newer.status == 200 and older.status == 200 and older.ended is not None
    assert _metric(served.url, SUPERSEDED) - superseded == 1
    assert _metric(served.url, _cancelled(dialect)) - cancelled == 1  # the older one, not the newer


@pytest.fixture
def one_slot(settings: Any, live_server: Any) -> Any:
    """A live server whose tiny-qwen runner has one slot, so a second generation waits for its turn."""
    import dataclasses

    from fmgguf.server.app import create_app

    app = create_app(dataclasses.replace(settings, parallel=1), max_queue=64)
    state = app.state.fmgguf
    state.downloader.download_model("tiny-qwen", "F16")
    state.manager.switch_model("tiny-qwen", "F16", n_ctx=4096)
    with live_server(app) as live:
        yield live
    state.manager.close()


def test_tabby_replaces_a_queued_completion_of_the_same_client(one_slot: Any) -> None:
    """Tabby's completions do not stream (64 tokens at most): the older one is replaced while it waits
    for its turn behind another client's generation (one slot: the runner cannot take it beside)."""
    served = one_slot
    seg = {"segments": {"prefix": "def add(a, b):\n    return ", "suffix": "\n"}, "user": "ann"}
    superseded = _metric(served.url, SUPERSEDED)
    blocker = _Streamer(served.url, *_infill_stream(3000), "someone-else")
    blocker.start()
    assert blocker.first.wait(60) and blocker.lines
    answers: dict[str, httpx.Response] = {}

    def tabby(key: str) -> None:
        answers[key] = httpx.post(served.url + "/v1/completions", json=seg, headers={"User-Agent": "tabby-ide"},
                                  timeout=120)

    manager = served.state.manager
    older = threading.Thread(target=tabby, args=("older",))
    older.start()
    _wait_for(lambda: manager.queue_depth == 1)
    newer = threading.Thread(target=tabby, args=("newer",))
    newer.start()
    _wait_for(lambda: manager.queue_depth == 2 or not older.is_alive())
    blocker.stop.set()  # the other client goes away: the queue moves on
    older.join(60)
    newer.join(60)
    assert answers["older"].status_code == 499, answers["older"].text
    assert "newer request from the same client" in answers["older"].text
    assert answers["newer"].status_code == 200 and answers["newer"].json()["choices"]
    assert _metric(served.url, SUPERSEDED) - superseded == 1


def _infill_stream(n: int) -> tuple[str, dict]:
    path, body = FIM_STREAMS["llama.cpp"]
    return path, body(n)


def _wait_for(cond: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_warm_up_does_not_cancel_the_running_completion_of_its_client(served: Any) -> None:
    """llama.vscode warms the cache up (n_predict 0) while it waits for a completion: that completion
    runs to its end."""
    superseded = _metric(served.url, SUPERSEDED)
    running = _Streamer(served.url, *_infill_stream(300), "editor-warm")
    running.start()
    assert running.first.wait(60) and running.lines
    sent = time.monotonic()
    warm = httpx.post(served.url + "/infill", json={"model": "tiny-qwen", "input_prefix": "x = [", "input_suffix": "]",
                                                    "prompt": "", "n_predict": 0}, headers={"User-Agent": "editor-warm"},
                      timeout=120)
    running.join(60)
    assert warm.status_code == 200 and warm.json()["tokens_predicted"] == 0
    assert running.ended is not None and running.ended > sent, "the completion ended before the warm-up: no test"
    final = running.final()
    assert final["stop_type"] in ("limit", "eos"), final  # "none": it was cancelled
    assert _metric(served.url, SUPERSEDED) == superseded


def test_three_requests_each_cancels_the_one_before(served: Any) -> None:
    """A, B, C from one client: B cancels A, and C cancels B (the table remembers B after A ends), not earlier."""
    superseded, cancelled = _metric(served.url, SUPERSEDED), _metric(served.url, _cancelled("llama.cpp"))
    a = _Streamer(served.url, *_infill_stream(3000), "editor-abc")
    a.start()
    assert a.first.wait(60) and a.lines
    b = _Streamer(served.url, *_infill_stream(3000), "editor-abc")
    b.start()
    assert b.first.wait(60) and b.lines, b.status  # B is generating: A was cancelled and ended
    a.join(30)
    assert a.final()["stop_type"] == "none"
    c_sent = time.monotonic()
    c = httpx.post(served.url + "/infill", json=_infill_stream(3)[1] | {"stream": False},
                   headers={"User-Agent": "editor-abc"}, timeout=120)
    b.join(30)
    assert c.status_code == 200 and c.json()["tokens_predicted"] >= 1
    assert b.ended is not None and b.ended > c_sent  # B ran until C came
    assert b.final()["stop_type"] == "none" and b.final()["tokens_predicted"] < 3000  # cancelled by C
    assert _metric(served.url, SUPERSEDED) - superseded == 2
    assert _metric(served.url, _cancelled("llama.cpp")) - cancelled == 2
