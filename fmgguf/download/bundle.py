"""Air-gapped bundles (``fmgguf export`` / ``fmgguf import``); ``fmgguf import-gguf`` is in ``local.py``.

A bundle is a folder or a ``.tar`` holding ``fmgguf-bundle.json`` (ids, quants, repos, commits,
file names, sizes, sha256, trust source, the catalog entries, the fmgguf version) and the GGUF
files under ``models/<id>/<quant>/``. Import stages every file next to the hub cache, hashing as it
copies; only when every file matched the manifest does anything enter the store. Manifest paths
must be relative and stay inside the bundle; tar members must be regular files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypedDict

from fmgguf._util import JsonObject, json_object
from fmgguf.download.cache import check_free, human_bytes
from fmgguf.download.records import ModelRecord, file_record, now
from fmgguf.errors import BundleError, NotDownloadedError

if TYPE_CHECKING:
    from fmgguf.download.downloader import ModelDownloader

MANIFEST = "fmgguf-bundle.json"
FORMAT = "fmgguf-bundle/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
COPY_CHUNK = 4 << 20


class _ManifestFileBase(TypedDict):
    name: str
    path: str
    size: int
    sha256: str


class ManifestFile(_ManifestFileBase, total=False):
    """One file of a bundle's model: its name, its path in the bundle, size, sha256 and how it was verified."""

    source: str


class _ManifestEntryBase(TypedDict):
    id: str
    quant: str
    repo: str
    files: list[ManifestFile]


class ManifestEntry(_ManifestEntryBase, total=False):
    """One model of a bundle's manifest (what :func:`_check_manifest` checks; the rest is read with care)."""

    revision: str | None
    commit: str | None
    builtin: bool
    card: JsonObject | None

#: progress(file name, bytes done, total)
Progress = Callable[[str, int, "int | None"], None]


def _copy_hashing(src: IO[bytes], dst: IO[bytes], name: str, total: int | None, progress: Progress | None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := src.read(COPY_CHUNK):
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
        if progress is not None:
            progress(name, n, total)
    return h.hexdigest(), n


# --- export ----------------------------------------------------------------------------------------
def export_models(dl: "ModelDownloader", specs: list[str], dest: Path, progress: Progress | None = None) -> JsonObject:
    """Write a bundle of the installed ``specs`` (``ID`` = every installed quant, ``ID:QUANT``) to ``dest``."""
    from fmgguf import __version__

    dest = Path(dest)
    records = _records_for(dl, specs)
    entries = [_manifest_entry(dl, rec) for rec in records]
    manifest: JsonObject = {"format": FORMAT, "fmgguf_version": __version__, "created_at": now(), "models": entries}
    check_free(dest.parent, sum(f["size"] for e in entries for f in e["files"]), f"the bundle {dest}")
    is_tar = dest.suffix == ".tar"
    if dest.exists() and (is_tar or any(dest.iterdir())):
        raise BundleError(f"{dest} already exists", fix="choose a new path (or remove it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    sources = [(f, Path(rf.path)) for e, rec in zip(entries, records, strict=True)
               for f, rf in zip(e["files"], rec.files, strict=True)]
    try:
        (_write_tar if is_tar else _write_dir)(tmp, manifest, sources, progress)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return manifest


def _records_for(dl: "ModelDownloader", specs: list[str]) -> list[ModelRecord]:
    """The store records ``specs`` name (NotDownloadedError for one that is not installed)."""
    from fmgguf.download.store import refetch_fix

    records: list[ModelRecord] = []
    for spec in specs:
        model_id, _, quant = spec.partition(":")
        model_id = dl.known_id(model_id)
        quants = [quant] if quant else dl.records.quants(model_id)
        if not quants:
            raise NotDownloadedError(f"{model_id} is not downloaded, so it cannot be exported",
                                     fix=refetch_fix(model_id, None, dl.store.catalog_repo(model_id, None)))
        for q in quants:
            rec = dl.store.record(model_id, q)
            if rec is None:
                raise NotDownloadedError(f"{model_id}:{q} is not downloaded",
                                         fix=refetch_fix(model_id, q, dl.store.catalog_repo(model_id, q)))
            records.append(rec)
    return records


def _manifest_entry(dl: "ModelDownloader", rec: ModelRecord) -> ManifestEntry:
    """One model of the manifest: where it came from, its files' hashes, its catalog card."""
    from fmgguf.errors import UnknownModelError

    try:
        card = dl.catalog.get(rec.id)
        card_dict = card.model_dump(mode="json", exclude={"builtin"}, exclude_none=True)
        builtin = card.builtin
    except UnknownModelError:  # a store entry the catalog lost: carry a minimal card
        card_dict, builtin = None, False
    return {"id": rec.id, "quant": rec.quant, "repo": rec.repo, "revision": rec.revision,
            "commit": rec.commit, "builtin": builtin, "card": card_dict,
            "files": [{"name": f.name, "path": f"models/{rec.id}/{rec.quant}/{f.name}", "size": f.size,
                       "sha256": f.sha256, "source": f.source} for f in rec.files]}


def _write_tar(tmp: Path, manifest: JsonObject, sources: list[tuple[ManifestFile, Path]],
               progress: Progress | None) -> None:
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(os.path.getmtime(sources[0][1])) if sources else 0
        tar.addfile(info, io.BytesIO(data))
        for f, src in sources:
            info = tarfile.TarInfo(f["path"])
            info.size = f["size"]
            info.mode = 0o644
            with open(src, "rb") as fh:
                reader = _HashingReader(fh, f["path"], f["size"], progress)
                tar.addfile(info, reader)
            reader.check(f["sha256"], src)


def _write_dir(tmp: Path, manifest: JsonObject, sources: list[tuple[ManifestFile, Path]],
               progress: Progress | None) -> None:
    for f, src in sources:
        out = tmp / f["path"]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fin, open(out, "wb") as fout:
            actual, _ = _copy_hashing(fin, fout, f["path"], f["size"], progress)
        if actual != f["sha256"]:
            raise BundleError(f"{src} changed since it was verified (sha256 {actual}, recorded {f['sha256']})",
                              fix="run `fmgguf verify` and pull the model again")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


class _HashingReader:
    def __init__(self, fh: IO[bytes], name: str, total: int, progress: Progress | None) -> None:
        self.fh, self.name, self.total, self.progress = fh, name, total, progress
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.h.update(data)
        self.n += len(data)
        if self.progress is not None and data:
            self.progress(self.name, self.n, self.total)
        return data

    def check(self, expected: str, src: Path) -> None:
        if self.h.hexdigest() != expected or self.n != self.total:
            raise BundleError(f"{src} changed since it was verified", fix="run `fmgguf verify` and pull the model again")


# --- import ----------------------------------------------------------------------------------------
class _Source:
    """Read files out of a bundle folder or tar, refusing anything that escapes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.truncated = False
        if self.path.is_file():
            try:
                self.tar = tarfile.open(self.path, "r:*")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BundleError(f"{self.path} is not a readable bundle ({exc})", fix="export it again") from None
            try:
                for member in self.tar:
                    self.members[member.name] = member
            except (tarfile.TarError, EOFError, OSError):
                self.truncated = True  # what was read is kept; the cut-off file is named when asked for
        elif not self.path.is_dir():
            raise BundleError(f"{self.path} does not exist", fix="give the folder or .tar `fmgguf export` wrote")

    def open(self, rel: str) -> IO[bytes]:
        if self.tar is not None:
            member = self.members.get(rel)
            if member is None:
                why = "is truncated before" if self.truncated else "lacks"
                raise BundleError(f"bundle {self.path} {why} {rel}", fix="the bundle is incomplete: copy or export it again")
            if not member.isfile():
                raise BundleError(f"bundle member {rel} is not a regular file", fix="export the bundle again")
            fh = self.tar.extractfile(member)
            assert fh is not None
            return fh
        target = self.path / rel
        root = os.path.realpath(self.path)
        if os.path.islink(target) or not os.path.realpath(target).startswith(root + os.sep):
            raise BundleError(f"bundle path {rel} leaves the bundle (link or escape)", fix="export the bundle again")
        if not target.is_file():
            raise BundleError(f"bundle {self.path} lacks {rel}", fix="the bundle is incomplete: export it again")
        return open(target, "rb")

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _check_manifest(data: object, where: Path) -> list[ManifestEntry]:
    from fmgguf.catalog.schema import check_relative_path

    def bad(msg: str) -> BundleError:
        return BundleError(f"bundle manifest in {where}: {msg}", fix="export the bundle again with `fmgguf export`")

    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), list):
        raise bad(f"not an {FORMAT} manifest")
    for entry in data["models"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), list) or not entry["files"]:
            raise bad("a model entry without files")
        for key in ("id", "quant", "repo"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise bad(f"a model entry without {key}")
        for f in entry["files"]:
            if not isinstance(f, dict):
                raise bad("a file entry is not a mapping")
            for key in ("path", "name"):
                try:
                    check_relative_path(str(f.get(key, "")))
                except ValueError as exc:
                    raise bad(f"file {key} {f.get(key)!r} rejected: {exc}") from None
            if not isinstance(f.get("sha256"), str) or not _HEX64.match(f["sha256"]):
                raise bad(f"file {f['path']} has no valid sha256")
            if not isinstance(f.get("size"), int) or f["size"] < 0:
                raise bad(f"file {f['path']} has no valid size")
    return data["models"]


def import_bundle(dl: "ModelDownloader", path: Path, progress: Progress | None = None) -> list[JsonObject]:
    """Verify every file of the bundle, then install all of it (or nothing)."""
    src = _Source(Path(path))
    staging = dl.settings.hub_cache / f".fmgguf-import-{uuid.uuid4().hex[:12]}"
    try:
        entries = _read_manifest(src, Path(path))
        _check_against_catalog(dl, entries)
        check_free(dl.settings.hub_cache, sum(f["size"] for e in entries for f in e["files"]), f"importing {path}")
        staging.mkdir(parents=True)
        staged = _stage(src, entries, staging, progress)
        installed = [_install(dl, entry, staged) for entry in entries]  # everything verified: install
        dl.reload_catalog()
        return installed
    finally:
        src.close()
        shutil.rmtree(staging, ignore_errors=True)


def _read_manifest(src: _Source, path: Path) -> list[ManifestEntry]:
    try:
        with src.open(MANIFEST) as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except BundleError:
        raise BundleError(f"{path} has no {MANIFEST}", fix="give the folder or .tar that `fmgguf export` wrote") from None
    except (ValueError, UnicodeDecodeError, tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"{path}: {MANIFEST} is unreadable ({exc})", fix="export the bundle again") from None
    return _check_manifest(manifest, path)


def _check_against_catalog(dl: "ModelDownloader", entries: list[ManifestEntry]) -> None:
    """A bundle may not contradict this machine's catalog pins."""
    for entry in entries:
        if entry["id"] not in dl.catalog:
            continue
        variant = dl.catalog.get(entry["id"]).variants.get(entry["quant"])
        pins = {g.name: g.sha256 for g in variant.files if g.sha256} if variant else {}
        for f in entry["files"]:
            if pins.get(f["name"], f["sha256"]) != f["sha256"]:
                raise BundleError(f"bundle file {f['path']} has sha256 {f['sha256']} but the catalog pins "
                                  f"{pins[f['name']]}", fix="export from a machine with the same catalog")


def _stage(src: _Source, entries: list[ManifestEntry], staging: Path, progress: Progress | None) -> dict[str, Path]:
    """Copy every file next to the hub cache, hashing as it goes; BundleError at the first bad one."""
    staged: dict[str, Path] = {}
    for entry in entries:
        for f in entry["files"]:
            out = staging / f"{len(staged)}.part"
            try:
                with src.open(f["path"]) as fin, open(out, "wb") as fout:
                    actual, size = _copy_hashing(fin, fout, f["path"], f["size"], progress)
            except (tarfile.TarError, EOFError) as exc:
                raise BundleError(f"bundle file {f['path']} is truncated or unreadable ({exc})",
                                  fix="copy the bundle again; nothing was installed") from None
            if size != f["size"]:
                raise BundleError(f"bundle file {f['path']} is {human_bytes(size)} ({size} bytes), manifest says "
                                  f"{f['size']}: truncated", fix="copy the bundle again; nothing was installed")
            if actual != f["sha256"]:
                raise BundleError(f"bundle file {f['path']} is corrupt: sha256 {actual}, manifest says {f['sha256']}",
                                  fix="copy or export the bundle again; nothing was installed")
            staged[f["path"]] = out
    return staged


def _install(dl: "ModelDownloader", entry: ManifestEntry, staged: dict[str, Path]) -> JsonObject:
    """Move one model's verified files into the hub cache and record it (and its card)."""
    from fmgguf.catalog.user import add_user_entry

    card = entry.get("card")
    if isinstance(card, dict) and not entry.get("builtin") and card.get("id") == entry["id"]:
        variants = json_object(card.get("variants"))
        card = {**card, "variants": {k: v for k, v in variants.items() if k == entry["quant"]} or variants}
        add_user_entry(dl.settings, card)
    given = entry.get("commit")
    commit = given if isinstance(given, str) and _HEX40.match(given) \
        else hashlib.sha1(json.dumps(entry["files"], sort_keys=True).encode()).hexdigest()  # noqa: S324
    files = []
    for f in entry["files"]:
        blob = dl.cache.blob(entry["repo"], f["sha256"])
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged[f["path"]], blob)
        pointer = dl.cache.link(entry["repo"], f["sha256"], commit, f["name"], entry.get("revision"))
        source = f.get("source", "bundle")
        if source not in ("pin", "hub", "tofu", "local", "lock"):
            source = "bundle"
        if source in ("hub", "tofu"):
            dl.hashlock.set(entry["repo"], f["name"], f["sha256"], f["size"], source, commit)
        files.append(file_record(f["name"], pointer, f["sha256"], source, blob))
    old = dl.records.get(entry["id"], entry["quant"])
    dl.records.put(ModelRecord(id=entry["id"], quant=entry["quant"], repo=entry["repo"], commit=commit,
                               revision=entry.get("revision"), origin="bundle", files=files))
    if old is not None:  # e.g. an earlier import-gguf of the same id: its hard link is ours to drop
        dl.release_files(old)
    return {"id": entry["id"], "quant": entry["quant"], "files": len(files),
            "bytes": sum(f["size"] for f in entry["files"]), "path": str(files[0].path)}
