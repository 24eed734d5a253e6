"""Tools and structured output on the real Qwen2.5-Coder-0.5B-Instruct behind `fmgguf serve`, with the
official `openai` and `ollama` clients: tool_choice required gives a schema-valid call (streamed and not),
a tool result round-trips into the answer, json_schema and Ollama's format give JSON that validates."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fmgguf.bench.tool_suite import schema_errors

pytestmark = [pytest.mark.real, pytest.mark.slow]

READ = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file of the project",
                                           "parameters": READ}}]
ASK = [{"role": "user", "content": "Read the file README.md"}]
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150}}}


@pytest.fixture(scope="module")
def server(qwen_path: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "serve", "--port", "0", "--model", str(qwen_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"fmgguf serving on (http://\S+?) ", line)
            if m:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(180) and found, "fmgguf serve did not start"
        yield found[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _openai(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_required_call_streamed_and_not(server: str) -> None:
    client = _openai(server)
    r = client.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="required",
                                       max_tokens=80, temperature=0)
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "read_file" and schema_errors(json.loads(call.function.arguments), READ) == []
    calls = [tc for chunk in client.chat.completions.create(model="default", messages=ASK, tools=TOOLS, stream=True,
                                                            tool_choice="required", max_tokens=80, temperature=0)
             for ch in chunk.choices for tc in (ch.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["read_file"]
    assert json.loads(calls[0].function.arguments) == json.loads(call.function.arguments)


def test_a_tool_result_round_trips(server: str) -> None:
    msgs = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "README.md"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "# Zebrafish\nZebrafish is a tiny HTTP router."},
        {"role": "user", "content": "What is the project called? One word."}]
    r = _openai(server).chat.completions.create(model="default", messages=msgs, tools=TOOLS, max_tokens=30,
                                                temperature=0)
    assert r.choices[0].finish_reason == "stop" and "Zebrafish" in (r.choices[0].message.content or "")


def test_json_schema_and_ollama_format_validate(server: str) -> None:
    import ollama

    ask = [{"role": "user", "content": "Invent a person. Reply in JSON."}]
    r = _openai(server).chat.completions.create(
        model="default", messages=ask, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    assert schema_errors(json.loads(r.choices[0].message.content), PERSON) == []
    res = ollama.Client(host=server, timeout=300).chat(model="default", messages=ask, format=PERSON,
                                                       options={"num_predict": 60, "temperature": 0})
    assert schema_errors(json.loads(res.message.content), PERSON) == []
