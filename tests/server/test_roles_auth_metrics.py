"""Model roles (a FIM model and a chat model resident together, routed by ``model``), the API key on
every dialect in each client's header form, and /metrics in Prometheus' text format."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

KEY = "editor-key-123456"


def test_fim_and_chat_models_stay_resident_together(served: Any) -> None:
    url = served.url
    chat = httpx.post(url + "/api/chat", json={"model": "tiny-llama", "stream": False, "options": {"num_predict": 2},
                                               "messages": [{"role": "user", "content": "hi"}]}, timeout=120)
    assert chat.status_code == 200 and chat.json()["model"] == "tiny-llama"
    fim = httpx.post(url + "/infill", json={"input_prefix": "def f(", "input_suffix": ")\n", "n_predict": 2}, timeout=120)
    assert fim.status_code == 200 and fim.json()["model"] == "tiny-qwen"  # no model named: the FIM-capable one
    resident = {m["model"] for m in httpx.get(url + "/api/ps", timeout=10).json()["models"]}
    assert {"tiny-qwen:F16", "tiny-llama:F16"} <= resident
    again = httpx.post(url + "/api/chat", json={"model": "tiny-llama", "stream": False, "options": {"num_predict": 2},
                                                "messages": [{"role": "user", "content": "hi"}]}, timeout=120)
    assert again.json()["load_duration"] == 0 and again.status_code == 200
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "fmgguf_loaded_models 2" in metrics


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama:F16", "tiny-llama:latest"])
@pytest.mark.parametrize("path,body", [("/infill", {"input_prefix": "x"}),
                                       ("/v1/fim/completions", {"prompt": "x"}),
                                       ("/v1/completions", {"prompt": "x", "suffix": "y"}),
                                       ("/api/generate", {"prompt": "x", "suffix": "y"})])
def test_fim_to_a_model_without_fim_names_a_downloaded_one(served: Any, path: str, body: dict, name: str) -> None:
    """Refused before anything is loaded, whether the name has a quant (``id:QUANT``) or not."""
    def resident() -> set[str]:
        return {m["model"] for m in httpx.get(served.url + "/api/ps", timeout=10).json()["models"]}

    before = resident()
    r = httpx.post(served.url + path, json={**body, "model": name, "stream": False}, timeout=60)
    assert r.status_code == 422
    assert "tiny-qwen" in r.text and "not trained for fill-in-the-middle" in r.text
    assert resident() == before


def test_unknown_model_gets_the_closest_ids(served: Any) -> None:
    r = httpx.post(served.url + "/infill", json={"input_prefix": "x", "model": "tiny-qwenn"}, timeout=30)
    assert r.status_code == 404 and "tiny-qwen" in r.json()["error"]["message"]


def test_metrics_text_format(served: Any) -> None:
    httpx.post(served.url + "/v1/fim/completions", json={"prompt": "x = ", "suffix": "\n", "max_tokens": 3}, timeout=60)
    text = httpx.get(served.url + "/metrics", timeout=10).text
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    for ln in samples:  # name{labels} value, as Prometheus parses it
        name, value = ln.rsplit(" ", 1)
        float(value)
        assert name[0].isalpha()
    assert 'fmgguf_requests_total{method="POST",route="/v1/fim/completions",status="200"}' in text
    assert 'fmgguf_time_to_first_token_seconds_bucket{dialect="mistral",le="+Inf"}' in text
    assert "fmgguf_queue_depth 0" in text and "fmgguf_runner_restarts_total" in text
    assert "# TYPE fmgguf_tokens_per_second histogram" in text


def test_metrics_count_streamed_refused_and_unknown_requests(served: Any) -> None:
    """The request counter (a plain ASGI middleware) counts a stream with the status it starts with, a
    refusal with its 4xx, and a path no route serves as ``other``."""
    import re

    def count(method: str, route: str, status: int) -> float:
        text = httpx.get(served.url + "/metrics", timeout=10).text
        line = f'fmgguf_requests_total{{method="{method}",route="{route}",status="{status}"}}'
        found = re.search(re.escape(line) + r" (\S+)", text)
        return float(found.group(1)) if found else 0.0

    before = [count("POST", "/v1/completions", 200), count("POST", "/v1/completions", 422),
              count("GET", "other", 404)]
    with httpx.stream("POST", served.url + "/v1/completions", timeout=60,
                      json={"prompt": "x = ", "max_tokens": 3, "stream": True}) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    assert httpx.post(served.url + "/v1/completions", json={"prompt": 5}, timeout=10).status_code == 422
    assert httpx.get(served.url + "/no/such/path", timeout=10).status_code == 404
    after = [count("POST", "/v1/completions", 200), count("POST", "/v1/completions", 422),
             count("GET", "other", 404)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("buckets,edges", [("TTFT_BUCKETS", (0.1, 0.25, 1.0)), ("TPS_BUCKETS", (10.0, 50.0))])
def test_a_value_on_a_bucket_edge_counts_in_that_bucket(buckets: str, edges: tuple[float, ...]) -> None:
    """Prometheus buckets are ``le``: less than *or equal to* the edge."""
    from fmgguf.server import metrics

    bounds = getattr(metrics, buckets)
    for edge in edges:
        hist = metrics.Histogram(bounds)
        hist.observe(edge)
        lines = hist.lines("x")
        assert f'x_bucket{{le="{edge:g}"}} 1' in lines, lines  # on the edge: in its own bucket ...
        for b in bounds:  # ... and in every one above it, none below
            assert f'x_bucket{{le="{b:g}"}} {int(b >= edge)}' in lines, (edge, lines)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, hub: Any, tiny_entries: Any, live_server: Any) -> Any:
    from fmgguf.server.app import create_app

    from .conftest import make_settings  # noqa: PLC0415

    app = create_app(make_settings(tmp_path_factory.mktemp("keyed"), hub.endpoint, tiny_entries[0]), api_key=KEY)
    with live_server(app) as live:
        yield live


PROTECTED = [("GET", "/api/tags"), ("GET", "/api/version"), ("POST", "/api/show"), ("POST", "/infill"),
             ("POST", "/completion"), ("POST", "/v1/completions"), ("POST", "/v1/fim/completions"),
             ("GET", "/v1/health"), ("POST", "/v1/events"), ("GET", "/metrics"), ("GET", "/v1/models")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_the_key_guards_every_dialect(keyed: Any, method: str, path: str) -> None:
    r = httpx.request(method, keyed.url + path, json={}, timeout=10)
    assert r.status_code == 401, (path, r.status_code)


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {KEY}"},
                                     {"Authorization": f"Token {KEY}"}, {"x-api-key": KEY}, {"api-key": KEY}])
def test_each_client_header_form_is_accepted(keyed: Any, headers: dict) -> None:
    assert httpx.get(keyed.url + "/api/tags", headers=headers, timeout=10).status_code == 200
    assert httpx.get(keyed.url + "/v1/health", headers=headers, timeout=10).status_code == 200
    assert httpx.get(keyed.url + "/api/tags", headers={"Authorization": "Bearer wrong-key-0000"},
                     timeout=10).status_code == 401


def test_ollama_client_with_the_key_and_public_health(keyed: Any) -> None:
    ollama = pytest.importorskip("ollama")
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=keyed.url).list()
    assert info.value.status_code == 401
    assert ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {KEY}"}).list() is not None
    assert httpx.get(keyed.url + "/health", timeout=10).json() == {"status": "ok"}  # liveness stays public
