"""llama.cpp's own HF → GGUF converter, taken from the pinned llama-cpp-python sdist, and what it needs.

The sdist (cached by :func:`fmgguf.convert.sdist.ensure_sdist` under ``<shared_cache>/sdist``) vendors
llama.cpp. We extract only the converter (``convert_hf_to_gguf.py``, its ``conversion`` package, its
own ``gguf-py`` and the chat templates it reads) to ``<shared_cache>/convert/<version>``, atomically
and under a file lock. Nothing of it is committed.

The converter's Python requirements are checked with :mod:`importlib.metadata` and installed on demand
with pip into the running interpreter (torch: the CPU build ``torch==2.13.0``; a bare ``torch`` would
pull a multi-GB CUDA build).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fmgguf.errors import ConvertError

log = logging.getLogger(__name__)

#: pip requirement per distribution the converter imports (checked in this order)
REQUIREMENTS: dict[str, str] = {
    "torch": "torch==2.13.0",  # the CPU wheel on disk; never a bare `torch`
    "transformers": "transformers>=5,<6",  # 4.x pins huggingface_hub<1, which fmgguf's downloader cannot use
    "tokenizers": "tokenizers>=0.22",
    "sentencepiece": "sentencepiece>=0.1.98,<0.3.0",
    "safetensors": "safetensors>=0.4",
    "protobuf": "protobuf>=4.21.0,<5.0.0",
    "numpy": "numpy>=2.2.6",
    "tqdm": "tqdm>=4.27",
    "PyYAML": "pyyaml>=5.1",
    "requests": "requests>=2.25",
}

#: members of vendor/llama.cpp/ the converter needs (prefixes)
_WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "gguf-py/pyproject.toml",
           "models/templates/", "requirements/requirements-convert", "LICENSE")
_LOCK_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Converter:
    """An extracted converter: where it is and which HF architectures it registers."""

    root: Path
    version: str

    @property
    def script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    def architectures(self) -> dict[str, str]:
        """HF ``architectures`` name → converter module, read statically (no torch import)."""
        return supported_architectures(self.root)

    def env(self) -> dict[str, str]:
        """Environment for the converter subprocess: its own gguf-py first on the path."""
        env = dict(os.environ)
        paths = [str(self.gguf_py), str(self.root)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.pop("NO_LOCAL_GGUF", None)
        env.setdefault("HF_HUB_OFFLINE", "1")  # it reads a local directory; never the hub
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


def supported_architectures(root: Path) -> dict[str, str]:
    """Parse ``TEXT_MODEL_MAP`` out of ``conversion/__init__.py`` without importing it."""
    init = root / "conversion" / "__init__.py"
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        raise ConvertError(f"cannot read the converter's model registry {init}: {exc}",
                           fix=f"delete {root} and run again") from exc
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, dict) and value:
                return {str(k): str(v) for k, v in value.items()}
    raise ConvertError(f"{init} has no TEXT_MODEL_MAP the converter registry could be read from",
                       fix="the pinned converter layout changed; report this as a bug")


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=_LOCK_TIMEOUT_S)


def _sdist(cache_dir: Path | None) -> tuple[Path, str]:
    from fmgguf.convert.sdist import SDIST_VERSION, ensure_sdist

    return ensure_sdist(cache_dir), SDIST_VERSION


def ensure_converter(cache_dir: str | os.PathLike[str] | None = None) -> Converter:
    """The extracted converter of the pinned sdist, extracting it once (safe across processes)."""
    from fmgguf.convert.sdist import SDIST_VERSION, shared_cache

    root = shared_cache(cache_dir) / "convert" / f"llama-cpp-python-{SDIST_VERSION}"
    if (root / ".complete").is_file():
        return Converter(root, SDIST_VERSION)
    with _lock(root.parent / f".{root.name}"):
        if (root / ".complete").is_file():
            return Converter(root, SDIST_VERSION)
        sdist, version = _sdist(Path(cache_dir) if cache_dir else None)
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
        try:
            found = 0
            with tarfile.open(sdist, "r|gz") as tar:
                for member in tar:
                    if not member.name.startswith(prefix) or not member.isfile():
                        continue
                    rel = member.name[len(prefix):]
                    if not rel.startswith(_WANTED) or ".." in rel.split("/"):
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    found += 1
            if not (tmp / "convert_hf_to_gguf.py").is_file() or not (tmp / "conversion" / "__init__.py").is_file():
                raise ConvertError(f"{sdist.name} has no convert_hf_to_gguf.py with its conversion package",
                                   fix=f"delete {sdist} and run again")
            supported_architectures(tmp)  # fail now, not halfway through a conversion
            (tmp / ".complete").write_text(f"{version} {found} files\n", encoding="utf-8")
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ConvertError(f"cannot extract the converter from {sdist}: {exc}",
                               fix=f"delete {sdist} and run again") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return Converter(root, version)


def missing_requirements() -> list[str]:
    """pip requirement strings for the converter's dependencies that are not installed (or too old)."""
    from packaging.requirements import Requirement

    missing = []
    for dist, spec in REQUIREMENTS.items():
        req = Requirement(spec)
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            missing.append(spec)
            continue
        base = have.split("+", 1)[0]  # 2.13.0+cpu satisfies ==2.13.0
        if req.specifier and not req.specifier.contains(base, prereleases=True):
            missing.append(spec)
    return missing


def ensure_requirements(install: bool = True, echo=None) -> list[str]:
    """Install what the converter needs but is missing; returns what was installed.

    With ``install=False`` a missing requirement raises :class:`ConvertError` naming the pip command.
    """
    missing = missing_requirements()
    if not missing:
        return []
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *missing]
    shown = "pip install " + " ".join(f"'{m}'" for m in missing)
    if not install:
        raise ConvertError(f"the converter needs Python packages that are not installed: {', '.join(missing)}",
                           fix=f"run: {shown}")
    (echo or log.warning)(f"installing the converter's requirements: {shown}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise ConvertError(f"pip could not install the converter's requirements: {tail[0]}",
                           fix=f"run by hand: {shown}")
    still = missing_requirements()
    if still:
        raise ConvertError(f"after pip install these are still missing: {', '.join(still)}",
                           fix=f"run by hand: {shown}")
    return missing
