"""The pinned llama-cpp-python sdist: llama.cpp's own sources, fetched once with ``pip download``.

Its vendored llama.cpp holds the HF → GGUF converter (:mod:`fmgguf.convert.toolchain`) and the
vocab-only GGUF files the tiny test models use. The tarball is cached under ``<shared_cache>/sdist``
(rebuildable; nothing is committed). Safe across processes: a file lock, then an atomic rename.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fmgguf.errors import DownloadError, LockTimeoutError, OfflineError

#: the llama-cpp-python release whose vendored llama.cpp we take the converter and vocab files from
SDIST_VERSION = "0.3.36"
SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"

_LOCK_TIMEOUT_S = 900.0


def shared_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The rebuildable cache root: ``cache_dir`` if given, else ``load_settings().shared_cache``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from fmgguf.settings import load_settings

    return load_settings().shared_cache


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the inter-process lock next to ``path`` (``<path>.lock``); LockTimeoutError after 15 min."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise LockTimeoutError(f"another process has held {lock.lock_file} for {_LOCK_TIMEOUT_S:.0f} s",
                               fix=f"stop the other fmgguf process, or delete {lock.lock_file} if none runs") from exc
    try:
        yield
    finally:
        lock.release()


def _is_sdist(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:gz") as tar:
            return tar.next() is not None
    except (OSError, tarfile.TarError, EOFError):
        return False


def ensure_sdist(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The llama-cpp-python sdist tarball, downloaded once with ``pip download`` and cached."""
    root = shared_cache(cache_dir) / "sdist"
    target = root / SDIST_FILE
    if target.is_file() and target.stat().st_size > 0:
        return target
    with file_lock(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        from fmgguf.settings import load_settings

        if load_settings().offline:
            raise OfflineError(
                f"the llama-cpp-python {SDIST_VERSION} sdist (for tokenizer files) is not cached and offline mode is on",
                fix=f"run once online, or put {SDIST_FILE} into {root}",
            )
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".pip-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "--quiet", f"llama-cpp-python=={SDIST_VERSION}", "-d", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_LOCK_TIMEOUT_S)
            got = Path(tmp) / SDIST_FILE
            if proc.returncode != 0 or not got.is_file():
                last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
                raise DownloadError(
                    f"pip could not download the llama-cpp-python {SDIST_VERSION} sdist: {last[0]}",
                    fix="check that PyPI is reachable (pip config / PIP_INDEX_URL)",
                )
            if not _is_sdist(got):
                raise DownloadError(f"the downloaded {SDIST_FILE} is not a readable tar.gz",
                                    fix=f"delete {root} and retry")
            os.replace(got, target)
    return target
