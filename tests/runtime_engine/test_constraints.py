"""Grammar constraints on real llama.cpp with a tiny random model: a random model that still writes
schema-valid JSON proves the grammar is applied; the lazy grammar leaves the text before its trigger
alone and constrains what follows; the runner carries a Constraint; tool grammars parse in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmgguf.bench.tool_suite import schema_errors
from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.constraints import Constraint
from fmgguf.runtime.engine.engine import Engine, GenerationStats, LoadOptions
from fmgguf.runtime.engine.grammar import check_grammar, json_schema_to_gbnf
from fmgguf.runtime.tools.tool_grammar import format_constraint, tool_constraint
from fmgguf.runtime.tools.tool_parser import ToolCallParser
from fmgguf.runtime.tools.tools import ResponseFormat, ToolRequest, ToolSpec

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


def _allows_after(engine: Engine, gbnf: str, text: str, token: int) -> bool:
    """Whether llama.cpp's grammar sampler, having accepted ``text``'s tokens, still allows ``token``."""
    import ctypes

    from fmgguf.runtime.engine.llama_lib import lib

    mod = lib()
    smpl = mod.llama_sampler_init_grammar(engine.vocab, gbnf.encode("utf-8"), b"root")
    try:
        for tok in engine.tokenize(text, special=True):
            mod.llama_sampler_accept(smpl, tok)
        data = (mod.llama_token_data * 1)(mod.llama_token_data(token, 0.0, 0.0))
        arr = mod.llama_token_data_array(data, 1, -1, False)
        mod.llama_sampler_apply(smpl, ctypes.byref(arr))
        return data[0].logit != float("-inf")
    finally:
        mod.llama_sampler_free(smpl)


def test_parallel_calls_stop_at_the_bound(engine: Engine) -> None:
    """A looping model gets at most MAX_PARALLEL_CALLS calls in one answer, then only the end."""
    from fmgguf.runtime.tools.tool_grammar import MAX_PARALLEL_CALLS

    c = tool_constraint(ToolRequest(TOOLS, "required", True), "hermes")
    assert c is not None
    call = '<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>'
    newline = engine.tokenize("\n", special=True)
    assert len(newline) == 1  # the separator that would start one more call

    def calls(n: int) -> str:
        return "\n".join([call] * n)

    assert _allows_after(engine, c.gbnf, calls(MAX_PARALLEL_CALLS - 1), newline[0])
    assert not _allows_after(engine, c.gbnf, calls(MAX_PARALLEL_CALLS), newline[0])
    single = tool_constraint(ToolRequest(TOOLS, "required", False), "hermes")
    assert single is not None and not _allows_after(engine, single.gbnf, call, newline[0])
