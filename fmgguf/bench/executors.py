"""Turn (task, answer) into a program, run it in the :class:`~fmgguf.bench.sandbox.Sandbox`, and classify it.

Outcomes: passed, failed (a test assertion, or the program stopped before all tests ran), error (an
exception, crash, output flood or file-size limit), compile_error (does not parse / compile), timeout, memory.
A pass needs exit code 0 *and* a random sentinel line printed after the last assertion, so an
``exit(0)`` in the candidate cannot fake one.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
from dataclasses import asdict, dataclass

from fmgguf.bench.sandbox import INNER_WORKDIR, Limits, RunResult, Sandbox
from fmgguf.bench.tasks import Task
from fmgguf.errors import SandboxError

OUTCOMES = ("passed", "failed", "error", "compile_error", "timeout", "memory")

CPP_PRELUDE = """#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>
using namespace std;
"""

_MEMORY_MARKERS = ("MemoryError", "JavaScript heap out of memory", "std::bad_alloc", "Cannot allocate memory",
                   "Array buffer allocation failed", "out of memory", "Out of memory")


@dataclass
class ExecResult:
    outcome: str
    detail: str = ""
    duration_s: float = 0.0
    stderr_tail: str = ""
    compile_warnings: int | None = None
    compile_s: float | None = None
    max_rss_bytes: int | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def as_dict(self) -> dict:
        return asdict(self)


def _python_program(task: Task, source: str, sentinel: str) -> str:
    entry = task.entry_point or "candidate"
    return f"{source}\n\n{task.tests}\n\ncheck({entry})\nprint({sentinel!r}, flush=True)\n"


def _js_program(task: Task, source: str, sentinel: str) -> str:
    return (f"{source}\n;{{\nconst assert = require('node:assert');\n{task.tests}\n}}\n"
            f"process.stdout.write({json.dumps(sentinel)} + '\\n');\n")


def _cpp_program(task: Task, source: str, sentinel: str) -> str:
    return (f"{CPP_PRELUDE}\n{source}\n\nint main() {{\n{task.tests}\n"
            f"    std::cout << \"{sentinel}\" << std::endl;\n    return 0;\n}}\n")


def _sql_program(task: Task, query: str, sentinel: str) -> str:
    ordered = bool(re.search(r"\border\s+by\b", task.reference, re.I))
    return f'''import sqlite3, sys
FIXTURE = {task.fixture!r}
REFERENCE = {task.reference!r}
CANDIDATE = {query.strip()!r}
con = sqlite3.connect(":memory:")
con.executescript(FIXTURE)
expected = con.execute(REFERENCE).fetchall()
try:
    got = con.execute(CANDIDATE).fetchall()
except (sqlite3.Error, ValueError) as exc:
    print("SQL_ERROR:", exc, file=sys.stderr)
    sys.exit(3)
def norm(rows):
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]
expected, got = norm(expected), norm(got)
if not {ordered!r}:
    expected, got = sorted(expected, key=repr), sorted(got, key=repr)
assert got == expected, f"rows differ: got {{got[:5]!r}} expected {{expected[:5]!r}}"
print({sentinel!r}, flush=True)
'''


def _tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text[-n:]


def classify(run: RunResult, sentinel: str, language: str) -> tuple[str, str]:
    """(outcome, one-line detail) for a finished run."""
    err = run.stderr
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    if run.output_exceeded:
        return "error", "output limit exceeded (killed)"
    if run.timed_out:
        return "timeout", "wall-clock deadline reached (process group killed)"
    if run.signal in (signal.SIGXCPU, signal.SIGKILL) and not any(m in err for m in _MEMORY_MARKERS):
        return "timeout", "CPU time limit reached"
    if run.returncode == 0 and sentinel in run.stdout.splitlines():
        return "passed", ""
    if any(m in err for m in _MEMORY_MARKERS):
        return "memory", "memory limit reached"
    if run.signal == signal.SIGXFSZ or "File too large" in err:
        return "error", "file size limit reached"
    if "No space left on device" in err or "ENOSPC" in err:
        return "error", "disk space limit reached (private tmpfs full)"
    if run.returncode == 0:
        return "failed", "exited before all tests ran (no sentinel)"
    if language in ("python", "sql"):
        if "SQL_ERROR:" in err:
            msg = err.split("SQL_ERROR:", 1)[1].strip().splitlines()[0]
            kind = "compile_error" if re.search(r"syntax error|incomplete input|unrecognized token", msg) else "error"
            return kind, f"sqlite: {msg}"
        if re.match(r"(SyntaxError|IndentationError|TabError)\b", last):
            return "compile_error", last
        if last.startswith("AssertionError"):
            return "failed", last
        return "error", last or f"exit code {run.returncode}"
    if language == "javascript":
        if "AssertionError" in err or "ERR_ASSERTION" in err:
            return "failed", next((ln.strip() for ln in lines if ln.strip().startswith("AssertionError")),
                                  "assertion failed")
        if "SyntaxError" in err:
            return "compile_error", next(ln for ln in lines if "SyntaxError" in ln).strip()
        return "error", next((ln for ln in lines if "Error" in ln), last or f"exit code {run.returncode}").strip()
    # cpp
    if "Assertion" in err and run.signal == signal.SIGABRT:
        return "failed", next((ln for ln in lines if "Assertion" in ln), last)
    if run.signal:
        try:
            name = signal.Signals(run.signal).name
        except ValueError:
            name = str(run.signal)
        return "error", f"killed by signal {name}"
    return "error", last or f"exit code {run.returncode}"


class Executor:
    """Executes answers to tasks. Thread-safe: run many at once from a pool."""

    def __init__(self, sandbox: Sandbox | None = None, timeout_s: float = 10.0, memory_bytes: int = 1024**3) -> None:
        self.sandbox = sandbox or Sandbox(Limits(timeout_s=timeout_s, memory_bytes=memory_bytes))

    def _tool(self, name: str) -> str:
        path = self.sandbox.caps.get(name)
        if not path:
            human = {"python": "python3", "node": "node", "gxx": "g++"}[name]
            raise SandboxError(f"{human} is not installed (or not usable by the sandbox user)",
                               fix=f"install {human} (e.g. apt-get install {'nodejs' if name == 'node' else human})")
        return path

    def available(self, language: str) -> bool:
        need = {"python": "python", "sql": "python", "javascript": "node", "cpp": "gxx"}[language]
        return bool(self.sandbox.caps.get(need))

    def execute(self, task: Task, answer: str) -> ExecResult:
        sentinel = f"FMGGUF-OK-{secrets.token_hex(12)}"
        lim = self.sandbox.limits
        if task.time_limit_s:
            lim = lim.replace(timeout_s=float(task.time_limit_s))
        lang = task.language
        source = task.source(answer)
        if lang in ("python", "sql"):
            prog = _python_program(task, source, sentinel) if lang == "python" else _sql_program(task, source, sentinel)
            files = {"main.py": prog}
            argv = [self._tool("python"), "-I", "-B", "main.py"]
        elif lang == "javascript":
            files = {"main.js": _js_program(task, source, sentinel)}
            argv = [self._tool("node"), "--max-old-space-size=256", "--stack-size=900", "main.js"]
        elif lang == "cpp":
            files = {"main.cpp": _cpp_program(task, source, sentinel)}
            argv = ["./prog"]
        else:  # pragma: no cover - tasks.py validates languages
            raise SandboxError(f"no executor for {lang}", fix="use python, javascript, cpp or sql")
        work = self.sandbox.make_workdir(files)
        try:
            warnings = compile_s = None
            if lang == "cpp":
                gxx = self._tool("gxx")
                comp = self.sandbox.run([gxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-o", "prog", "main.cpp"], work,
                                        limits=lim.replace(timeout_s=max(60.0, lim.timeout_s), processes=64),
                                        memory_bytes=4 * 1024**3, writable=True)
                compile_s = comp.duration_s
                warnings = sum(1 for ln in comp.stderr.splitlines() if "warning:" in ln)
                if comp.returncode != 0:
                    if comp.timed_out:
                        return ExecResult("timeout", "compiler ran past its deadline", comp.duration_s, compile_s=compile_s)
                    first = next((ln for ln in comp.stderr.splitlines() if "error" in ln), _tail(comp.stderr, 200))
                    return ExecResult("compile_error", first.replace(str(work) + "/", ""), comp.duration_s,
                                      _tail(comp.stderr), warnings, compile_s)
            run = self.sandbox.run(argv, work, limits=lim,
                                   memory_bytes=lim.memory_bytes if lang != "javascript" else max(lim.memory_bytes,
                                                                                                 2 * 1024**3))
        finally:
            self.sandbox.remove_workdir(work)
        outcome, detail = classify(run, sentinel, lang)

        def clean(text: str) -> str:
            return text.replace(str(work) + "/", "").replace(INNER_WORKDIR + "/", "")

        return ExecResult(outcome, clean(detail), run.duration_s, clean(_tail(run.stderr)), warnings, compile_s,
                          run.max_rss_bytes)

    def execute_many(self, jobs: list[tuple[Task, str]], workers: int = 2, progress=None) -> list[ExecResult]:
        """Run ``(task, answer)`` pairs in a thread pool (each run is its own process); results in order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(self.execute, t, a) for t, a in jobs]
            out = []
            for f in futures:
                out.append(f.result())
                if progress:
                    progress()
        return out
