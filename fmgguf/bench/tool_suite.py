"""``fmgguf bench --suite tools``: the fixed tool-call suite (:mod:`fmgguf.bench.tool_cases`) through a
model, with tools rendered by its template, lazy grammars and the runtime's parser, as the server runs them.

Reported rates:

- **schema-valid calls**: must-call cases whose answer made at least one call, every call's arguments
  valid against its tool's schema (the grammar's job) — over all must-call cases;
- **right tool**: must-call cases that called every expected tool;
- **spurious calls**: must-not-call cases that called a tool anyway;
- **parallel**: parallel cases with at least two calls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from fmgguf.bench.tool_cases import TOOLS, ToolCase, cases
from fmgguf.runtime.tools.tool_parser import ToolCallParser
from fmgguf.runtime.tools.tools import ToolCall, ToolRequest, ToolSpec

log = logging.getLogger(__name__)


class ChatModel(Protocol):
    def chat(self, messages: list[dict], **kw: Any) -> Any: ...


@dataclass(frozen=True)
class CaseResult:
    id: str
    kind: str
    expect: tuple[str, ...]
    called: tuple[str, ...]
    #: every call's arguments are valid against its tool's schema
    valid: bool
    text: str
    seconds: float

    @property
    def must_call(self) -> bool:
        return bool(self.expect)


@dataclass(frozen=True)
class ToolSuiteReport:
    model: str
    results: tuple[CaseResult, ...]

    def _share(self, pool: Sequence[CaseResult], hit: Callable[[CaseResult], bool]) -> float:
        return round(sum(1 for r in pool if hit(r)) / len(pool), 4) if pool else 0.0

    def rates(self) -> dict[str, float | int]:
        must = [r for r in self.results if r.must_call]
        must_not = [r for r in self.results if not r.must_call]
        parallel = [r for r in self.results if r.kind == "parallel"]
        calls = [r for r in self.results if r.called]
        return {"cases": len(self.results), "must_call_cases": len(must), "must_not_call_cases": len(must_not),
                "schema_valid_call_rate": self._share(must, lambda r: bool(r.called) and r.valid),
                "right_tool_rate": self._share(must, lambda r: set(r.expect) <= set(r.called)),
                "spurious_call_rate": self._share(must_not, lambda r: bool(r.called)),
                "parallel_rate": self._share(parallel, lambda r: len(r.called) >= 2),
                "valid_among_calls_made": self._share(calls, lambda r: r.valid),
                "seconds": round(sum(r.seconds for r in self.results), 2)}

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rates": self.rates(), "results": [asdict(r) for r in self.results]}


def run_tool_suite(model: ChatModel, label: str, *, max_tokens: int = 128, only: Sequence[str] | None = None,
                   progress: Callable[[int, int, str], None] | None = None, **chat_kw: Any) -> ToolSuiteReport:
    """Every case (or the ids in ``only``) through ``model.chat`` (a ModelManager), temperature 0."""
    todo = [c for c in cases() if not only or c.id in only]
    results = []
    for i, case in enumerate(todo):
        if progress is not None:
            progress(i, len(todo), case.id)
        results.append(run_case(model, case, max_tokens=max_tokens, **chat_kw))
        log.info("tool suite %s: %s called %s", label, case.id, ", ".join(results[-1].called) or "nothing")
    if progress is not None:
        progress(len(todo), len(todo), "")
    return ToolSuiteReport(label, tuple(results))


def run_case(model: ChatModel, case: ToolCase, *, max_tokens: int = 128, **chat_kw: Any) -> CaseResult:
    started = time.perf_counter()
    result = model.chat([dict(m) for m in case.messages], max_tokens=max_tokens, temperature=0.0, seed=0,
                        tools=ToolRequest(TOOLS, "auto", True), **chat_kw)
    parser = ToolCallParser(TOOLS, parallel=True)
    parser.feed(str(result.text))
    parser.finish()
    calls = tuple(parser.calls)
    valid = all(call_valid(c, TOOLS) for c in calls)
    return CaseResult(case.id, case.kind, case.expect, tuple(c.name for c in calls), valid, parser.text,
                      round(time.perf_counter() - started, 3))


def call_valid(call: ToolCall, tools: Sequence[ToolSpec]) -> bool:
    spec = next((t for t in tools if t.name == call.name), None)
    if spec is None:
        return False
    try:
        value = json.loads(call.arguments)
    except ValueError:
        return False
    return not schema_errors(value, spec.parameters)


def schema_errors(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """The ways ``value`` breaks ``schema`` — the JSON-schema subset the suite's tools use (type,
    properties, required, additionalProperties false, enum, minimum/maximum, items)."""
    kind = schema.get("type")
    checks = {"object": dict, "string": str, "array": list, "boolean": bool}
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{where}: not an integer"]
    if kind == "number" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return [f"{where}: not a number"]
    if isinstance(kind, str) and kind in checks and not isinstance(value, checks[kind]):
        return [f"{where}: not a{'n' if kind[0] in 'aeiou' else ''} {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: not one of {schema['enum']}"]
    errors: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: above {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        errors += [f"{where}.{k}: missing" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}.{k}: not allowed" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], f"{where}.{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, v in enumerate(value):
            errors += schema_errors(v, schema["items"], f"{where}[{i}]")
    return errors


def report_markdown(report: ToolSuiteReport) -> str:
    r = report.rates()
    lines = [f"## Tool-call suite: {report.model}", "",
             f"{r['cases']} cases ({r['must_call_cases']} must call, {r['must_not_call_cases']} must not)", "",
             "| rate | value |", "|---|---|"]
    for key in ("schema_valid_call_rate", "right_tool_rate", "spurious_call_rate", "parallel_rate",
                "valid_among_calls_made"):
        lines.append(f"| {key.replace('_', ' ')} | {100 * float(r[key]):.1f}% |")
    lines += ["", "| case | kind | expected | called | valid |", "|---|---|---|---|---|"]
    for c in report.results:
        lines.append(f"| {c.id} | {c.kind} | {', '.join(c.expect) or '-'} | {', '.join(c.called) or '-'} | "
                     f"{'yes' if c.valid else 'NO'} |")
    return "\n".join(lines) + "\n"
