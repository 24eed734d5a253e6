"""Two small things every layer needs: lazy package exports and atomic file writes."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name -> "module:attr"`` on first use (``"module:"`` = the module).

    Keeps ``import fmgguf.<package>`` cheap: nothing heavy loads until a name is asked for.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        mod = importlib.import_module(module)
        value = getattr(mod, attr) if attr else mod
        namespace[name] = value
        return value

    return __getattr__


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old content or the new, never a half-written file."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
