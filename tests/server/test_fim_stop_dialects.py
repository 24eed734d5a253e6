"""The FIM post-processor (runtime/prompt/fim_stop.py) behind every dialect, on the tiny qwen model.

The raw generation comes from /completion with the same prompt text the FIM path lays out (greedy, so
it is the same token stream); what every FIM dialect returns must be exactly that raw text cut by
:class:`FimCutter`, with the reason reported, and the generation must stop at the cut. The tiny model
writes random tokens, so each test first looks (deterministically) for a gap whose raw text the cutter
does cut: few of its tokens hold a line break."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fmgguf.runtime.prompt.fim_stop import FimCutter, FimRules

pytestmark = pytest.mark.slow

N = 64  # Tabby's fixed max_decoding_tokens, so every dialect asks for the same
SUFFIX = "\n    return y\n"


def _raw(url: str, prefix: str, suffix: str) -> dict:
    from fmgguf.catalog.schema import FIM
    from fmgguf.runtime.prompt.prompts import fim_format, render_fim

    fmt = fim_format(FIM(prefix="<|fim_prefix|>", suffix="<|fim_suffix|>", middle="<|fim_middle|>", supported=True))
    body = {"prompt": render_fim(fmt, prefix, suffix), "n_predict": N, "temperature": 0, "seed": 1}
    r = httpx.post(url + "/completion", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _expected(raw: dict, prefix: str, suffix: str, **kw: Any) -> tuple[str, str | None]:
    cutter = FimCutter(FimRules.for_gap(prefix, suffix, **kw))
    cutter.feed(raw["content"])
    cutter.close(ran_out=raw["stop_type"] == "limit")
    return cutter.result, cutter.reason


def _find_gap(url: str, prefixes: list[str], suffix: str, **kw: Any) -> tuple[str, dict, str, str | None]:
    """The first prefix whose raw generation the cutter cuts: (prefix, raw, middle, reason)."""
    for prefix in prefixes:
        raw = _raw(url, prefix, suffix)
        middle, reason = _expected(raw, prefix, suffix, **kw)
        if reason is not None:
            return prefix, raw, middle, reason
    raise AssertionError("the tiny model wrote no line break for any of the prefixes")


def _block_gap(url: str) -> tuple[str, dict, str, str | None]:
    """A gap in a function body (cursor after the indentation): a line at column 0 ends the middle."""
    return _find_gap(url, [f"def f{i}(x):\n    y = x\n    " for i in range(40)], SUFFIX)


def test_every_dialect_returns_the_raw_generation_cut_where_the_gap_ends(served: Any) -> None:
    url = served.url
    prefix, raw, middle, reason = _block_gap(url)
    assert middle != raw["content"] and reason == "indent"

    infill = httpx.post(url + "/infill", json={"input_prefix": prefix, "input_suffix": SUFFIX, "n_predict": N,
                                               "temperature": 0, "seed": 1}, timeout=120).json()
    assert (infill["content"], infill["stop_reason"]) == (middle, reason)
    assert infill["stop_type"] in ("word", "limit") and infill["stop_type"] != "eos"
    assert infill["tokens_predicted"] < raw["tokens_predicted"] or raw["tokens_predicted"] < N, (len(middle), len(raw["content"]), raw["content"])  # it stopped early

    ollama = httpx.post(url + "/api/generate", json={"model": "tiny-qwen", "prompt": prefix, "suffix": SUFFIX,
                                                     "stream": False, "options": {"temperature": 0, "seed": 1,
                                                                                  "num_predict": N}},
                        timeout=120).json()
    assert (ollama["response"], ollama["fmgguf_stop_reason"], ollama["done_reason"]) == (middle, reason, "stop")

    openai = httpx.post(url + "/v1/completions", json={"model": "tiny-qwen", "prompt": prefix, "suffix": SUFFIX,
                                                       "max_tokens": N, "temperature": 0, "seed": 1},
                        timeout=120).json()["choices"][0]
    assert (openai["text"], openai["stop_reason"], openai["finish_reason"]) == (middle, reason, "stop")

    mistral = httpx.post(url + "/v1/fim/completions", json={"model": "tiny-qwen", "prompt": prefix, "suffix": SUFFIX,
                                                            "max_tokens": N, "temperature": 0, "random_seed": 1},
                         timeout=120).json()["choices"][0]
    assert (mistral["message"]["content"], mistral["stop_reason"]) == (middle, reason)

    tabby = httpx.post(url + "/v1/completions", json={"language": "python", "temperature": 0, "seed": 1,
                                                      "segments": {"prefix": prefix, "suffix": SUFFIX}},
                       timeout=120).json()["choices"][0]
    assert (tabby["text"], tabby["stop_reason"]) == (middle, reason)


def test_streamed_infill_shows_only_the_middle(served: Any) -> None:
    prefix, raw, middle, reason = _block_gap(served.url)
    parts, final = [], {}
    body = {"input_prefix": prefix, "input_suffix": SUFFIX, "n_predict": N, "temperature": 0, "seed": 1,
            "stream": True}
    with httpx.stream("POST", served.url + "/infill", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if data.get("stop"):
                    final = data
                else:
                    parts.append(data["content"])
    assert "".join(parts) == middle and final["stop_reason"] == reason


def test_n_indent_cuts_the_first_shallow_line(served: Any) -> None:
    suffix = ""  # cursor inside a line at column 0, no suffix: only n_indent can cut
    prefix, raw, middle, reason = _find_gap(served.url, [f"x{i} = " for i in range(40)], suffix, n_indent=4)
    assert reason == "n_indent", raw
    out = httpx.post(served.url + "/infill", json={"input_prefix": prefix, "input_suffix": suffix, "n_predict": N,
                                                   "temperature": 0, "seed": 1, "n_indent": 4}, timeout=120).json()
    assert (out["content"], out["stop_type"], out["stop_reason"]) == (middle, "limit", "n_indent")
    assert middle != raw["content"]
