"""The official ``ollama`` Python client against a live fmgguf server: list, show, ps, generate (with
suffix = FIM, streaming with the final counters), chat, embed (a clear 400), pull (our verified pull with
progress), delete, and the errors it raises for an unknown model or FIM on a model that cannot."""

from __future__ import annotations

from typing import Any

import pytest

ollama = pytest.importorskip("ollama")


def _client(served: Any) -> Any:
    return ollama.Client(host=served.url, timeout=120)


def test_list_show_ps(served: Any) -> None:
    client = _client(served)
    names = [m.model for m in client.list().models]
    assert "tiny-qwen:F16" in names and "tiny-llama:F16" in names
    fim = client.show("tiny-qwen")
    assert "insert" in fim.capabilities and "completion" in fim.capabilities and "tools" in fim.capabilities
    assert ".Suffix" in fim.template and "<|fim_prefix|>" in fim.template
    assert fim.modelinfo["qwen2.context_length"] == 4096  # what the loaded model really has
    plain = client.show("tiny-llama:latest")
    assert plain.capabilities == ["completion", "tools"] and ".Suffix" not in plain.template
    assert any(m.model == "tiny-qwen:F16" for m in client.ps().models)
    version = client._request_raw("GET", "/api/version").json()["version"]
    assert tuple(int(x) for x in version.split(".")) >= (0, 6, 4)


def test_generate_fim_streams_with_final_counters(served: Any) -> None:
    parts = list(_client(served).generate(model="tiny-qwen", prompt="def add(a, b):\n    return ", suffix="\n\nprint(1)\n",
                                          options={"num_predict": 6, "temperature": 0, "seed": 1}, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done_reason in ("stop", "length") and last.eval_count >= 1 and last.prompt_eval_count >= 1
    assert last.total_duration > 0 and last.eval_duration >= 0
    whole = _client(served).generate(model="tiny-qwen", prompt="def add(a, b):\n    return ", suffix="\n\nprint(1)\n",
                                     options={"num_predict": 6, "temperature": 0, "seed": 1})
    assert whole.response == "".join(p.response for p in parts)  # same seed, same text: streamed or not


def test_generate_raw_and_keep_alive(served: Any) -> None:
    out = _client(served).generate(model="tiny-qwen:F16", prompt="import os\n", raw=True, keep_alive="10m",
                                   options={"num_predict": 3, "temperature": 0})
    assert out.done and out.eval_count >= 1
    loaded = _client(served).generate(model="tiny-qwen", prompt="")  # an empty prompt only loads
    assert loaded.done_reason == "load" and loaded.response == ""


def test_embed_is_a_clear_400(served: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        _client(served).embed(model="tiny-qwen", input="hello")
    assert info.value.status_code == 400 and "cannot make embeddings" in info.value.error
    import httpx

    r = httpx.post(served.url + "/v1/embeddings", json={"model": "tiny-qwen", "input": "x"}, timeout=10)
    assert r.status_code == 400 and "cannot make embeddings" in r.json()["error"]["message"]


def test_unknown_model_names_the_closest(served: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        _client(served).generate(model="tiny-qwn", prompt="x", options={"num_predict": 1})
    assert info.value.status_code == 404 and "tiny-qwen" in info.value.error


def test_fim_on_a_model_without_fim_names_one_that_can(served: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        _client(served).generate(model="tiny-llama", prompt="def f(", suffix=")\n", options={"num_predict": 2})
    assert info.value.status_code == 422
    assert "not trained for fill-in-the-middle" in info.value.error and "tiny-qwen" in info.value.error


def test_chat_streams_messages(served: Any) -> None:
    parts = list(_client(served).chat(model="tiny-qwen", messages=[{"role": "user", "content": "hi"}],
                                      options={"num_predict": 4}, stream=True))
    assert parts[-1].done and parts[-1].eval_count >= 1
    assert all(p.message.role == "assistant" for p in parts)


def test_pull_with_progress_then_delete(served: Any) -> None:
    client = _client(served)
    lines = list(client.pull("tiny-llama:Q4_K_M", stream=True))
    statuses = [p.status for p in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses
    progress = [p for p in lines if p.total]
    assert progress and progress[-1].completed == progress[-1].total > 0
    again = [p for p in client.pull("tiny-llama:Q4_K_M", stream=True) if p.total]  # already there: complete at once
    assert again and again[-1].completed == again[-1].total
    assert "tiny-llama:Q4_K_M" in [m.model for m in client.list().models]
    client.delete("tiny-llama:Q4_K_M")
    assert "tiny-llama:Q4_K_M" not in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError):
        client.delete("tiny-llama:Q4_K_M")
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("no-such-model")
    assert info.value.status_code == 404
