"""Tools and structured output at the JSON edges: OpenAI's and Ollama's request fields turned into the
runtime's :class:`ToolSpec` / :class:`ResponseFormat` and OpenAI-shaped messages, and calls turned back
into each dialect's shape."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.tools.tools import ResponseFormat, ToolCall, ToolSpec
from fmgguf.server.schemas import ChatMessage, NamedToolChoice, ResponseFormatBody, ToolDef


# --- OpenAI ----------------------------------------------------------------------------------------
def openai_tools(tools: Sequence[ToolDef] | None) -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec(t.function.name, t.function.description or "", t.function.parameters or {"type": "object"})
                 for t in tools or ())


def openai_tool_choice(choice: str | NamedToolChoice | None, has_tools: bool) -> str:
    """OpenAI's ``tool_choice`` as the core's string (absent: auto with tools, as OpenAI does)."""
    if choice is None:
        return "auto" if has_tools else "none"
    if isinstance(choice, str):
        return choice
    name = choice.function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("tool_choice names no function",
                                  fix='send {"type": "function", "function": {"name": "..."}}')
    return f"tool:{name}"


def openai_response_format(rf: ResponseFormatBody | None) -> ResponseFormat | None:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return ResponseFormat("json_object")
    spec = rf.json_schema
    if spec is None or spec.json_schema is None:
        raise InvalidRequestError("response_format json_schema has no schema",
                                  fix='send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')
    return ResponseFormat("json_schema", spec.json_schema, bool(spec.strict), spec.name)


def openai_message(m: ChatMessage) -> dict[str, Any]:
    """One OpenAI message as the core's OpenAI-shaped dict (developer is system)."""
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id or f"call_{i}", "type": "function",
                              "function": {"name": c.function.name, "arguments": _args_text(c.function.arguments)}}
                             for i, c in enumerate(m.tool_calls)]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name and m.role == "tool":
        out["name"] = m.name
    return out


def openai_stream_call(index: int, call: ToolCall) -> dict[str, Any]:
    """One complete call as a streamed ``delta.tool_calls`` item."""
    return {"index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


def _args_text(arguments: str | Mapping[str, Any] | None) -> str:
    if arguments is None:
        return "{}"
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


# --- Ollama ----------------------------------------------------------------------------------------
def ollama_tools(tools: Sequence[Any] | None) -> tuple[ToolSpec, ...]:
    """Ollama's ``tools`` (OpenAI's function shape); a malformed entry is a 400 naming it."""
    out = []
    for i, t in enumerate(tools or ()):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"tools[{i}] is not a function tool",
                                      fix='send {"type": "function", "function": {"name": ..., "parameters": {...}}}')
        params = fn.get("parameters") or {"type": "object"}
        if not isinstance(params, Mapping):
            raise InvalidRequestError(f"tools[{i}].function.parameters is not a JSON schema object",
                                      fix='send {"type": "object", "properties": {...}}')
        out.append(ToolSpec(str(fn["name"]), str(fn.get("description") or ""), dict(params)))
    return tuple(out)


def ollama_format(value: Any) -> ResponseFormat | None:
    """Ollama's ``format``: "json" (any JSON object) or a JSON schema; "" or null: free text."""
    if value is None or value == "":
        return None
    if value == "json":
        return ResponseFormat("json_object")
    if isinstance(value, Mapping):  # not strict: bounds the grammar cannot enforce (minimum, ...) are left out
        return ResponseFormat("json_schema", dict(value), False)
    raise InvalidRequestError(f"format {value!r} is not known", fix='send "json" or a JSON schema object')


def ollama_message(m: Mapping[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """An Ollama chat message as the core's OpenAI-shaped dict. Ollama's calls carry no ids and its tool
    results name the function (``tool_name``): results are matched to the latest call of that name."""
    role, content = str(m.get("role")), str(m.get("content") or "")
    out: dict[str, Any] = {"role": role, "content": content}
    calls = m.get("tool_calls")
    if role == "assistant" and isinstance(calls, list) and calls:
        items = []
        for i, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, Mapping) else None
            if not isinstance(fn, Mapping):
                continue
            name = str(fn.get("name") or "")
            cid = str(c.get("id") or f"call_{len(ids)}_{i}")
            ids[name] = cid
            items.append({"id": cid, "type": "function",
                          "function": {"name": name, "arguments": _args_text(fn.get("arguments"))}})
        out["tool_calls"] = items
    if role == "tool":
        name = str(m.get("tool_name") or m.get("name") or "")
        if name:
            out["name"] = name
        cid = m.get("tool_call_id") or ids.get(name)
        if cid:
            out["tool_call_id"] = str(cid)
    return out


def ollama_call(call: ToolCall, index: int) -> dict[str, Any]:
    """A call in Ollama's shape: arguments as an object."""
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments_object()}}
