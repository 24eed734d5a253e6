"""Anthropic Messages (/v1/messages, count_tokens) and OpenAI Responses (/v1/responses) on a live server
with a tiny model, driven by the official ``anthropic`` and ``openai`` clients: text, streaming and its
event grammar, stop sequences, usage and the prompt cache's counts, the error shapes, the API key."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

SYSTEM = ("You are a coding agent. Read files before you edit them, keep edits small, run the tests after "
          "each change and report what changed. ") * 10


#: the anthropic client (2.x) has no sampling arguments any more; the API still takes them
GREEDY = {"temperature": 0, "top_k": 1}


def _anthropic(live: Any, key: str = "unused") -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=live.url, api_key=key, max_retries=0, timeout=60)


def _openai(live: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _sse_events(text: str) -> list[tuple[str | None, dict]]:
    out, name = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
            name = None
    return out


# --- Anthropic ------------------------------------------------------------------------------------
def test_messages_text_and_usage(served: Any) -> None:
    msg = _anthropic(served).messages.create(
        model="tiny-qwen", max_tokens=8, extra_body=GREEDY, system=[{"type": "text", "text": "Answer briefly."}],
        messages=[{"role": "user", "content": "Write hello world in Python."}])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "tiny-qwen"
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.output_tokens >= 1 and msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 5


def test_messages_stream_follows_anthropics_event_grammar(served: Any) -> None:
    body = {"model": "tiny-qwen", "max_tokens": 10, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Count to five."}]}
    r = httpx.post(served.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(r.text)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks = [n for n in names if n not in ("ping", "message_start", "message_delta", "message_stop")]
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"
    assert set(blocks[1:-1]) == {"content_block_delta"}
    delta = events[names.index("message_delta")][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens") and delta["usage"]["output_tokens"] >= 1
    with _anthropic(served).messages.stream(model="tiny-qwen", max_tokens=10, extra_body=GREEDY,
                                            messages=[{"role": "user", "content": "Count to five."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and final.usage.output_tokens >= 1


def test_stop_sequence_is_reported(served: Any) -> None:
    client = _anthropic(served)
    ask = {"model": "tiny-qwen", "max_tokens": 16, "extra_body": GREEDY,
           "messages": [{"role": "user", "content": "Write a Python function."}]}
    full = client.messages.create(**ask).content[0].text
    cut = full.strip()[len(full.strip()) // 2:][:3]
    assert cut.strip(), f"the tiny model's answer is too short to cut: {full!r}"
    msg = client.messages.create(**ask, stop_sequences=[cut])
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == cut
    assert cut not in msg.content[0].text and full.startswith(msg.content[0].text)


def test_count_tokens_matches_the_prompt_and_ignores_the_billing_hash(served: Any) -> None:
    client = _anthropic(served)

    def system(cch: str) -> list[dict]:
        return [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.332; cch={cch};"},
                {"type": "text", "text": SYSTEM}]

    msgs = [{"role": "user", "content": "Fix the failing test."}]
    one = client.messages.count_tokens(model="tiny-qwen", system=system("a1b2c"), messages=msgs).input_tokens
    two = client.messages.count_tokens(model="tiny-qwen", system=system("99f00"), messages=msgs).input_tokens
    longer = client.messages.count_tokens(model="tiny-qwen", system=system("a1b2c"),
                                          messages=[{"role": "user", "content": "Fix the failing test. " * 5}])
    assert one == two > 100 and longer.input_tokens > one
    first = client.messages.create(model="tiny-qwen", max_tokens=2, system=system("a1b2c"), messages=msgs)
    again = client.messages.create(model="tiny-qwen", max_tokens=2, system=system("77e77"), messages=msgs)
    assert first.usage.input_tokens + first.usage.cache_read_input_tokens == one
    # the new hash did not break the prefix: all but the last prompt token came from the KV cache
    assert again.usage.cache_read_input_tokens == one - 1 and again.usage.input_tokens == 1


def test_tool_history_round_trips_into_the_prompt(served: Any) -> None:
    client = _anthropic(served)
    tools = [{"name": "read_file", "description": "Read a file", "input_schema": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]

    def history(result: str) -> list[dict]:
        return [{"role": "user", "content": "Read README.md"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read_file",
                                                   "input": {"path": "README.md"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]}]

    short = client.messages.count_tokens(model="tiny-qwen", tools=tools, messages=history("# Demo")).input_tokens
    long = client.messages.count_tokens(model="tiny-qwen", tools=tools,
                                        messages=history("# Demo\n" + "A line of the readme.\n" * 20)).input_tokens
    assert long > short + 60  # the tool result is in the prompt
    msg = client.messages.create(model="tiny-qwen", max_tokens=4, tools=tools, messages=history("# Demo"))
    assert msg.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_anthropic_errors_have_anthropics_shape(served: Any) -> None:
    import anthropic

    with pytest.raises(anthropic.NotFoundError) as info:
        _anthropic(served).messages.create(model="no-such-model", max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"
    assert "unknown model id" in info.value.body["error"]["message"]
    r = httpx.post(served.url + "/v1/messages", json={"model": "tiny-qwen", "messages": []}, timeout=10)
    assert r.status_code in (400, 422)
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]
    image = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                        "data": "AA=="}}]}]
    with pytest.raises(anthropic.BadRequestError, match="read text only"):
        _anthropic(served).messages.create(model="tiny-qwen", max_tokens=4, messages=image)


def test_x_api_key_is_the_servers_key(live_server: Any, settings: Any) -> None:
    import anthropic

    from fmgguf.server.app import create_app

    with live_server(create_app(settings, api_key="s3cret")) as live:
        with pytest.raises(anthropic.AuthenticationError) as info:
            _anthropic(live, key="wrong").messages.count_tokens(model="x", messages=[{"role": "user", "content": "hi"}])
        assert info.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(anthropic.NotFoundError):  # past the key check: the model is the problem now
            _anthropic(live, key="s3cret").messages.count_tokens(model="no-such", messages=[{"role": "user", "content": "hi"}])


# --- OpenAI Responses -----------------------------------------------------------------------------
def test_responses_text(served: Any) -> None:
    out = _openai(served).responses.create(model="tiny-qwen", instructions="Answer briefly.",
                                           input="Write hello world in Python.", max_output_tokens=8, temperature=0)
    assert out.object == "response" and out.output[0].type == "message"
    assert out.output_text and out.output[0].content[0].type == "output_text"
    assert out.usage.output_tokens >= 1 and out.usage.input_tokens > 5
    assert out.status in ("completed", "incomplete")
    if out.usage.output_tokens == 8:
        assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_events(served: Any) -> None:
    stream = _openai(served).responses.create(
        model="tiny-qwen", stream=True, max_output_tokens=10, temperature=0,
        input=[{"role": "developer", "content": "Answer briefly."},
               {"role": "user", "content": [{"type": "input_text", "text": "Count to five."}]}])
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text and events[-1].response.usage.output_tokens >= 1


def test_responses_take_function_history(served: Any) -> None:
    tools = [{"type": "function", "name": "read_file", "description": "Read a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
    out = _openai(served).responses.create(model="tiny-qwen", tools=tools, max_output_tokens=4, input=[
        {"role": "user", "content": "Read README.md"},
        {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": '{"path": "README.md"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "# Demo"}])
    assert out.usage.input_tokens > 10


def test_responses_refuse_server_state(served: Any) -> None:
    import openai

    for extra in ({"previous_response_id": "resp_123"}, {"store": True}):
        with pytest.raises(openai.BadRequestError) as info:
            _openai(served).responses.create(model="tiny-qwen", input="hi", **extra)
        assert "this server keeps none" in str(info.value)


def test_forced_tool_use_streamed_and_not(served: Any) -> None:
    """tool_choice any: a tool_use block with schema-valid input, streamed (input_json_delta) and not."""
    tools = [{"name": "run", "description": "Run a workflow", "input_schema": {
        "type": "object", "properties": {"target": {"enum": ["build", "test"]}}, "required": ["target"],
        "additionalProperties": False}}]
    ask = {"model": "tiny-qwen", "max_tokens": 200, "tools": tools, "tool_choice": {"type": "any"},
           "messages": [{"role": "user", "content": "Run the build."}], "extra_body": GREEDY}
    msg = _anthropic(served).messages.create(**ask)
    assert msg.stop_reason == "tool_use", msg
    call = next(b for b in msg.content if b.type == "tool_use")
    assert call.name == "run" and call.input["target"] in ("build", "test") and call.id.startswith("call_") or call.id
    with _anthropic(served).messages.stream(**ask) as stream:
        final = stream.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and streamed.input == call.input


def test_responses_forced_function_call_streamed_and_not(served: Any) -> None:
    tools = [{"type": "function", "name": "run", "description": "Run a workflow", "parameters": {
        "type": "object", "properties": {"target": {"enum": ["build", "test"]}}, "required": ["target"],
        "additionalProperties": False}}]
    ask = {"model": "tiny-qwen", "tools": tools, "tool_choice": "required", "max_output_tokens": 200,
           "temperature": 0, "input": "Run the build."}
    out = _openai(served).responses.create(**ask)
    call = next(item for item in out.output if item.type == "function_call")
    assert call.name == "run" and json.loads(call.arguments)["target"] in ("build", "test") and call.call_id
    events = list(_openai(served).responses.create(**ask, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.output_item.done" and e.item.type == "function_call")
    assert json.loads(done.item.arguments) == json.loads(call.arguments) and kinds[-1] == "response.completed"


def test_responses_tool_result_turn_reuses_the_first_turns_prompt(served: Any) -> None:
    """A Codex-shaped exchange: turn 1 (instructions, developer and user items, tools) ends in a call; turn 2
    resends all of it plus the call and its output. Turn 2 decodes only the new part: the whole of turn 1's
    prompt comes from the KV cache (counted in usage, and in /metrics once turn 2 is done)."""
    tools = [{"type": "function", "name": "shell", "description": "Run a command",
              "parameters": {"type": "object", "properties": {"command": {"enum": ["ls", "pwd"]}},
                             "required": ["command"], "additionalProperties": False}}]
    head = [{"role": "developer", "content": SYSTEM},
            {"role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd: /w</environment_context>"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "List the files."}]}]
    ask = {"model": "tiny-qwen", "instructions": "You are Codex.", "tools": tools, "temperature": 0,
           "max_output_tokens": 100, "store": False, "parallel_tool_calls": False}
    client = _openai(served)
    first = client.responses.create(**ask, input=head, tool_choice="required")
    call = next(item for item in first.output if item.type == "function_call")
    turn1 = first.usage.input_tokens
    second = client.responses.create(**ask, input=[
        *head, {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "a.py\nb.py"}])
    assert second.usage.input_tokens > turn1
    assert second.usage.input_tokens_details.cached_tokens >= turn1 - 1, (turn1, second.usage)
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    cached = next(line for line in metrics.splitlines() if line.startswith('fmgguf_tokens_total{kind="cached"}'))
    assert int(cached.split()[-1]) >= second.usage.input_tokens_details.cached_tokens
