"""Tools and structured output over HTTP with the official `openai` and `ollama` clients and a tiny
random model: forced calls and response formats come back schema-valid (the grammar), calls stream as
``tool_calls`` deltas, tool results reach the prompt, and what cannot work is a 400 naming why."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fmgguf.bench.tool_suite import schema_errors

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["path", "n"],
          "properties": {"path": {"type": "string", "maxLength": 6},
                         "n": {"type": "integer", "enum": [0, 1, 2]}}}
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file", "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "list_dir", "description": "List a folder",
                                           "parameters": {"type": "object", "properties": {}}}}]
ASK = [{"role": "user", "content": "Read the file README.md"}]


def _client(live: Any) -> Any:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_required_gives_a_schema_valid_call(served: Any) -> None:
    r = _client(served).chat.completions.create(model="tiny-qwen", messages=ASK, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=False, max_tokens=200, temperature=1.0, seed=3)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    if call.function.name == "read_file":
        assert schema_errors(json.loads(call.function.arguments), SCHEMA) == []
    else:
        assert call.function.name == "list_dir" and isinstance(json.loads(call.function.arguments), dict)


def test_a_named_tool_streams_as_tool_call_deltas(served: Any) -> None:
    stream = _client(served).chat.completions.create(
        model="tiny-qwen", messages=ASK, tools=TOOLS, max_tokens=200, temperature=0, stream=True, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "read_file"}})
    calls, content, finish = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and content == "", (finish, content, calls)
    assert [c.function.name for c in calls] == ["read_file"] and calls[0].index == 0
    assert schema_errors(json.loads(calls[0].function.arguments), SCHEMA) == []


def test_a_tool_result_reaches_the_prompt(served: Any) -> None:
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "R", "n": 1}'}}]}]

    def prompt_tokens(result: str) -> int:
        msgs = history + [{"role": "tool", "tool_call_id": "call_1", "content": result}]
        r = _client(served).chat.completions.create(model="tiny-qwen", messages=msgs, tools=TOOLS, max_tokens=2,
                                                    temperature=0)
        return r.usage.prompt_tokens

    assert prompt_tokens("word " * 40) >= prompt_tokens("word") + 30


def test_response_formats_give_json_that_validates(served: Any) -> None:
    client = _client(served)
    r = client.chat.completions.create(
        model="tiny-qwen", messages=ASK, max_tokens=200, temperature=1.0, seed=5,
        response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": SCHEMA, "strict": True}})
    assert schema_errors(json.loads(r.choices[0].message.content), SCHEMA) == []
    res = ollama.Client(host=served.url, timeout=120).chat(model="tiny-qwen", messages=ASK, format=SCHEMA,
                                                           options={"num_predict": 200, "seed": 6})
    assert schema_errors(json.loads(res.message.content), SCHEMA) == []
    gen = ollama.Client(host=served.url, timeout=120).generate(model="tiny-llama", prompt="x", format=SCHEMA,
                                                               options={"num_predict": 200, "seed": 7})
    assert schema_errors(json.loads(gen.response), SCHEMA) == []


def test_ollama_takes_tools_and_tool_messages(served: Any) -> None:
    client = ollama.Client(host=served.url, timeout=120)
    res = client.chat(model="tiny-qwen", tools=TOOLS, options={"num_predict": 8, "seed": 1, "temperature": 0},
                      messages=ASK + [{"role": "assistant", "content": "", "tool_calls": [
                          {"function": {"name": "read_file", "arguments": {"path": "R", "n": 1}}}]},
                          {"role": "tool", "tool_name": "read_file", "content": "# Title"}])
    assert res.done and res.message.role == "assistant"
    show = client.show("tiny-qwen")
    assert "tools" in show.capabilities
    models = httpx.get(served.url + "/v1/models", timeout=10).json()["data"]
    assert all("tools" in m["capabilities"] for m in models)


@pytest.mark.parametrize(("body", "match"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "https://example.com/x.json"}}}}}], "tool_choice": "required"},
     "the parameters of tool 'f' cannot be turned into a grammar"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not in `tools`"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "has no schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}}}},
     "uses $.properties.n.minimum, which the grammar cannot enforce"),
])
def test_what_cannot_work_is_a_400_naming_why(served: Any, body: dict, match: str) -> None:
    r = httpx.post(served.url + "/v1/chat/completions", json={"model": "tiny-qwen", "messages": ASK, **body}, timeout=30)
    assert r.status_code == 400 and match in r.json()["error"]["message"], r.text
