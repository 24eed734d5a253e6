"""Store housekeeping: how to get a model back, which files a removed record owned, disk usage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.download.cache import free_bytes
from fmgguf.download.records import ModelRecord

if TYPE_CHECKING:
    from fmgguf.download.downloader import ModelDownloader

LOCAL_REPO_PREFIX = "local/"


def refetch_fix(model_id: str, quant: str | None, repo: str | None = None, origin: str | None = None) -> str:
    """How to get ``model_id:quant`` back: pull it, or re-import it when it never came from a hub."""
    q = f" --quant {quant}" if quant else ""
    if (repo or "").startswith(LOCAL_REPO_PREFIX):
        how = ("`fmgguf import BUNDLE` again" if origin == "bundle" else
               f"`fmgguf import-gguf FILE --as {model_id}{q}` (or `fmgguf import BUNDLE`)")
        return f"it is a local model, not on any hub: re-import it with {how}"
    if origin == "bundle":
        return f"run `fmgguf import BUNDLE` again, or `fmgguf pull {model_id}{q}` on a connected machine"
    return f"run `fmgguf pull {model_id}{q}`"


def catalog_repo(dl: "ModelDownloader", model_id: str, quant: str | None) -> str | None:
    """The repo the catalog names for ``model_id:quant`` (None for an id only the store knows)."""
    try:
        card = dl.catalog.get(model_id)
    except Exception:  # noqa: BLE001 - an id only the store knows
        return None
    variant = card.variants.get(quant) if quant else next(iter(card.variants.values()), None)
    return variant.repo if variant else None


def release_files(dl: "ModelDownloader", old: ModelRecord) -> None:
    """Remove the files of a record that was deleted or replaced, unless a current record still uses them.
    Only files fmgguf owns go: hub-cache blobs/pointers and our hard links under store/local, never a user's file."""
    used = {p for r in dl.records.all() for f in r.files for p in (f.path, f.blob) if p}
    local_dir = dl.settings.store_dir / "local"
    for fr in old.files:
        path = Path(fr.path)
        if path.is_relative_to(local_dir):
            if fr.path not in used:
                path.unlink(missing_ok=True)
                _prune_empty(path.parent, local_dir)
            continue
        if old.commit and fr.path not in used:
            dl.cache.unlink_pointer(old.repo, old.commit, fr.name)
        if fr.blob and fr.blob not in used:
            Path(fr.blob).unlink(missing_ok=True)

def drop_unowned_local(dl: "ModelDownloader", model_id: str) -> None:
    local_dir = dl.settings.store_dir / "local"
    folder = local_dir / model_id
    if not folder.is_dir():
        return
    used = {f.path for r in dl.records.all() for f in r.files}
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and str(path) not in used:
            path.unlink(missing_ok=True)
        elif path.is_dir():
            _prune_empty(path, local_dir)
    _prune_empty(folder, local_dir)

def disk_usage(dl: "ModelDownloader") -> dict[str, Any]:
    models = []
    seen: set[Any] = set()
    total = 0
    locations: list[str] = []
    local_dir = dl.settings.store_dir / "local"
    for rec in dl.records.all():
        models.append({"id": rec.id, "quant": rec.quant, "bytes": rec.bytes})
        for fr in rec.files:
            path = Path(fr.path)
            try:  # hard links and symlinks to one blob are one file on disk
                st = os.stat(path)
                key: Any = (st.st_dev, st.st_ino)
            except OSError:
                key = fr.blob or fr.path
            if key in seen:
                continue
            seen.add(key)
            total += fr.size
            where = (str(dl.settings.hub_cache) if path.is_relative_to(dl.settings.hub_cache) else
                     str(local_dir) if path.is_relative_to(local_dir) else str(path.parent))
            if where not in locations:
                locations.append(where)
    partial = sum(p.stat().st_size for p in dl.settings.hub_cache.glob("models--*/blobs/*.incomplete"))
    qdir = dl.settings.store_dir / "quarantine"
    quarantined = sum(p.stat().st_size for p in qdir.iterdir()) if qdir.is_dir() else 0
    return {"models": models, "total": total, "partial": partial, "quarantine": quarantined,
            "hub_cache": str(dl.settings.hub_cache), "locations": locations, "free": free_bytes(dl.settings.hub_cache)}


def _prune_empty(folder: Path, stop: Path) -> None:
    """rmdir ``folder`` and its parents while they are empty, up to (not including) ``stop``."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
