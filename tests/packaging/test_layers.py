"""The import rules of the tree, read from the source: production code never imports the test-support
package (the mirror and the sdist fetcher are product modules of their own)."""

from __future__ import annotations

import ast
from pathlib import Path

import fmgguf

ROOT = Path(fmgguf.__file__).parent
#: production modules still allowed to reach into fmgguf.testing, with why (empty it, never grow it)
ALLOWED: dict[str, str] = {}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_production_code_never_imports_the_test_support_package() -> None:
    offenders = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("testing/"):
            continue
        used = sorted(n for n in _imports(path) if n == "fmgguf.testing" or n.startswith("fmgguf.testing."))
        if used and rel not in ALLOWED:
            offenders[rel] = used
    assert offenders == {}


def test_the_allowed_exceptions_still_exist_and_still_need_it() -> None:
    for rel in ALLOWED:
        assert any(n.startswith("fmgguf.testing") for n in _imports(ROOT / rel)), f"{rel} no longer needs ALLOWED"


def test_the_tiny_model_builder_is_product_code() -> None:
    """The demo's offline fallback builds its model with fmgguf.tiny, which needs nothing from the tests."""
    for path in (ROOT / "tiny").rglob("*.py"):
        assert not any(n.startswith("fmgguf.testing") for n in _imports(path)), path
