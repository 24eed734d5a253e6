"""The huggingface_hub cache layout (``models--org--name/{blobs,snapshots,refs}``), written the way
huggingface_hub writes it so ``hf cache`` and ``hf_hub_download`` see our files; plus quarantine
and free-space checks."""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from pathlib import Path

from fmgguf._util import atomic_write_text, human_bytes
from fmgguf.errors import DiskSpaceError

#: errno values that mean "the disk is full" (EFBIG: a file-size limit, reported the same way)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


class HubCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def storage(self, repo: str) -> Path:
        return self.root / repo_folder(repo)

    def blob(self, repo: str, etag: str) -> Path:
        return self.storage(repo) / "blobs" / etag

    def incomplete(self, repo: str, etag: str) -> Path:
        """Our resumable partial file (huggingface_hub's own partials carry a random suffix)."""
        return self.storage(repo) / "blobs" / f"{etag}.incomplete"

    def pointer(self, repo: str, commit: str, filename: str) -> Path:
        return self.storage(repo) / "snapshots" / commit / filename

    def lock_path(self, repo: str, etag: str) -> Path:
        """The same lock file huggingface_hub takes for this blob, so its downloads and ours exclude each other."""
        return self.root / ".locks" / repo_folder(repo) / f"{etag}.lock"

    def place(self, repo: str, etag: str, commit: str, filename: str, src: Path, revision: str | None = None) -> Path:
        """Move a verified ``src`` to the blob path and point the snapshot at it; returns the pointer path."""
        blob = self.blob(repo, etag)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if src != blob:
            os.replace(src, blob)
        return self.link(repo, etag, commit, filename, revision)

    def link(self, repo: str, etag: str, commit: str, filename: str, revision: str | None = None) -> Path:
        blob = self.blob(repo, etag)
        pointer = self.pointer(repo, commit, filename)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(blob, pointer.parent)
        if pointer.is_symlink() and os.readlink(pointer) == rel:
            pass
        else:
            tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(rel, tmp)
            os.replace(tmp, pointer)
        if revision and revision != commit:
            ref = self.storage(repo) / "refs" / revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            if not ref.is_file() or ref.read_text().strip() != commit:
                atomic_write_text(ref, commit)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            try:
                tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
            except OSError:
                pass
        return pointer

    def unlink_pointer(self, repo: str, commit: str, filename: str) -> None:
        pointer = self.pointer(repo, commit, filename)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        for parent in (pointer.parent, pointer.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break


def quarantine(path: Path, quarantine_dir: Path, label: str) -> Path | None:
    """Move a bad file out of the cache (never left where the loader finds it). Returns its new path."""
    if not path.exists():
        return None
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    # unique per move: two bad copies within a second must not overwrite each other
    dest = quarantine_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}-{label}"
    try:
        os.replace(path, dest)
    except OSError:  # another filesystem: copy then remove
        shutil.move(str(path), str(dest))
    return dest


def existing_parent(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing_parent(path)).free


def check_free(path: Path, needed: int, what: str, margin: int = 32 * 1024**2) -> None:
    """Raise DiskSpaceError (with both numbers) when ``needed`` bytes (+ margin) are not free at ``path``."""
    if needed <= 0:
        return
    free = free_bytes(path)
    if free < needed + margin:
        raise DiskSpaceError(
            f"not enough disk for {what}: needs {human_bytes(needed)} ({needed} bytes), "
            f"{human_bytes(free)} free on {existing_parent(path)}",
            fix=f"free {human_bytes(needed + margin - free)} or point HF_HUB_CACHE at a bigger disk",
            needed=needed, free=free,
        )
