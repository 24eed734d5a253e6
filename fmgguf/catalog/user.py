"""Writing the user catalog (``settings.catalog_file``): add or replace entries, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fmgguf._util import JsonObject, atomic_write_text
from fmgguf.catalog.loader import parse_card, raw_entries, read_yaml
from fmgguf.catalog.schema import ModelCard, normalize_quant
from fmgguf.errors import CatalogError

if TYPE_CHECKING:
    from fmgguf.settings import Settings


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=30)


def _read_entries(path: Path) -> list[JsonObject]:
    if not path.is_file():
        return []
    data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        raise CatalogError(f"{path} is in the seed config format", fix="add entries to a separate catalog.yaml (FMGGUF_CATALOG)")
    return raw_entries(data, path)


def _write_entries(path: Path, entries: list[JsonObject]) -> None:
    text = "# fmgguf user catalog: merged over the built-in one (`fmgguf catalog add` writes here)\n"
    text += yaml.safe_dump({"models": entries}, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)


def add_user_entry(settings: Settings, entry: JsonObject, merge_variants: bool = True) -> ModelCard:
    """Validate ``entry`` (a raw card dict) and write it to the user catalog.

    An existing user entry with the same id is replaced; with ``merge_variants`` its other
    quant variants are kept, so adding Q8_0 after Q4_K_M leaves both.
    """
    path = Path(settings.catalog_file)
    with _lock(path):
        entries = _read_entries(path)
        entry = {k: v for k, v in entry.items() if v is not None and k != "builtin"}
        for i, old in enumerate(entries):
            if old.get("id") == entry.get("id"):
                if merge_variants and isinstance(old.get("variants"), dict):
                    entry = {**old, **entry, "variants": {**old["variants"], **entry.get("variants", {})}}
                card = parse_card(entry, path, i, builtin=False)
                entries[i] = entry
                break
        else:
            card = parse_card(entry, path, len(entries), builtin=False)
            entries.append(entry)
        _write_entries(path, entries)
    return card


def remove_user_entry(settings: Settings, model_id: str) -> bool:
    path = Path(settings.catalog_file)
    with _lock(path):
        entries = _read_entries(path)
        kept = [e for e in entries if e.get("id") != model_id]
        if len(kept) == len(entries):
            return False
        _write_entries(path, kept)
    return True


def simple_entry(model_id: str, repo: str, files: list[str], quant: str, sha256: list[str | None] | None = None,
                 revision: str | None = None, base: ModelCard | None = None, sizes: list[int | None] | None = None) -> JsonObject:
    """The entry `fmgguf catalog add` writes: one quant variant, architecture copied from ``base``
    when the id extends a built-in model (so fit plans work before download)."""
    q = normalize_quant(quant)
    shas = sha256 or [None] * len(files)
    if len(shas) != len(files):
        raise CatalogError("give one --sha256 per --file", fix="repeat --sha256 in the same order as --file")
    sz = sizes or [None] * len(files)
    variant = {"repo": repo, "files": [{"name": f, "sha256": (h.lower() if h else None), "size": s}
                                       for f, h, s in zip(files, shas, sz, strict=True)]}
    if revision:
        variant["revision"] = revision
    entry: JsonObject = {"id": model_id, "variants": {q: variant}}
    if base is not None:
        entry.update(base.model_dump(mode="json", exclude={"variants", "builtin", "id"}, exclude_none=True))
        entry["variants"] = {**{k: v.model_dump(mode="json", exclude_none=True) for k, v in base.variants.items()},
                             q: variant}
    else:
        entry.update({"family": "custom", "display_name": model_id})
    return entry
