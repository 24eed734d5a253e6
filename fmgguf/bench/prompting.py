"""Asking a model for an answer and pulling the code out of what it says; static quality checks.

Instruct models (a chat template) get the task prompt and are asked for one fenced code block; the
first block in the task's language (else the first block, else the raw text) is the answer. Base
models get the task's ``stub`` as a completion prompt with per-language stop sequences, and the
answer is stub + completion. FIM tasks go through ``fill_in_middle``.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fmgguf.bench.tasks import Task

SYSTEM = ("You are an expert programmer. Answer with a single fenced code block that contains the complete "
          "solution and nothing else: no explanations, no example usage, no tests.")
_FENCE_NAMES = {"python": ("python", "py", "python3"), "javascript": ("javascript", "js", "node"),
                "cpp": ("cpp", "c++", "cc", "cxx", "c"), "sql": ("sql", "sqlite")}
STOPS = {"python": ["\ndef __main", "\nif __name__", "\nprint(", "\n#", "\nclass Test", "\nassert "],
         "javascript": ["\nconsole.log", "\n// Test", "\nmodule.exports"],
         "cpp": ["\nint main", "\n// Test"],
         "sql": [";", "\n\n"]}
#: the stop sequences HumanEval's authors used for completion models (Codex paper)
HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
_FENCE = re.compile(r"```[ \t]*([\w+#-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def chat_messages(task: Task) -> list[dict]:
    lang = {"cpp": "C++17", "javascript": "JavaScript (Node.js)", "sql": "SQLite", "python": "Python 3"}[task.language]
    body = task.prompt.strip()
    if task.language == "sql" and task.fixture:
        body += "\n\nThe database:\n```sql\n" + task.fixture.strip() + "\n```"
    if task.completion_mode and task.stub:
        body = f"Complete this {lang} function:\n```{task.language}\n{task.stub}```"
    body += f"\n\nAnswer in {lang} with one fenced code block."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


def extract_code(text: str, language: str) -> tuple[str, bool]:
    """(code, whether a fenced block was found)."""
    blocks = _FENCE.findall(text)
    for name, code in blocks:
        if name.lower() in _FENCE_NAMES[language]:
            return code, True
    if blocks:
        return blocks[0][1], True
    return text, False


def answer_from_chat(task: Task, text: str) -> tuple[str, bool]:
    """(answer, whether a fenced block was found) from a chat reply."""
    code, fenced = extract_code(text, task.language)
    entry = task.entry_point or ""
    if task.completion_mode:
        # HumanEval-style: the executor runs stub + answer. A reply that repeats the whole function
        # closes the stub with `pass` and redefines it (the stub's imports first).
        if entry and re.search(rf"\bdef\s+{re.escape(entry)}\b", code):
            imports = "".join(ln + "\n" for ln in task.stub.splitlines() if ln.startswith(("import ", "from ")))
            return "    pass\n\n" + imports + code, fenced
        return code, fenced
    if task.language in ("python", "javascript", "cpp") and task.stub and entry and entry not in code:
        code = task.stub + code  # the model wrote only the body
    return code, fenced


def completion_answer(task: Task, text: str) -> str:
    if task.completion_mode:
        return text
    return task.stub + text


def static_quality(task: Task, source: str, extracted: bool) -> dict:
    """Per-sample quality facts: lines of code, parses (Python: ast), ruff findings (Python)."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.strip().startswith(("#", "//", "--"))]
    out: dict = {"loc": len(lines), "extracted": extracted}
    if task.language == "python":
        try:
            ast.parse(source)
            out["parses"] = True
        except (SyntaxError, ValueError):
            out["parses"] = False
        out["ruff_findings"] = ruff_findings(source) if out["parses"] else None
    return out


def _ruff_bin() -> str | None:
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.exists() else shutil.which("ruff")


def ruff_findings(source: str) -> int | None:
    """Count of ruff findings (pinned rule set: pyflakes F, E9 syntax, bugbear B) on ``source``; None without ruff."""
    ruff = _ruff_bin()
    if not ruff:
        return None
    try:
        r = subprocess.run([ruff, "check", "--isolated", "--select", "F,E9,B", "--output-format", "json",
                            "--stdin-filename", "answer.py", "-"], input=source, capture_output=True, text=True,
                           timeout=30, check=False)
        return len(json.loads(r.stdout or "[]"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
