"""The local store: which models are installed (records), which files they own, how to check them.

:class:`Store` is owned by the :class:`~fmgguf.download.downloader.ModelDownloader` (which pulls)
and used by bundles (which export and import); it never talks to the network. Its one rule about
deleting: a file goes only when no current record uses it, and a blob whose bytes another model's
verified record vouches for is never moved or deleted, whatever a catalog pin says.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.download.cache import HubCache, free_bytes, quarantine
from fmgguf.download.hashing import sha256_file
from fmgguf.download.records import HashLock, ModelRecord, StoreRecords, file_record

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.settings import Settings

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


@dataclass
class FileCheck:
    model_id: str
    quant: str
    file: str
    path: str
    expected: str | None
    actual: str | None
    source: str
    ok: bool
    problem: str | None = None


@dataclass
class VerifyResult:
    checks: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    def as_dict(self) -> JsonObject:
        return {"ok": self.ok, "files": [c.__dict__ for c in self.checks]}


class Store:
    """Records, the hash lock and the hub cache of one ``FMGGUF_HOME``, and the files they own."""

    def __init__(self, settings: "Settings", catalog: "Callable[[], Catalog]") -> None:
        self.settings = settings
        self._catalog = catalog
        self.records = StoreRecords(settings.store_dir)
        self.hashlock = HashLock(settings.store_dir)
        self.cache = HubCache(settings.hub_cache)
        self.local_dir = settings.store_dir / "local"
        self.quarantine_dir = settings.store_dir / "quarantine"

    # --- lookups -------------------------------------------------------------------------------
    def record(self, model_id: str, quant: str | None) -> ModelRecord | None:
        """The record of ``model_id:quant``; without a quant, the default quant's (else the first)."""
        from fmgguf.catalog import normalize_quant

        if quant:
            return self.records.get(model_id, normalize_quant(quant))
        quants = self.records.quants(model_id)
        if not quants:
            return None
        pick = self.settings.default_quant if self.settings.default_quant in quants else quants[0]
        return self.records.get(model_id, pick)

    def catalog_repo(self, model_id: str, quant: str | None) -> str | None:
        """The repo the catalog names for ``model_id:quant`` (None for an id only the store knows)."""
        from fmgguf.errors import UnknownModelError

        try:
            card = self._catalog().get(model_id)
        except UnknownModelError:
            return None
        variant = card.variants.get(quant) if quant else next(iter(card.variants.values()), None)
        return variant.repo if variant else None

    def vouched_by(self, path: Path, sha256: str, exclude: tuple[str, str] | None = None) -> ModelRecord | None:
        """A record (other than ``exclude``: id, quant) that verified these very bytes at ``path``:
        it names the same file or blob with this sha256. Such a file is never moved or deleted."""
        try:
            target = os.path.realpath(path)
        except OSError:
            return None
        for rec in self.records.all():
            if exclude is not None and (rec.id, rec.quant) == exclude:
                continue
            for fr in rec.files:
                if fr.sha256 == sha256 and target in {os.path.realpath(p) for p in (fr.path, fr.blob) if p}:
                    return rec
        return None

    # --- checking --------------------------------------------------------------------------------
    def pins(self, rec: ModelRecord) -> dict[str, tuple[str, str]]:
        """file name -> (sha256, source) that the file must match today: the catalog pin, else the hub lock."""
        from fmgguf.errors import UnknownModelError

        try:
            variant = self._catalog().get(rec.id).variants.get(rec.quant)
        except UnknownModelError:  # a model the catalog no longer has: its record is the pin
            variant = None
        out: dict[str, tuple[str, str]] = {}
        for fr in rec.files:
            pinned = next((f.sha256 for f in variant.files if f.name == fr.name and f.sha256), None) if variant else None
            locked = self.hashlock.get(rec.repo, fr.name)
            if pinned:
                out[fr.name] = (pinned, "pin")
            elif locked and fr.source in ("hub", "lock", "tofu"):
                source = locked.get("source", "lock")
                out[fr.name] = (str(locked["sha256"]), source if isinstance(source, str) else "lock")
        return out

    def check_files(self, rec: ModelRecord) -> list[FileCheck]:
        """Re-hash every file of ``rec`` against what it must match; changes nothing."""
        pins = self.pins(rec)
        checks = []
        for fr in rec.files:
            expected, source = pins.get(fr.name, (fr.sha256, fr.source))
            path = Path(fr.path)
            actual = sha256_file(path) if path.is_file() else None
            ok = actual is not None and actual == expected
            problem = None if ok else "missing" if actual is None else "sha256 mismatch"
            if not ok and actual is not None and actual == fr.sha256:
                problem = (f"the catalog now pins {expected}, but this file is the {actual} that was verified when "
                           "it was installed: the pin changed, the file did not (left in place)")
            checks.append(FileCheck(rec.id, rec.quant, fr.name, fr.path, expected, actual, source, ok, problem))
        return checks

    def quarantine_corrupt(self, rec: ModelRecord, checks: list[FileCheck]) -> None:
        """Move the files of ``checks`` that are really corrupt (they match neither what they must match
        nor what was verified at install) to quarantine, unless another model's record vouches for them."""
        verified = {fr.name: fr.sha256 for fr in rec.files}
        for c in checks:
            if c.ok or c.actual is None or c.actual == verified.get(c.file):
                continue
            owner = self.vouched_by(Path(c.path), c.actual, exclude=(rec.id, rec.quant))
            if owner is not None:
                c.problem = f"{c.problem}; left in place: {owner.id}:{owner.quant} verified these bytes"
                continue
            moved = quarantine(Path(c.path).resolve(), self.quarantine_dir, f"{c.file}.bad")
            c.problem = f"{c.problem} (moved to {moved})"

    def refresh(self, rec: ModelRecord) -> None:
        """Record ``rec`` again with its files' current stat (after a successful re-hash)."""
        self.records.put(ModelRecord(**{**rec.__dict__, "files": [
            file_record(f.name, Path(f.path), f.sha256, f.source, Path(f.blob) if f.blob else None)
            for f in rec.files]}))

    # --- deleting --------------------------------------------------------------------------------
    def release_files(self, old: ModelRecord) -> None:
        """Remove the files of a deleted or replaced record, unless a current record still uses them.
        Only files fmgguf owns go: hub-cache blobs/pointers and our hard links under store/local, never a user's file."""
        used = {p for r in self.records.all() for f in r.files for p in (f.path, f.blob) if p}
        for fr in old.files:
            path = Path(fr.path)
            if path.is_relative_to(self.local_dir):
                if fr.path not in used:
                    path.unlink(missing_ok=True)
                    _prune_empty(path.parent, self.local_dir)
                continue
            if old.commit and fr.path not in used:
                self.cache.unlink_pointer(old.repo, old.commit, fr.name)
            if fr.blob and fr.blob not in used:
                Path(fr.blob).unlink(missing_ok=True)

    def drop_unowned_local(self, model_id: str) -> None:
        """What an earlier import left under store/local/<id> that no record points at any more."""
        folder = self.local_dir / model_id
        if not folder.is_dir():
            return
        used = {f.path for r in self.records.all() for f in r.files}
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file() and str(path) not in used:
                path.unlink(missing_ok=True)
            elif path.is_dir():
                _prune_empty(path, self.local_dir)
        _prune_empty(folder, self.local_dir)

    def disk_usage(self) -> JsonObject:
        models = []
        seen: set[tuple[int, int] | str] = set()
        total = 0
        locations: list[str] = []
        hub_cache = self.settings.hub_cache
        for rec in self.records.all():
            models.append({"id": rec.id, "quant": rec.quant, "bytes": rec.bytes})
            for fr in rec.files:
                path = Path(fr.path)
                try:  # hard links and symlinks to one blob are one file on disk
                    st = os.stat(path)
                    key: tuple[int, int] | str = (st.st_dev, st.st_ino)
                except OSError:
                    key = fr.blob or fr.path
                if key in seen:
                    continue
                seen.add(key)
                total += fr.size
                where = (str(hub_cache) if path.is_relative_to(hub_cache) else
                         str(self.local_dir) if path.is_relative_to(self.local_dir) else str(path.parent))
                if where not in locations:
                    locations.append(where)
        partial = sum(p.stat().st_size for p in hub_cache.glob("models--*/blobs/*.incomplete"))
        qdir = self.quarantine_dir
        quarantined = sum(p.stat().st_size for p in qdir.iterdir()) if qdir.is_dir() else 0
        return {"models": models, "total": total, "partial": partial, "quarantine": quarantined,
                "hub_cache": str(hub_cache), "locations": locations, "free": free_bytes(hub_cache)}


def _prune_empty(folder: Path, stop: Path) -> None:
    """rmdir ``folder`` and its parents while they are empty, up to (not including) ``stop``."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
