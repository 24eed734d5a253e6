"""Real llama.cpp tokenizers for tiny models, taken from the llama-cpp-python sdist.

llama.cpp ships vocab-only GGUFs (``vendor/llama.cpp/models/ggml-vocab-*.gguf``) for its
tokenizer tests. They are not in the wheel, so we fetch the sdist of the llama-cpp-python we
run on (:mod:`fmgguf.convert.sdist` fetches it with pip and caches it; the converter uses it too) and
extract only the vocab files we use to ``<shared_cache>/vocab``. Everything here is rebuildable; nothing is committed.

Safe across processes: each step holds a file lock and publishes with an atomic rename.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from fmgguf.convert.sdist import SDIST_FILE, SDIST_VERSION, ensure_sdist, file_lock, shared_cache
from fmgguf.errors import DownloadError, InvalidRequestError

__all__ = ["SDIST_FILE", "SDIST_VERSION", "VOCAB_FILES", "ensure_sdist", "ensure_vocab", "file_lock", "read_header",
           "read_kv", "shared_cache"]

#: short name -> file name inside vendor/llama.cpp/models/
VOCAB_FILES: dict[str, str] = {
    "qwen2": "ggml-vocab-qwen2.gguf",            # BPE, 151936 tokens, chatml template
    "starcoder": "ggml-vocab-starcoder.gguf",    # BPE, 49152 tokens, <fim_prefix> ...
    "deepseek-coder": "ggml-vocab-deepseek-coder.gguf",  # BPE, 32256 tokens, <｜fim▁begin｜> ...
    "llama-spm": "ggml-vocab-llama-spm.gguf",    # SentencePiece, 32000 tokens
}

def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def _vocab_file(name: str) -> str:
    key = name.removeprefix("ggml-vocab-").removesuffix(".gguf")
    if key not in VOCAB_FILES:
        raise InvalidRequestError(f"unknown tokenizer vocab {name!r}",
                                  fix=f"use one of: {', '.join(VOCAB_FILES)}")
    return VOCAB_FILES[key]


def ensure_vocab(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of a cached ``ggml-vocab-<name>.gguf`` (one of :data:`VOCAB_FILES`), extracting it if needed.

    One pass over the sdist extracts every missing known vocab file, so later calls are free.
    """
    fname = _vocab_file(name)
    root = shared_cache(cache_dir) / "vocab"
    target = root / fname
    if _is_gguf(target):
        return target
    with file_lock(root / ".extract"):
        if _is_gguf(target):
            return target
        sdist = ensure_sdist(cache_dir)
        wanted = {f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/models/{f}": root / f
                  for f in VOCAB_FILES.values() if not _is_gguf(root / f)}
        root.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(sdist, "r|gz") as tar:  # streaming: one pass over the archive
                for member in tar:
                    dest = wanted.get(member.name)
                    if dest is None or not member.isfile():
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{dest.name}.")
                    try:
                        with os.fdopen(fd, "wb") as out:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
                        if not _is_gguf(Path(tmp)):
                            raise DownloadError(f"{member.name} in {sdist.name} is not a GGUF file",
                                                fix=f"delete {sdist} and retry")
                        os.chmod(tmp, 0o644)
                        os.replace(tmp, dest)
                    finally:
                        if os.path.exists(tmp):
                            os.unlink(tmp)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DownloadError(f"cannot read {sdist}: {exc}", fix=f"delete {sdist} and retry") from exc
        if not _is_gguf(target):
            raise DownloadError(f"{fname} is not in the llama-cpp-python {SDIST_VERSION} sdist",
                                fix=f"delete {sdist} and retry")
    return target


# --- a fast reader for the key/value part of a (tensor-less) vocab GGUF -------------------------
# gguf.GGUFReader builds numpy views per array item: ~15 s for the qwen2 vocab; this takes ~0.3 s.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_kv(path: Path) -> dict[str, tuple[object, int, int | None]]:
    """``{key: (value, value_type, array_item_type)}`` of a GGUF's metadata (types are GGUFValueType codes)."""
    return read_header(path)[0]


def read_header(path: Path) -> tuple[dict[str, tuple[object, int, int | None]], dict[str, tuple[tuple[int, ...], int]]]:
    """(metadata as :func:`read_kv` gives it, ``{tensor name: (ggml ne, ggml type code)}``)."""
    import mmap
    import struct

    with open(path, "rb") as fh:
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # stays valid after close
    if buf[:4] != b"GGUF":
        raise DownloadError(f"{path} is not a GGUF file", fix=f"delete {path} and retry")
    _version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + n
        return buf[pos - n:pos].decode("utf-8", errors="surrogateescape")

    def scalar(vtype: int) -> object:
        nonlocal pos
        if vtype == _STRING:
            return string()
        fmt = _SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    out: dict[str, tuple[object, int, int | None]] = {}
    for _ in range(n_kv):
        key = string()
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if vtype != _ARRAY:
            out[key] = (scalar(vtype), vtype, None)
            continue
        sub, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if sub == _STRING:
            items: list = [string() for _ in range(count)]
        elif sub in _SCALARS:
            fmt = _SCALARS[sub]
            size = struct.calcsize(fmt)
            items = list(struct.unpack_from(f"<{count}{fmt[1]}", buf, pos))
            pos += size * count
        else:
            raise DownloadError(f"{path}: nested arrays in {key} are not supported", fix=f"delete {path} and retry")
        out[key] = (items, vtype, sub)
    tensors: dict[str, tuple[tuple[int, ...], int]] = {}
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        ne = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        pos += 4 + 8 * n_dims
        ttype, _offset = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        tensors[name] = (tuple(ne), ttype)
    return out, tensors
