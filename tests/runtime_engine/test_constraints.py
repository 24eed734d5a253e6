"""Grammar constraints on real llama.cpp with a tiny random model: a random model that still writes
schema-valid JSON proves the grammar is applied; the lazy grammar leaves the text before its trigger
alone and constrains what follows; the runner carries a Constraint; tool grammars parse in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmgguf.bench.tool_suite import schema_errors
from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.constraints import Constraint
from fmgguf.runtime.engine import Engine, GenerationStats, LoadOptions
from fmgguf.runtime.grammar import check_grammar, json_schema_to_gbnf
from fmgguf.runtime.tool_grammar import format_constraint, tool_constraint
from fmgguf.runtime.tool_parser import ToolCallParser
from fmgguf.runtime.tools import ResponseFormat, ToolRequest, ToolSpec

#: bounded, so a random model cannot wander off into an endless string
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["path", "n", "mode"],
          "properties": {"path": {"type": "string", "maxLength": 6}, "n": {"enum": [0, 1, 7, 42]},
                         "mode": {"enum": ["r", "w"]}}}
TOOLS = (ToolSpec("open_file", "Open a file", SCHEMA), ToolSpec("noop", "Nothing", {"type": "object", "properties": {}}))


@pytest.fixture(scope="module")
def engine(qwen_path: Path):
    with Engine(qwen_path, LoadOptions(n_ctx=512)) as e:
        yield e


def _run(engine: Engine, prompt: str, **kw) -> list[str]:
    toks = engine.tokenize(prompt, add_bos=engine.add_bos)
    return list(engine.stream(toks, GenerationStats(), **kw))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_model_under_a_schema_grammar_writes_valid_json(engine: Engine, seed: int) -> None:
    free = "".join(_run(engine, "Answer in JSON:", max_tokens=60, temperature=1.0, seed=seed))
    with pytest.raises(ValueError):
        json.loads(free)  # gibberish without the grammar
    text = "".join(_run(engine, "Answer in JSON:", max_tokens=200, temperature=1.0, seed=seed,
                        constraint=Constraint(json_schema_to_gbnf(SCHEMA))))
    assert schema_errors(json.loads(text), SCHEMA) == []


def test_the_lazy_grammar_starts_at_its_trigger(engine: Engine) -> None:
    pieces = _run(engine, "def main():", max_tokens=12, temperature=0, seed=0)
    before, trigger = "".join(pieces[:2]), "".join(pieces[2:4])
    assert trigger and "".join(pieces).find(trigger) == len(before)
    gbnf = f"root ::= {json.dumps(trigger, ensure_ascii=False)} obj\n" + json_schema_to_gbnf(SCHEMA, root="obj")
    text = "".join(_run(engine, "def main():", max_tokens=200, temperature=0, seed=0,
                        constraint=Constraint(gbnf, triggers=(trigger,))))
    assert text.startswith(before + trigger)  # untouched up to and including the trigger
    assert schema_errors(json.loads(text[len(before + trigger):]), SCHEMA) == []
    never = "".join(_run(engine, "def main():", max_tokens=12, temperature=0, seed=0,
                         constraint=Constraint(gbnf, triggers=("\u2603never\u2603",))))
    assert never == "".join(pieces)  # no trigger: no constraint at all


def test_the_runner_carries_a_tool_constraint(manager) -> None:
    req = ToolRequest(TOOLS, "tool:open_file", parallel=False)
    out = manager.chat([{"role": "user", "content": "open it"}], max_tokens=200, temperature=1.0, seed=5, tools=req)
    parser = ToolCallParser(TOOLS)
    parser.feed(out.text)
    parser.finish()
    assert [c.name for c in parser.calls] == ["open_file"] and parser.text == ""
    assert schema_errors(json.loads(parser.calls[0].arguments), SCHEMA) == []
    shaped = manager.chat([{"role": "user", "content": "x"}], max_tokens=200, temperature=1.0, seed=6,
                          tools=ToolRequest(response_format=ResponseFormat("json_schema", SCHEMA)))
    assert schema_errors(json.loads(shaped.text), SCHEMA) == []


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "generic"])
@pytest.mark.parametrize("choice", ["auto", "required", "tool:noop"])
@pytest.mark.parametrize("parallel", [True, False])
def test_every_tool_grammar_parses_in_llama_cpp(engine: Engine, fmt: str, choice: str, parallel: bool) -> None:
    c = tool_constraint(ToolRequest(TOOLS, choice, parallel), fmt)  # type: ignore[arg-type]
    assert c is not None and bool(c.triggers) == (choice == "auto")
    check_grammar(engine.vocab, c.gbnf)
    check_grammar(engine.vocab, format_constraint(ResponseFormat("json_object")).gbnf)
    with pytest.raises(InvalidRequestError):
        check_grammar(engine.vocab, "root ::= nowhere")


@pytest.mark.parametrize("schema", [{"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
                                    {"type": "object", "properties": {"when": {"type": "date-ish"}}}])
def test_a_schema_the_converter_cannot_express_is_refused_naming_it(schema: dict) -> None:
    with pytest.raises(InvalidRequestError, match="the parameters of tool 'bad' cannot be turned into a grammar"):
        tool_constraint(ToolRequest((ToolSpec("bad", "", schema),), "required"), "hermes")


def test_json_strings_in_grammars_hold_no_raw_control_characters() -> None:
    gbnf = json_schema_to_gbnf({"type": "object", "properties": {"s": {"type": "string"}}})
    (char,) = [ln for ln in gbnf.splitlines() if ln.startswith("char ::=")]
    assert "\\x00-\\x1F" in char  # else a raw newline in a string: JSON that json.loads rejects


def test_strict_schemas_refuse_bounds_the_grammar_leaves_out() -> None:
    schema = {"type": "object", "properties": {"minimum": {"type": "integer", "maximum": 3}}}
    with pytest.raises(InvalidRequestError, match=r"uses \$\.properties\.minimum\.maximum"):
        format_constraint(ResponseFormat("json_schema", schema, strict=True))
    assert format_constraint(ResponseFormat("json_schema", schema, strict=False)).gbnf


def test_tools_with_a_response_format_constrain_from_the_first_token(engine: Engine) -> None:
    c = tool_constraint(ToolRequest(TOOLS, "auto", response_format=ResponseFormat("json_schema", SCHEMA)), "hermes")
    assert c is not None and not c.triggers  # a call, or the answer in the format: never free text
    check_grammar(engine.vocab, c.gbnf)
    text = "".join(_run(engine, "x", max_tokens=200, temperature=1.0, seed=9, constraint=c))
    parser = ToolCallParser(TOOLS)
    parser.feed(text)
    parser.finish()
    assert parser.calls or schema_errors(json.loads(text), SCHEMA) == []
