"""Build (once) and cache tiny real llama.cpp models: F16 written with ``gguf``, quants by llama.cpp.

``build_tiny_model("qwen2", "unit", "Q4_K_M")`` returns the path of a GGUF that llama.cpp loads
and generates from. Files are content-addressed by everything that determines their bytes
(builder version, shape, seed, vocab, llama-cpp-python version), so the same call always returns
the same bytes, and a changed recipe never returns a stale file. Built to a temp name, renamed,
under a file lock: concurrent pytest workers build each file once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from fmgguf.errors import ConvertError, InvalidRequestError
from fmgguf.tiny.tiny_specs import TinySpec, tiny_spec
from fmgguf.tiny.vocab import SDIST_VERSION, VOCAB_FILES, ensure_vocab, file_lock, shared_cache

#: bump when the writer's output changes for the same parameters
BUILDER_VERSION = 2

#: quant name -> llama_ftype (None: the F16 file itself)
FTYPES: dict[str, int | None] = {"F16": None, "Q8_0": 7, "Q4_K_M": 15}




def tiny_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where tiny models live: ``cache_dir`` itself if given, else ``<shared_cache>/tiny``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else shared_cache() / "tiny"


def model_digest(spec: TinySpec, seed: int) -> str:
    """Content address of the F16 build (quants add their own name to the file name)."""
    blob = json.dumps({"builder": BUILDER_VERSION, "llama_cpp_python": SDIST_VERSION, "seed": seed,
                       "vocab_file": VOCAB_FILES[spec.vocab], "spec": spec.key()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tiny_model_path(arch: str = "qwen2", size: str = "unit", quant: str = "F16", seed: int = 0,
                    cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`build_tiny_model` puts (or has put) this model; nothing is built."""
    quant = _check_quant(quant)
    spec = tiny_spec(arch, size)
    return tiny_dir(cache_dir) / f"tiny-{arch}-{size}-s{seed}-{model_digest(spec, seed)}-{quant}.gguf"


def _check_quant(quant: str) -> str:
    q = str(quant).upper()
    if q not in FTYPES:
        raise InvalidRequestError(f"tiny models come in {', '.join(FTYPES)}, not {quant!r}",
                                  fix=f"use one of: {', '.join(FTYPES)}")
    return q


def _valid(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF" and path.stat().st_size > 1024
    except OSError:
        return False


def _tmp_for(target: Path) -> Path:
    return target.with_name(f".tmp-{os.getpid()}-{target.name}")


def build_tiny_model(arch: str = "qwen2", size: str = "unit", quant: str = "F16", seed: int = 0,
                     cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of a cached tiny model, building it (and its F16 source) first if needed."""
    quant = _check_quant(quant)
    spec = tiny_spec(arch, size)
    target = tiny_model_path(arch, size, quant, seed, cache_dir)
    if _valid(target):
        return target
    with file_lock(target):
        if _valid(target):
            return target
        tmp = _tmp_for(target)
        try:
            if quant == "F16":
                from fmgguf.tiny.tiny_writer import write_f16

                write_f16(spec, ensure_vocab(spec.vocab), tmp, seed=seed)
            else:
                source = build_tiny_model(arch, size, "F16", seed, cache_dir)
                _quantize(source, tmp, FTYPES[quant])  # type: ignore[arg-type]
            _check_file_type(tmp, quant)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _quantize(source: Path, out: Path, ftype: int) -> None:
    """llama.cpp's quantizer in a child process: its logs stay out of ours and an abort cannot kill us."""
    nthread = max(1, os.cpu_count() or 1)
    proc = subprocess.run([sys.executable, "-m", "fmgguf.runtime.engine.engine_child", "--quantize", str(source), str(out), str(ftype), str(nthread)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not _valid(out):
        tail = " | ".join((proc.stderr or proc.stdout or "no output").strip().splitlines()[-3:])
        raise ConvertError(f"llama.cpp could not quantize {source.name} (ftype {ftype}, rc {proc.returncode}): {tail}",
                           fix=f"delete {source} and retry; check that llama-cpp-python imports")


def _check_file_type(path: Path, quant: str) -> None:
    import gguf

    want = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}[quant]
    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    got = int(field.contents()) if field is not None else None
    if got != want:
        raise ConvertError(f"tiny model {path.name} has general.file_type {got}, expected {want} ({quant})",
                           fix="delete the tiny model cache and retry")
