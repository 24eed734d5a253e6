"""The tool-call suite: its cases, its rates, the schema check it scores with, and `fmgguf bench ID --suite
tools` end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fmgguf.bench.tool_cases import TOOLS, cases
from fmgguf.bench.tool_suite import CaseResult, ToolSuiteReport, call_valid, schema_errors
from fmgguf.runtime.tools.tools import ToolCall


def test_the_suite_has_every_kind_of_case() -> None:
    kinds = [c.kind for c in cases()]
    assert len(kinds) >= 40 and {"call", "no_call", "parallel", "multi_turn"} == set(kinds)
    assert len({c.id for c in cases()}) == len(kinds)
    names = {t.name for t in TOOLS}
    assert all(set(c.expect) <= names for c in cases())


def test_rates() -> None:
    def r(kind: str, expect: tuple, called: tuple, valid: bool = True) -> CaseResult:
        return CaseResult(kind + str(len(called)), kind, expect, called, valid, "", 0.1)

    rep = ToolSuiteReport("m", (r("call", ("a",), ("a",)), r("call", ("a",), ("b",), False), r("call", ("a",), ()),
                                r("no_call", (), ()), r("no_call", (), ("a",)), r("parallel", ("a",), ("a", "a"))))
    rates = rep.rates()
    assert rates["schema_valid_call_rate"] == 0.5 and rates["right_tool_rate"] == 0.5  # 2 of the 4 must-call
    assert rates["spurious_call_rate"] == 0.5 and rates["parallel_rate"] == 1.0


def test_schema_check() -> None:
    read = TOOLS[0].parameters
    assert schema_errors({"path": "a"}, read) == []
    assert schema_errors({"path": 1}, read) == ["$.path: not a string"]
    assert schema_errors({}, read) == ["$.path: missing"]
    assert schema_errors({"path": "a", "x": 1}, read) == ["$.x: not allowed"]
    assert call_valid(ToolCall("c", "get_weather", '{"city": "Oslo", "unit": "kelvin"}'), TOOLS) is False
    assert call_valid(ToolCall("c", "search_code", '{"query": "x", "max_results": 5}'), TOOLS) is True


@pytest.mark.slow
def test_cli_runs_the_suite_on_a_tiny_model() -> None:
    pytest.importorskip("llama_cpp")
    from fmgguf.cli.main import cli
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("qwen2", "unit", "F16")
    picked = ["read-readme", "hi", "read-two", "mt-read-then-answer"]
    res = CliRunner().invoke(cli, ["bench", "tiny-tools", "--suite", "tools", "--gguf", str(path), "--json",
                                   "--tasks", ",".join(picked)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["rates"]["cases"] == 4 and [r["id"] for r in data["results"]] == picked
    assert all(r["valid"] for r in data["results"])  # whatever a random model calls, the grammar made it valid
