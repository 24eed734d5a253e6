"""Small things every layer needs, one copy each: lazy package exports, atomic file writes, the byte
formatter, the JSON object type and converter and the per-settings cache of the top-level ``get_*`` functions."""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from fmgguf.settings import Settings

T = TypeVar("T")

#: A JSON object as parsed from, or about to be written to, a wire, a file or the CLI (``json``, YAML,
#: pydantic dumps). Its values are unknown until read: readers narrow them with ``isinstance``.
JsonObject = dict[str, object]


def json_int(value: object) -> int:
    """``int(value)`` for a number or numeric text read from JSON; TypeError for anything else."""
    if isinstance(value, (int, float, str)):
        return int(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def json_float(value: object) -> float:
    """``float(value)`` for a number or numeric text read from JSON; TypeError for anything else."""
    if isinstance(value, (int, float, str)):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def json_number(value: object) -> float | None:
    """``value`` when it is a number (an int stays an int), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def json_str(value: object) -> str | None:
    """``value`` when it is text, else None."""
    return value if isinstance(value, str) else None


def json_object(value: object) -> JsonObject:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def json_list(value: object) -> list[object]:
    """``value`` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving ``name -> "module:attr"`` on first use (``"module:"`` = the module).

    Keeps ``import fmgguf.<package>`` cheap: nothing heavy loads until a name is asked for.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
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
    """Write ``text`` to ``path`` so readers see the old content or the new, never a half-written file.

    The temp file has a unique name beside ``path`` (concurrent writers never share one) and is
    fsynced before it replaces ``path``.
    """
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


def human_bytes(n: int | float | None, unknown: str = "?") -> str:
    """``1536 -> "1.5 KiB"``: binary units, one decimal (whole bytes below 1 KiB); ``unknown`` for None."""
    if n is None:
        return unknown
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def jsonable(obj: object, depth: int = 0) -> object:
    """Plain JSON data from dataclasses, pydantic models, Paths and objects with ``as_dict`` (the JSON edges).

    Keys starting with ``_`` are private and left out; anything else unknown becomes its ``str``.
    """
    if depth > 8:
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in obj]
    if hasattr(obj, "as_dict") and callable(obj.as_dict):
        return jsonable(obj.as_dict(), depth + 1)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)
                if not f.name.startswith("_")}
    return str(obj)


class PerSettings(Generic[T]):
    """The cache behind a top-level ``get_*`` function: one instance per distinct :class:`Settings`.

    Equal settings share an instance; other settings get their own (never the first caller's). Library
    classes never use this: they take their collaborators.
    """

    def __init__(self, build: Callable[[Settings], T]) -> None:
        self._build = build
        self._made: dict[Hashable, T] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings | None = None) -> T:
        if settings is None:
            from fmgguf.settings import load_settings

            settings = load_settings()
        with self._lock:
            if settings not in self._made:
                self._made[settings] = self._build(settings)
            return self._made[settings]

    def clear(self) -> None:
        with self._lock:
            self._made.clear()
