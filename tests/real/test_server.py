"""`fmgguf serve` as a real process with the real model, driven by the official `openai` client:
chat answers with code through the template (streamed and not, the same text), and a raw completion."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

CODE_PROMPT = "Write a Python function that returns the sum of a list."


class Served:
    """`python -m fmgguf serve --port 0 --model FILE`, its URL read from the banner."""

    def __init__(self, model: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "serve", "--port", "0", "--model", str(model)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120) or self.url is None:
            self.stop()
            raise AssertionError("fmgguf serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"fmgguf serving on (http://\S+?) ", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def client(real_path: Path) -> Iterator[Any]:
    import openai

    served = Served(real_path)
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
