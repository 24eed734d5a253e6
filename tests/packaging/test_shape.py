"""The shape limits of the tree, read from the source: modules under 400 lines, functions under 60,
and no import circle among the runtime's modules (lazy imports count: a circle through a function's
import still ties the two modules together)."""

from __future__ import annotations

import ast
from pathlib import Path

import fmgguf

ROOT = Path(fmgguf.__file__).parent
MAX_MODULE, MAX_FUNCTION = 400, 60
#: import circles still allowed, with why (empty it, never grow it)
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_graph() -> dict[str, set[str]]:
    files = {_name(p): p for p in (ROOT / "runtime").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = {n.lineno for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)
                     if hasattr(n, "lineno")}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.lineno not in type_only:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import) and node.lineno not in type_only:
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != mod}
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module."""
    reach = {m: set() for m in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            m = todo.pop()
            if m not in reach[start]:
                reach[start].add(m)
                todo.extend(graph.get(m, ()))
    return {frozenset({m} | {o for o in reach[m] if m in reach[o]}) for m in graph if m in reach[m]}


def test_no_module_over_the_limit() -> None:
    big = {p.relative_to(ROOT).as_posix(): n for p in ROOT.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE}
    assert big == {}


def test_no_function_over_the_limit() -> None:
    long = {}
    for p in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION:
                    long[f"{p.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}"] = size
    assert long == {}


def test_no_import_circle_in_the_runtime() -> None:
    assert _cycles(_runtime_graph()) - set(ALLOWED_CYCLES) == set()


def test_the_allowed_circles_are_still_there() -> None:
    assert set(ALLOWED_CYCLES) <= _cycles(_runtime_graph()), "a circle is gone: remove it from ALLOWED_CYCLES"
