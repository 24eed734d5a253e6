"""The per-request `speculative` field on a live server: llama.cpp's /completion and OpenAI's
/v1/completions take it, the same greedy text comes back, drafts show in llama.cpp's timings and in
/metrics totals, and a mode that does not exist is a 4xx naming the fix."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROMPT = "def add(a, b):\n    return a + b\n\n" * 8 + "def add(a, b):\n"

pytestmark = pytest.mark.slow


def _completion(url: str, **body: Any) -> dict:
    r = httpx.post(url + "/completion", json={"prompt": PROMPT, "n_predict": 48, "temperature": 0, **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_speculative_field_same_text_and_counts(served: Any) -> None:
    plain = _completion(served.url)
    assert plain["timings"]["draft_n"] == 0
    runs = [_completion(served.url, speculative="ngram") for _ in range(2)]
    assert [r["content"] for r in runs] == [plain["content"]] * 2
    assert runs[1]["timings"]["draft_n_accepted"] > 0
    metrics = httpx.get(served.url + "/metrics", timeout=30).text
    accepted = next(ln for ln in metrics.splitlines() if ln.startswith('fmgguf_tokens_total{kind="accepted"}'))
    assert int(accepted.split()[-1]) >= runs[1]["timings"]["draft_n_accepted"]
    oa = httpx.post(served.url + "/v1/completions", timeout=300,
                    json={"prompt": PROMPT, "max_tokens": 48, "temperature": 0, "speculative": "ngram"})
    assert oa.status_code == 200, oa.text


def test_unknown_mode_is_a_client_error(served: Any) -> None:
    r = httpx.post(served.url + "/completion", json={"prompt": "x", "n_predict": 2, "speculative": "warp"}, timeout=60)
    assert 400 <= r.status_code < 500 and "ngram" in r.text


def test_draft_mode_without_a_draft_model_is_a_client_error(served: Any) -> None:
    r = httpx.post(served.url + "/completion", json={"prompt": "x", "n_predict": 2, "speculative": "draft"}, timeout=60)
    assert 400 <= r.status_code < 500 and "without a draft model" in r.text and "--speculative draft" in r.text
