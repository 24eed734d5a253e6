"""Replayed request bodies of real editor clients (tests/server/fixtures/<client>/*.json, taken from each
client's source; the "source" field says where) against one live server with a FIM model (tiny-qwen)
and a chat-only model (tiny-llama). Each test checks what that client reads from the answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FIM_MODEL, CHAT_MODEL = "tiny-qwen:F16", "tiny-llama:F16"


def _fill(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{fim_model}", FIM_MODEL).replace("{chat_model}", CHAT_MODEL)
    if isinstance(value, list):
        return [_fill(v) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    return value


def replay(served: Any, fixture: str) -> dict[str, Any]:
    """Send every step of a fixture; returns step name -> parsed answer (JSON, NDJSON lines or SSE data)."""
    spec = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    with httpx.Client(base_url=served.url, headers=spec.get("headers") or {}, timeout=120) as client:
        for step in spec["steps"]:
            r = client.request(step["method"], step["path"], json=_fill(step.get("body")) if "body" in step else None)
            assert r.status_code == 200, (step["name"], r.status_code, r.text[:300])
            kind = r.headers.get("content-type", "")
            if "ndjson" in kind:
                out[step["name"]] = [json.loads(line) for line in r.text.splitlines() if line.strip()]
            elif "event-stream" in kind:
                data = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
                out[step["name"]] = [json.loads(d) if d != "[DONE]" else d for d in data]
            else:
                out[step["name"]] = r.json()
    return out


def test_llama_vscode_infill_with_warm_up(served: Any) -> None:
    got = replay(served, "llama.vscode/infill.json")
    warm = got["ring-buffer warm-up"]
    assert warm["content"] == "" and warm["tokens_predicted"] == 0
    first, second = got["completion"], got["one more typed character"]
    for answer in (first, second):
        assert isinstance(answer["content"], str) and answer["truncated"] is False
        assert set(answer["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms"}
        assert answer["timings"]["predicted_n"] >= 1
    # the warm-up put the extra file in the KV cache; one typed character later only the tail is decoded
    assert first["tokens_cached"] > 0
    assert second["tokens_cached"] >= 0.5 * second["tokens_evaluated"], second
    assert second["timings"]["prompt_n"] == second["tokens_evaluated"] - second["tokens_cached"]


def test_continue_ollama_autocomplete(served: Any) -> None:
    got = replay(served, "continue/ollama_autocomplete.json")
    show = got["show"]
    assert ".Suffix" in show["template"] and "insert" in show["capabilities"]
    for line in show["parameters"].split("\n"):  # Continue's own parser throws on a line it cannot split
        assert re.match(r'^(\S+)\s+((?:".*")|\S+)$', line), line
    lines = got["fim"]
    assert all("error" not in ln for ln in lines)
    assert all(ln["done"] is False and "response" in ln for ln in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] in ("stop", "length")
    assert last["eval_count"] >= 1 and last["prompt_eval_count"] >= 1 and last["total_duration"] > 0


def test_continue_openai_autocomplete(served: Any) -> None:
    got = replay(served, "continue/openai_autocomplete.json")
    assert FIM_MODEL.partition(":")[0] in {m["id"].partition(":")[0] for m in got["models"]["data"]}
    events = got["fim prompt"]
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e.get("choices")]
    assert chunks and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_zed_ollama_chat(served: Any) -> None:
    got = replay(served, "zed/ollama_chat.json")
    assert CHAT_MODEL in [m["name"] for m in got["tags"]["models"]]
    assert "insert" not in got["show"]["capabilities"]  # tiny-llama's card says no FIM
    lines = got["chat"]
    assert all(ln["message"]["role"] == "assistant" for ln in lines)
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] >= 1
    assert "".join(ln["message"]["content"] for ln in lines[:-1])


def test_copilot_byok_ollama(served: Any) -> None:
    got = replay(served, "copilot/byok_ollama.json")
    version = tuple(int(x) for x in got["version"]["version"].split("."))
    assert version >= (0, 6, 4)
    assert all("model" in m for m in got["tags"]["models"])
    show = got["show"]
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] >= 512
    assert "tools" in show["capabilities"]  # a chat model takes tools (its template, or the JSON envelope)
    events = got["chat"]
    assert events[-1] == "[DONE]"
    usage = [e["usage"] for e in events[:-1] if e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] >= 1


def test_tabby_segments(served: Any) -> None:
    got = replay(served, "tabby/completion.json")
    health = got["health"]
    assert set(health) >= {"device", "arch", "cpu_info", "cpu_count", "cuda_devices", "version"}
    assert set(health["version"]) == {"build_date", "build_timestamp", "git_sha", "git_describe"}
    answer = got["completion"]
    assert answer["id"] and answer["choices"][0]["index"] == 0 and isinstance(answer["choices"][0]["text"], str)
    assert got["event"] == {}


@pytest.mark.parametrize("body", [{"segments": {"prefix": "x"}, "prompt": "y"}, {"prompt": "y"}])
def test_v1_completions_prompt_means_openai(served: Any, body: dict) -> None:
    r = httpx.post(served.url + "/v1/completions", json={**body, "max_tokens": 2, "model": FIM_MODEL}, timeout=60)
    assert r.status_code == 200 and r.json()["object"] == "text_completion"


def test_continue_llamacpp_autocomplete(served: Any) -> None:
    events = replay(served, "continue/llamacpp_autocomplete.json")["completion"]
    assert all(e["stop"] is False and isinstance(e["content"], str) for e in events[:-1])
    last = events[-1]
    assert last["stop"] is True and last["timings"]["predicted_n"] >= 1 and "tokens_cached" in last


def test_minuet_mistral_fim(served: Any) -> None:
    events = replay(served, "minuet/mistral_fim.json")["fim"]
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_tabby_server_setting(served: Any) -> None:
    r = httpx.get(served.url + "/v1beta/server_setting", timeout=10)
    assert r.json() == {"disable_client_side_telemetry": True}
