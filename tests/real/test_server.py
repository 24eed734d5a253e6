"""`fmgguf serve` as a real process with the real model, driven by the official `openai` client:
chat answers with code through the template (streamed and not, the same text), and a raw completion."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

CODE_PROMPT = "Write a Python function that returns the sum of a list."


@pytest.fixture(scope="module")
def client(real_path: Path, serve_process: Any) -> Iterator[Any]:
    import openai

    served = serve_process(real_path)
    try:
        yield openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)
    finally:
        served.stop()
    assert not any("Traceback" in line for line in served.lines), "".join(served.lines)
    assert not any("llama_" in line or "ggml_" in line for line in served.lines), "".join(served.lines)  # quiet


def _model_id(client: Any) -> str:
    return client.models.list().data[0].id


def test_chat_completion_answers_with_code_and_streams_the_same_text(client: Any) -> None:
    model = _model_id(client)
    messages = [{"role": "user", "content": CODE_PROMPT}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=200, temperature=0, seed=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop" and "<|im_end|>" not in text
    code = re.search(r"```(?:python)?\n(.*?)```", text, re.DOTALL)
    assert code, text
    ast.parse(code.group(1))
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=messages, max_tokens=200, temperature=0, seed=0, stream=True) if c.choices]
    assert "".join(pieces) == text


def test_completion_is_raw(client: Any) -> None:
    model = _model_id(client)
    res = client.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=16, temperature=0)
    assert res.usage.prompt_tokens < 10  # the prompt as it is, no chat template around it
    assert res.choices[0].text
