"""HumanEval infilling (``--suite humaneval-infill``): gaps cut deterministically from HumanEval's
canonical solutions, as the InCoder and SantaCoder evaluations do, and the FIM-only measures.

Each problem gives two tasks: ``HumanEval/N/line`` (category ``single-line``) removes the middle
non-blank line of the canonical solution; ``HumanEval/N/lines3`` (``multi-line``) removes three lines
around it (fewer when the solution is shorter). The model sees the problem and the solution before the
gap as the prefix and the rest as the suffix; the program that runs is prefix + middle + suffix with
HumanEval's own tests, in the same sandbox as every other task.

Besides pass@1, a FIM answer is scored for **exact match** (the same lines as the removed ones,
ignoring trailing blanks and blank lines) and **overrun**: the middle holds more non-blank lines than
the gap had (it ran past the gap, e.g. repeating the suffix or appending code of its own).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

from fmgguf.bench.tasks import Task

SUITE = "humaneval-infill"
CATEGORIES = {"line": "single-line", "lines3": "multi-line"}


def _gap(lines: list[str], width: int) -> tuple[int, int] | None:
    """[start, end) of ``width`` lines of ``lines`` centred on the middle non-blank line."""
    code = [i for i, ln in enumerate(lines) if ln.strip()]
    if not code:
        return None
    mid = code[len(code) // 2]
    start = max(0, min(mid - (width - 1) // 2, len(lines) - width))
    return start, min(start + width, len(lines))


def infill_tasks(problem: dict, kinds: Iterable[str] = ("line", "lines3")) -> list[Task]:
    """The infilling tasks of one HumanEval problem (``task_id``, ``prompt``, ``canonical_solution``...)."""
    lines = problem["canonical_solution"].splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    out = []
    for kind in kinds:
        gap = _gap(lines, 1 if kind == "line" else 3)
        if gap is None:
            continue
        a, b = gap
        out.append(Task(
            id=f"{problem['task_id']}/{kind}", language="python", category=CATEGORIES[kind],
            prompt=f"Fill in the missing line(s) of {problem['entry_point']}.", entry_point=problem["entry_point"],
            tests=problem["test"], reference="".join(lines[a:b]), wrong="",
            fim_prefix=problem["prompt"] + "".join(lines[:a]), fim_suffix="".join(lines[b:]), suite=SUITE))
    return out


def load_humaneval_infill(path: str | Path, kinds: Iterable[str] = ("line", "lines3")) -> list[Task]:
    """Every infilling task of the HumanEval JSONL at ``path`` (.gz works), in problem order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    tasks: list[Task] = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.strip():
                tasks.extend(infill_tasks(json.loads(line), tuple(kinds)))
    return tasks


def _code_lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()]


def exact_match(middle: str, reference: str) -> bool:
    """The middle has the removed lines, ignoring trailing blanks and blank lines."""
    return _code_lines(middle) == _code_lines(reference)


def overran(middle: str, reference: str) -> bool:
    """The middle ran past the gap: it holds more non-blank lines than the gap had."""
    return len(_code_lines(middle)) > len(_code_lines(reference))


def fim_quality(task: Task, middle: str) -> dict[str, bool]:
    """The FIM-only measures of one answer (empty for a task without a reference middle)."""
    if not task.is_fim or not task.reference:
        return {}
    return {"fim_exact": exact_match(middle, task.reference), "fim_overrun": overran(middle, task.reference)}
