"""Grammars that keep tool calls and structured output parseable (a :class:`Constraint` each).

The arguments of every call follow the tool's JSON schema (llama.cpp's JSON-schema-to-GBNF converter,
:func:`fmgguf.runtime.engine.grammar.json_schema_to_gbnf`). The call wrapper is the template's own format:

- Hermes (Qwen2.5): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one or more;
- Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``;
- generic envelope: ``{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}``;
- and, for ``auto`` in every format, the bare call objects Qwen2.5-Coder writes without tags.

``auto`` is lazy: free text until a trigger (the wrapper's opening, or ``{"name"``) appears, then the
grammar from that trigger on. ``required`` and a named tool: the wrapper from the first token.
"""

from __future__ import annotations

import json

from fmgguf.runtime.engine.constraints import Constraint
from fmgguf.runtime.engine.grammar import json_schema_to_gbnf
from fmgguf.runtime.tools.tools import ResponseFormat, ToolFormat, ToolRequest, ToolSpec

#: the trigger of a bare call object (Qwen2.5-Coder's habit) and of the generic envelope
BARE_TRIGGER = '{"name"'
#: the bare object as models write it, pretty-printed too (each is a literal trigger; the grammar's
#: ``space`` takes a line break and an indent, so what follows such a trigger still matches)
BARE_TRIGGERS = (BARE_TRIGGER, '{ "name"', '{\n"name"', '{\n "name"', '{\n  "name"', '{\n   "name"',
                 '{\n    "name"', '{\n\t"name"')
ENVELOPE_TRIGGER = '{"tool_calls"'
_OPENERS: dict[str, tuple[str, ...]] = {"hermes": ("<tool_call>",), "mistral": ("[TOOL_CALLS]",),
                                         "generic": (ENVELOPE_TRIGGER, '{ "tool_calls"', '{\n  "tool_calls"',
                                                     '{\n    "tool_calls"')}
#: whitespace between the parts of a wrapper (bounded: a weak model cannot pad forever)
_WS = 'ws ::= [ \\t\\n]{0,3}'
#: calls in one answer at most: an agent's parallel calls are a handful, while a small model caught in a
#: loop repeats the same few calls until max_tokens (seen with Codex CLI on Qwen2.5-Coder-0.5B: minutes of
#: output before the agent could run anything)
MAX_PARALLEL_CALLS = 16
_MORE = "{0," + str(MAX_PARALLEL_CALLS - 1) + "}"


def call_schema(tool: ToolSpec) -> dict:
    """One call of ``tool`` as a JSON schema: ``{"name": <the name>, "arguments": <its parameters>}``."""
    params = dict(tool.parameters or {})
    if not params:  # no schema at all: any object
        params = {"type": "object"}
    elif params.get("type") == "object" and params.get("properties") == {} and "additionalProperties" not in params:
        params = {**params, "additionalProperties": False}  # an explicitly empty list of arguments: {}
    return {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def tool_constraint(req: ToolRequest, fmt: ToolFormat) -> Constraint | None:
    """The grammar for ``req``'s calls in ``fmt`` (None where no call may be made)."""
    tools = req.callable_tools()
    if not req.calls_allowed or not tools:
        return None
    schemas = [call_schema(t) for t in tools]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    what = f"the parameters of tool {tools[0].name!r}" if len(tools) == 1 else "the tools' parameters"
    call = json_schema_to_gbnf(schema, what=what, root="call")
    many = req.parallel
    wrapped = _wrapper(fmt, many)
    if req.forced:
        return Constraint("root ::= wrapped\n" + wrapped + "\n" + _WS + "\n" + call)
    # a bare call often sits in a ```json fence: its closing fence ends the calls (without it in the grammar
    # a small model, kept from closing the fence, goes on writing call after call)
    bare = 'bare ::= call' + (' (ws call)' + _MORE if many else '') + ' (ws "```")?'
    body = wrapped + "\n" + bare + "\n" + _WS + "\n" + call
    if req.response_format is not None:  # calls, or the answer in the asked format: from the first token
        answer = _format_gbnf(req.response_format, "answer")
        return Constraint("root ::= wrapped | bare | answer\n" + body + "\n" + answer)
    return Constraint("root ::= wrapped | bare\n" + body, triggers=(*_OPENERS[fmt], *BARE_TRIGGERS))


def _wrapper(fmt: ToolFormat, many: bool) -> str:
    if fmt == "hermes":
        one = 'hcall ::= "<tool_call>" ws call ws "</tool_call>"'
        return one + '\nwrapped ::= hcall' + (' (ws hcall)' + _MORE if many else '')
    more = ' (ws "," ws call)' + _MORE if many else ''
    if fmt == "mistral":
        return 'wrapped ::= "[TOOL_CALLS]" ws "[" ws call' + more + ' ws "]"'
    return 'wrapped ::= "{" ws "\\"tool_calls\\"" ws ":" ws "[" ws call' + more + ' ws "]" ws "}"'


def format_constraint(rf: ResponseFormat) -> Constraint:
    """The grammar of a structured-output request: any JSON object, or JSON valid against the schema."""
    return Constraint(_format_gbnf(rf, "root"))


def _format_gbnf(rf: ResponseFormat, root: str) -> str:
    if rf.kind == "json_object" or not rf.schema:
        return json_schema_to_gbnf({"type": "object"}, what="json_object", root=root)
    schema = json.loads(json.dumps(rf.schema))
    return json_schema_to_gbnf(schema, what=f"the response_format schema{_named(rf.name)}", root=root,
                               strict=rf.strict)


def _named(name: str | None) -> str:
    return f" {name!r}" if name else ""
