"""Tool calls read back out of streamed text (every format, any piece boundaries), tools rendered through
a Hermes-style template or the generic envelope, and the tool request checks. Pure Python: no model."""

from __future__ import annotations

import json

import pytest

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.prompt.prompts import render_chat
from fmgguf.runtime.tools.tool_parser import ToolCallParser, could_start
from fmgguf.runtime.tools.tools import ResponseFormat, ToolRequest, ToolSpec, template_format

TOOLS = (ToolSpec("read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}},
                                               "required": ["path"]}),
         ToolSpec("ls", "List a folder"))


def parse(text: str, step: int, parallel: bool = True) -> tuple[str, list[tuple[str, dict]], list]:
    p = ToolCallParser(TOOLS, parallel)
    events = []
    for i in range(0, len(text), step):
        events += p.feed(text[i:i + step])
    events += p.finish()
    return p.text, [(c.name, json.loads(c.arguments)) for c in p.calls], events


CASES = [
    ("plain text with {braces} <tags> and [brackets]", "plain text with {braces} <tags> and [brackets]", []),
    ('<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}\n</tool_call>', "",
     [("read_file", {"path": "README.md"})]),
    ('Let me look.\n<tool_call>\n{"name": "ls", "arguments": {}}\n</tool_call>\n<tool_call>\n'
     '{"name": "read_file", "arguments": {"path": "a"}}\n</tool_call>', "Let me look.\n",
     [("ls", {}), ("read_file", {"path": "a"})]),
    # Qwen2.5-Coder's habit: bare JSON, pretty-printed, in a fence (ollama/ollama#12174)
    ('```json\n{\n  "name": "read_file",\n  "arguments": {\n    "path": "x.py"\n  }\n}\n```', "",
     [("read_file", {"path": "x.py"})]),
    ('{"name": "read_file", "arguments": "{\\"path\\": \\"s\\"}"}', "", [("read_file", {"path": "s"})]),
    ('[TOOL_CALLS] [{"name": "ls", "arguments": {}}, {"name": "read_file", "arguments": {"path": "b"}}]', "",
     [("ls", {}), ("read_file", {"path": "b"})]),
    ('{"tool_calls": [{"name": "ls", "arguments": {}}]}', "", [("ls", {})]),
    # an undeclared function, or JSON about something else, is text
    ('{"name": "Bob", "age": 3} is a record', '{"name": "Bob", "age": 3} is a record', []),
    ('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', []),
    ("```python\nprint({'name': 1})\n```", "```python\nprint({'name': 1})\n```", []),
    # a call cut off by max_tokens stays text
    ('<tool_call>\n{"name": "read_file", "argu', '<tool_call>\n{"name": "read_file", "argu', []),
]


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
@pytest.mark.parametrize(("text", "visible", "calls"), CASES)
def test_calls_and_text_whatever_the_piece_boundaries(text: str, visible: str, calls: list, step: int) -> None:
    got_text, got_calls, events = parse(text, step)
    assert got_text == visible and got_calls == calls
    assert "".join(v for k, v in events if k == "piece") == visible
    assert [v.name for k, v in events if k == "tool_call"] == [c[0] for c in calls]


def test_markup_is_held_back_until_decided() -> None:
    p = ToolCallParser(TOOLS)
    assert p.feed("Sure. <tool") == [("piece", "Sure. ")]  # "<tool" may become <tool_call>
    events = p.feed('_call>{"name": "ls", "arguments": {}}</tool_call>')
    assert [k for k, _ in events] == ["tool_call"] and p.calls[0].id.startswith("call_")
    q = ToolCallParser(TOOLS)
    assert q.feed("a <t") == [("piece", "a ")] and q.feed("ab> c") == [("piece", "<tab> c")]
    assert could_start("```js") and could_start('{ "na') and not could_start('{"x') and not could_start("<b")


def test_one_call_only_without_parallel_calls() -> None:
    _, calls, _ = parse('<tool_call>{"name": "ls", "arguments": {}}</tool_call><tool_call>'
                        '{"name": "read_file", "arguments": {"path": "a"}}</tool_call>', 3, parallel=False)
    assert calls == [("ls", {})]


HERMES = (
    "{%- if tools %}<|im_start|>system\nTOOLS:{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n"
    "Call with <tool_call></tool_call>.<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant"
    "{%- for c in m.tool_calls %}\n<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ROUND_TRIP = [{"role": "user", "content": "Read README.md"},
              {"role": "assistant", "content": None, "tool_calls": [
                  {"id": "call_9", "type": "function",
                   "function": {"name": "read_file", "arguments": '{"path": "README.md"}'}}]},
              {"role": "tool", "tool_call_id": "call_9", "content": "# Hello project"}]


def test_hermes_template_gets_the_tools_the_calls_and_the_results() -> None:
    assert template_format(HERMES) == "hermes"
    p = render_chat(ROUND_TRIP, template=HERMES, family=None, tools=ToolRequest(TOOLS))
    assert p.tool_format == "hermes" and '"name": "read_file"' in p.text.split("<|im_end|>")[0]
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}\n</tool_call>' in p.text
    assert "<tool_response>\n# Hello project\n</tool_response>" in p.text
    none = render_chat(ROUND_TRIP, template=HERMES, family=None, tools=ToolRequest(TOOLS, "none"))
    assert "TOOLS:" not in none.text and "<tool_response>" in none.text  # history still rendered


def test_a_template_without_tools_gets_the_generic_envelope() -> None:
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = render_chat(ROUND_TRIP, template=chatml, family=None, tools=ToolRequest(TOOLS, "required"))
    assert p.tool_format == "generic"
    assert '{"tool_calls": [{"name": "<function name>"' in p.text
    assert '{"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]}' in p.text
    assert "Result of call_9:\n# Hello project" in p.text and "<|im_start|>tool" not in p.text
    fam = render_chat(ROUND_TRIP, template=None, family="llama2", tools=ToolRequest(TOOLS))
    assert fam.tool_format == "generic" and "read_file" in fam.text


@pytest.mark.parametrize("template", ["hermes", "chatml"])
def test_the_prompt_does_not_change_with_tool_choice(template: str) -> None:
    """An agent that forces a call on one turn and not on the next keeps its prompt prefix: the tools and
    the instructions rendered are the same for auto, required and a named tool (the grammar holds the call)."""
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tpl = HERMES if template == "hermes" else chatml
    texts = {render_chat(ROUND_TRIP, template=tpl, family=None, tools=ToolRequest(TOOLS, choice)).text
             for choice in ("auto", "required", f"tool:{TOOLS[-1].name}")}
    assert len(texts) == 1 and all(t.name in next(iter(texts)) for t in TOOLS)


def test_a_model_that_cannot_chat_refuses_tools_naming_why() -> None:
    with pytest.raises(InvalidRequestError, match="cannot take tools"):
        render_chat(ROUND_TRIP, template=None, family=None, tools=ToolRequest(TOOLS))


@pytest.mark.parametrize(("kw", "match"), [
    ({"choice": "tool:nope"}, "not in `tools`"), ({"choice": "maybe"}, "not known"),
    ({"tools": (ToolSpec("bad name!"),)}, "not valid"), ({"tools": TOOLS[:1] * 2}, "declared twice"),
    ({"choice": "required", "response_format": ResponseFormat("json_object")}, "cannot both"),
])
def test_bad_tool_requests_are_refused(kw: dict, match: str) -> None:
    args = {"tools": TOOLS, **kw}
    with pytest.raises(InvalidRequestError, match=match):
        ToolRequest(**args)


def test_a_lone_surrogate_escape_in_the_arguments_becomes_a_replacement_character() -> None:
    """The grammar lets a string hold any \\uXXXX escape; a lone surrogate cannot be sent as UTF-8 (the
    server answered 500, and a stream ended without a finish chunk), so it becomes U+FFFD."""
    p = ToolCallParser(TOOLS)
    p.feed('<tool_call>{"name": "read_file", "arguments": {"path": "a\\udaabb"}}</tool_call>')
    p.finish()
    assert [c.name for c in p.calls] == ["read_file"]
    assert json.loads(p.calls[0].arguments) == {"path": "a\ufffdb"}
    p.calls[0].arguments.encode("utf-8")
