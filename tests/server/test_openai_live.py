"""The OpenAI-compatible API on a live server, driven by the official `openai` client, plus load,
queue bound and client-disconnect behaviour."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest


def _client(live: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_loaded_and_downloaded(served: Any) -> None:
    ids = [m.id for m in _client(served).models.list().data]
    assert ids[0] == "tiny-qwen"
    assert sorted(ids) == ["tiny-llama", "tiny-qwen"]  # one quant each on disk: one entry each, no "id:F16" twins


def test_chat_completion_streams(served: Any) -> None:
    client = _client(served)
    stream = client.chat.completions.create(
        model="tiny-qwen", messages=[{"role": "user", "content": "Write hello world in Python."}],
        max_tokens=12, temperature=0, seed=1, stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert len(pieces) >= 2, "expected the answer in several chunks"
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= 1 and usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_fim_completion_streams_with_suffix(served: Any) -> None:
    client = _client(served)
    stream = client.completions.create(model="tiny-qwen", prompt="def add(a, b):\n    ", suffix="\n    return c\n",
                                       max_tokens=10, temperature=0, stream=True)
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert "".join(pieces)
    assert served.state.last_generation["completion_tokens"] >= 1


def test_completion_counts_usage(served: Any) -> None:
    out = _client(served).completions.create(model="tiny-qwen:F16", prompt="import os\n", max_tokens=7, temperature=0)
    assert out.object == "text_completion"
    assert out.usage.completion_tokens <= 7 and out.usage.completion_tokens >= 1
    assert out.choices[0].finish_reason in ("stop", "length")
    fim = _client(served).completions.create(model="tiny-qwen", prompt="x = ", suffix="\nprint(x)", max_tokens=5)
    assert fim.usage.prompt_tokens > 2


def test_unknown_model_is_a_clear_404(served: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        _client(served).completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert "unknown model id" in str(info.value)


def test_bad_request_is_422_in_openai_shape(served: Any) -> None:
    r = httpx.post(served.url + "/v1/chat/completions", json={"messages": [], "max_tokens": -1}, timeout=10)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "messages" in err["message"]


def test_fifty_concurrent_requests_all_answered(served: Any) -> None:
    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=served.url, timeout=120, limits=limits) as client:
            async def one(i: int) -> httpx.Response:
                if i % 2:
                    return await client.post("/v1/completions", json={"prompt": f"# task {i}\n", "max_tokens": 3})
                return await client.post("/api/models/generate", json={"prompt": f"x{i}", "max_tokens": 3, "seed": i})
            return await asyncio.gather(*(one(i) for i in range(50)))

    started = time.monotonic()
    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 50
    assert all(r.json().get("usage", r.json()).get("completion_tokens", 0) >= 1 for r in responses)
    assert time.monotonic() - started < 90


def test_full_queue_answers_429_never_500(served: Any, live_server: Any) -> None:
    from fmgguf.server.app import create_app

    state = served.state
    app = create_app(state.settings, downloader=state.downloader, catalog=state.catalog, max_queue=2)
    small_manager = app.state.fmgguf.manager  # its own: max_queue is the queue of each of its models
    small_manager.switch_model(state.manager.current_model().id, state.manager.current_model().quant, n_ctx=1024)
    with live_server(app) as small:
        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=small.url, timeout=120) as client:
                return await asyncio.gather(*(client.post("/api/models/generate", json={"prompt": "a", "max_tokens": 48})
                                              for _ in range(12)))
        responses = asyncio.run(main())
    small_manager.close()
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 3 and codes.count(429) >= 1, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"] == "BusyError" and "queue is full" in busy.json()["message"]


def test_client_disconnect_stops_generation(served: Any) -> None:
    state = served.state
    body = {"prompt": "def long_function():\n", "max_tokens": 3000, "temperature": 1.0, "seed": 3, "stream": True}
    with httpx.Client(base_url=served.url, timeout=30) as client:
        with client.stream("POST", "/api/models/generate", json=body) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data:"):
                    seen += 1
                    if seen >= 3:
                        break
        # leaving both blocks closes the connection mid-stream
    deadline = time.monotonic() + 10
    while state.gate.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.gate.busy, "generation kept running after the client left"
    last = state.last_generation
    assert last["finish_reason"] == "cancelled", last
    assert last["completion_tokens"] < 3000
    r = httpx.post(served.url + "/api/models/generate", json={"prompt": "ok", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200


def test_benchmark_over_http_then_compare_shows_it(served: Any) -> None:
    base = served.url + "/api/models/benchmark"
    bad = httpx.post(base, json={"model_ids": ["tiny-llama"], "suite": "../etc/passwd"}, timeout=10)
    assert bad.status_code == 422 and "suite" in bad.json()["message"]
    start = httpx.post(base, json={"model_ids": ["tiny-llama"], "quant": "F16", "tasks": ["barrier_cubic_damped"],
                                   "max_tokens": 24}, timeout=60)
    assert start.status_code == 202, start.text
    run_id = start.json()["run_id"]
    run = _wait_for_run(base, run_id)
    assert run["state"] == "done", run
    assert list(run["results"]) == ["tiny-llama:F16"]
    result = run["results"]["tiny-llama:F16"]
    assert result["status"] == "done" and result["tasks"] == 1 and 0.0 <= result["pass_at_1"] <= 1.0
    report = httpx.get(f"{base}/{run_id}/report", timeout=10).json()
    assert "tiny-llama" in report["report"]["markdown"] and report["report"]["html"].lstrip().startswith("<")
    # the user's model is back, and compare shows the benchmark
    assert httpx.get(served.url + "/api/models/current", timeout=10).json()["model"]["id"] == "tiny-qwen"
    cmp = httpx.post(served.url + "/api/models/compare", json={"model_ids": ["tiny-llama", "tiny-qwen"]}, timeout=30).json()
    assert cmp["models"][0]["benchmarks"]["pass_at_1"] == result["pass_at_1"]
    assert cmp["models"][1]["benchmarks"] is None


def _wait_for_run(base: str, run_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/{run_id}", timeout=10).json()
        if run["state"] != "running":
            return run
        time.sleep(0.2)
    raise AssertionError(f"benchmark {run_id} still running after {timeout_s} s")


def test_one_benchmark_of_two_quants_of_one_model_keeps_both_results(served: Any) -> None:
    state = served.state
    state.downloader.download_model("tiny-llama", "Q4_K_M")
    try:
        base = served.url + "/api/models/benchmark"
        start = httpx.post(base, json={"model_ids": ["tiny-llama:Q4_K_M", "tiny-llama:F16"],
                                       "tasks": ["barrier_cubic_damped"], "max_tokens": 16}, timeout=60)
        assert start.status_code == 202, start.text
        run = _wait_for_run(base, start.json()["run_id"])
        assert run["state"] == "done", run
        assert sorted(run["results"]) == ["tiny-llama:F16", "tiny-llama:Q4_K_M"]
        assert {k: r["quant"] for k, r in run["results"].items()} == {"tiny-llama:F16": "F16",
                                                                       "tiny-llama:Q4_K_M": "Q4_K_M"}
        report = httpx.get(f"{base}/{run['run_id']}/report", timeout=10).json()
        assert sorted(report["summaries"]) == sorted(run["results"])
        assert sorted(r["quant"] for r in report["report"]["rows"]) == ["F16", "Q4_K_M"]
    finally:
        state.downloader.delete_model("tiny-llama", "Q4_K_M")
