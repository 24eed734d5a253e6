"""What a mirror serves: repos of files, read from an export bundle, a hub cache or a plain folder.

- an export bundle (a folder or an uncompressed ``.tar`` holding ``fmgguf-bundle.json``): each model
  entry's files under its ``repo``, with the commit and sha256 the bundle recorded;
- a huggingface_hub cache (``models--ORG--NAME/…``, e.g. ``~/.cache/huggingface/hub`` or what ``fmgguf
  pull`` filled): each repo's ``main`` snapshot, with its real commit;
- any other folder laid out as ``ORG/NAME/FILE…`` (sha256 computed once, at start).

Nothing here writes: a source is opened read-only and files are read by offset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.download.hashing import sha256_file
from fmgguf.errors import BundleError, InvalidRequestError

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog

BUNDLE_MANIFEST = "fmgguf-bundle.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class MirrorFile:
    """One servable file: ``size`` bytes at ``offset`` in ``path`` (a tar member sits inside its tar)."""

    path: Path
    size: int
    sha256: str
    offset: int = 0

    def open(self) -> IO[bytes]:
        fh = open(self.path, "rb")
        fh.seek(self.offset)
        return fh


@dataclass
class MirrorRepo:
    """A repo's files and the commit they are served at (plus revisions that name it)."""

    files: dict[str, MirrorFile] = field(default_factory=dict)
    commit: str = ""
    revisions: set[str] = field(default_factory=lambda: {"main"})
    #: catalog-pinned revisions this source has no history for, honoured only for the files whose sha256
    #: matches the catalog's pin at that revision (revision -> those file names)
    pinned: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class HonouredPin:
    """A catalog entry whose pinned revision a mirror serves because its files match the pins."""

    repo: str
    revision: str
    entry: str  # id:QUANT
    files: tuple[str, ...]


def honour_catalog_pins(repos: dict[str, MirrorRepo], catalog: Catalog) -> list[HonouredPin]:
    """Serve each catalog variant's pinned revision from a source without that history (a folder, a bundle
    or a hub cache at another commit) when the source holds every one of its files with the pinned sha256."""
    honoured = []
    for card in catalog.models():
        for quant, variant in card.variants.items():
            repo = repos.get(variant.repo)
            rev = variant.revision
            if repo is None or rev is None or rev in repo.revisions:
                continue
            names = [f.name for f in variant.files]
            if all(f.sha256 and f.name in repo.files and repo.files[f.name].sha256 == f.sha256 for f in variant.files):
                repo.pinned.setdefault(rev, set()).update(names)
                honoured.append(HonouredPin(variant.repo, rev, f"{card.id}:{quant}", tuple(names)))
    return honoured


def load_source(path: str | os.PathLike[str]) -> dict[str, MirrorRepo]:
    """The repos under ``path`` (a bundle folder or .tar, a hub cache, or an ORG/NAME/FILE folder)."""
    root = Path(path).expanduser()
    if root.is_file():
        repos = _from_tar(root)
    elif not root.is_dir():
        raise InvalidRequestError(f"{root} does not exist", fix="give a folder or a bundle `fmgguf export` wrote")
    elif (root / BUNDLE_MANIFEST).is_file():
        repos = _from_bundle_dir(root)
    elif any(p.name.startswith("models--") for p in root.iterdir()):
        repos = _from_hub_cache(root)
    else:
        repos = _from_folder(root)
    if not any(r.files for r in repos.values()):
        raise InvalidRequestError(f"{root} holds no files to serve",
                                  fix="give an export bundle, a hub cache, or a folder laid out as ORG/NAME/FILE")
    for repo_id, repo in repos.items():
        repo.commit = repo.commit or stand_in_commit(repo_id, repo.files)
        repo.revisions.add(repo.commit)
    return repos


def stand_in_commit(repo_id: str, files: dict[str, MirrorFile]) -> str:
    """A commit id that changes whenever a file does (sources without git history)."""
    digest = hashlib.sha1(repo_id.encode())  # noqa: S324 - an id, not a security hash
    for name in sorted(files):
        digest.update(f"{name}\0{files[name].sha256}\n".encode())
    return digest.hexdigest()


# --- export bundles ------------------------------------------------------------------------------
def _manifest_entries(data: object, where: Path) -> list[JsonObject]:
    from fmgguf.catalog.schema import check_relative_path

    def bad(msg: str) -> BundleError:
        return BundleError(f"bundle manifest in {where}: {msg}", fix="export the bundle again with `fmgguf export`")

    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise bad("no model list")
    for entry in data["models"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("repo"), str) or not entry.get("files"):
            raise bad("a model entry without repo or files")
        for f in entry["files"]:
            try:
                check_relative_path(str(f.get("path", "")))
                check_relative_path(str(f.get("name", "")))
            except (ValueError, AttributeError) as exc:
                raise bad(f"file entry rejected: {exc}") from None
            if not _HEX64.match(str(f.get("sha256"))) or not isinstance(f.get("size"), int):
                raise bad(f"file {f['path']} has no valid sha256 and size")
    return data["models"]


def _bundle_repos(entries: list[JsonObject], locate: Callable[[str, int], tuple[Path, int]]) -> dict[str, MirrorRepo]:
    repos: dict[str, MirrorRepo] = {}
    commits: dict[str, set[str]] = {}
    for entry in entries:
        repo = repos.setdefault(entry["repo"], MirrorRepo())
        if _HEX40.match(str(entry.get("commit"))):
            commits.setdefault(entry["repo"], set()).add(entry["commit"])
        if entry.get("revision"):
            repo.revisions.add(str(entry["revision"]))
        for f in entry["files"]:
            path, offset = locate(f["path"], f["size"])
            repo.files[f["name"]] = MirrorFile(path, f["size"], f["sha256"], offset)
    for repo_id, seen in commits.items():
        if len(seen) == 1:  # one commit for every file of the repo: serve it as that commit
            repos[repo_id].commit = next(iter(seen))
    return repos


def _from_bundle_dir(root: Path) -> dict[str, MirrorRepo]:
    where = root / BUNDLE_MANIFEST
    try:
        entries = _manifest_entries(json.loads(where.read_text(encoding="utf-8")), where)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{where} is unreadable ({exc})", fix="export the bundle again") from None
    real_root = os.path.realpath(root)

    def locate(rel: str, size: int) -> tuple[Path, int]:
        target = root / rel
        if os.path.islink(target) or not os.path.realpath(target).startswith(real_root + os.sep):
            raise BundleError(f"bundle path {rel} leaves the bundle (link or escape)", fix="export the bundle again")
        if not target.is_file() or target.stat().st_size != size:
            raise BundleError(f"bundle {root} lacks {rel} (or it has another size)", fix="copy or export it again")
        return target, 0

    return _bundle_repos(entries, locate)


def _from_tar(path: Path) -> dict[str, MirrorRepo]:
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed only: files are served by offset
            members = {m.name: m for m in tar}
            manifest = members.get(BUNDLE_MANIFEST)
            fh = tar.extractfile(manifest) if manifest is not None and manifest.isfile() else None
            if fh is None:
                raise BundleError(f"{path} has no {BUNDLE_MANIFEST}", fix="give the .tar `fmgguf export` wrote")
            entries = _manifest_entries(json.loads(fh.read().decode("utf-8")), path)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable uncompressed bundle .tar ({exc})",
                          fix="give the .tar `fmgguf export` wrote (unpack .tar.gz first)") from None

    def locate(rel: str, size: int) -> tuple[Path, int]:
        member = members.get(rel)
        if member is None or not member.isfile() or member.size != size:
            raise BundleError(f"bundle {path} lacks {rel} (or it has another size)", fix="copy or export it again")
        return path, member.offset_data

    return _bundle_repos(entries, locate)


# --- a hub cache and plain folders ---------------------------------------------------------------
def _from_hub_cache(root: Path) -> dict[str, MirrorRepo]:
    repos: dict[str, MirrorRepo] = {}
    for folder in sorted(root.glob("models--*")):
        commit = _main_commit(folder)
        if commit is None:
            continue
        snapshot = folder / "snapshots" / commit
        repo = MirrorRepo(commit=commit)
        for name, path in _walk(snapshot):
            blob = Path(os.path.realpath(path))
            if not blob.is_file():
                continue  # a pointer whose blob is gone
            digest = blob.name if _HEX64.match(blob.name) else sha256_file(blob)
            repo.files[name] = MirrorFile(blob, blob.stat().st_size, digest)
        if repo.files:
            repos["/".join(folder.name.removeprefix("models--").split("--", 1))] = repo
    return repos


def _main_commit(folder: Path) -> str | None:
    """The commit ``main`` names (refs/main), else the newest snapshot (fmgguf writes no ref for ``main``)."""
    try:
        return (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        pass
    snapshots = [p for p in (folder / "snapshots").glob("*") if p.is_dir() and _HEX40.match(p.name)]
    return max(snapshots, key=lambda p: p.stat().st_mtime).name if snapshots else None


def _from_folder(root: Path) -> dict[str, MirrorRepo]:
    repos: dict[str, MirrorRepo] = {}
    for name, path in _walk(root):
        parts = name.split("/")
        if len(parts) < 3 or path.is_symlink():
            continue
        repo = repos.setdefault(f"{parts[0]}/{parts[1]}", MirrorRepo())
        repo.files["/".join(parts[2:])] = MirrorFile(path, path.stat().st_size, sha256_file(path))
    return repos


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of the files under ``root``, hidden names left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if not fname.startswith("."):
                path = Path(dirpath) / fname
                yield path.relative_to(root).as_posix(), path
