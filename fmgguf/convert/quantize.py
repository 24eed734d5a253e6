"""Quantize an F16 GGUF with llama.cpp's ``llama_model_quantize``, optionally guided by an imatrix.

The quantization runs in a child process (``python -m fmgguf.convert.quantize``): llama.cpp aborts
the whole process on some errors, and a child can be stopped cleanly on Ctrl-C. It writes to the
path it is given; the caller gives a temporary name and renames it once the child succeeded.

An importance matrix is read from a ``llama-imatrix`` output file — the GGUF format (``<tensor>.in_sum2``
and ``<tensor>.counts`` tensors) or the legacy ``.dat`` format — normalised the way ``llama-quantize``
does, and handed to llama.cpp as the NULL-terminated ``llama_model_imatrix_data`` array.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from fmgguf.errors import ConvertError

#: quant name → llama_ftype (llama.h)
FTYPES: dict[str, int] = {"Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2}


def load_imatrix(path: str | os.PathLike[str]) -> dict[str, list[float]] | dict:
    """Tensor name → per-column importance (numpy float32 arrays), from a GGUF or legacy imatrix file."""
    import numpy as np

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConvertError(f"cannot read imatrix file {p}: {exc.strerror}", fix="give an existing --imatrix file") from None
    if magic == b"GGUF":
        return _load_gguf_imatrix(p, np)
    return _load_legacy_imatrix(p, np)


def _load_gguf_imatrix(p: Path, np) -> dict:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(p))
    except (OSError, ValueError, KeyError, IndexError) as exc:  # what gguf's reader raises on a bad file
        raise ConvertError(f"{p} is not a readable GGUF imatrix ({exc})", fix="regenerate it with llama-imatrix") from None
    keys = set(reader.fields)
    if not {"imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"} <= keys:
        raise ConvertError(f"{p} has no imatrix metadata (imatrix.datasets, chunk_count, chunk_size)",
                           fix="give a file written by llama-imatrix")
    sums: dict[str, object] = {}
    counts: dict[str, object] = {}
    for t in reader.tensors:
        name = t.name
        if name.endswith(".in_sum2"):
            sums[name[: -len(".in_sum2")]] = t
        elif name.endswith(".counts"):
            counts[name[: -len(".counts")]] = t
    if not sums:
        raise ConvertError(f"{p} holds no .in_sum2 tensors", fix="give a file written by llama-imatrix")
    out = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None:
            raise ConvertError(f"imatrix {p.name}: {name} has sums but no counts", fix="regenerate the imatrix")
        if int(s.tensor_type) != 0 or int(c.tensor_type) != 0:  # GGML_TYPE_F32
            raise ConvertError(f"imatrix {p.name}: {name} is not F32", fix="regenerate the imatrix")
        sv = np.asarray(s.data, dtype=np.float32).reshape(-1)
        cv = np.rint(np.asarray(c.data, dtype=np.float32).reshape(-1))
        if cv.size == 0 or sv.size % cv.size:
            raise ConvertError(f"imatrix {p.name}: {name} sums/counts shapes do not match", fix="regenerate the imatrix")
        per = sv.reshape(cv.size, -1)
        norm = np.where(cv[:, None] > 0, per / np.maximum(cv[:, None], 1.0), 1.0).astype(np.float32)
        out[name] = norm.reshape(-1)
    return out


def _load_legacy_imatrix(p: Path, np) -> dict:
    data = p.read_bytes()
    off = 0

    def take(fmt: str):
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(data):
            raise ConvertError(f"{p} is neither a GGUF nor a complete legacy imatrix file",
                               fix="give a file written by llama-imatrix")
        vals = struct.unpack_from(fmt, data, off)
        off += size
        return vals

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise ConvertError(f"{p} is not an imatrix file (GGUF or legacy)", fix="give a file written by llama-imatrix")
    out = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 1 or length > 4096:
            raise ConvertError(f"{p} is not an imatrix file (bad entry name)", fix="give a file written by llama-imatrix")
        name = bytes(take(f"<{length}s")[0]).decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ConvertError(f"{p}: entry {name} has no values", fix="regenerate the imatrix")
        vals = np.frombuffer(data, dtype="<f4", count=nval, offset=off).astype(np.float32)
        take(f"<{nval * 4}x")
        out[name] = vals / ncall if ncall > 0 else vals
    return out


def quantize_in_process(src: Path, dst: Path, quant: str, imatrix: Path | None = None, nthread: int = 0) -> None:
    """Call llama_model_quantize here (used by the child process)."""
    import ctypes

    import numpy as np

    from fmgguf.runtime.engine.llama_lib import lib

    llama_cpp = lib()

    if quant not in FTYPES:
        raise ConvertError(f"cannot quantize to {quant}", fix=f"use one of: {', '.join(FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = nthread
    keep = []  # keep every buffer alive while llama.cpp reads it
    if imatrix is not None:
        table = load_imatrix(imatrix)
        arr = (llama_cpp.llama_model_imatrix_data * (len(table) + 1))()
        for i, (name, values) in enumerate(sorted(table.items())):
            buf = np.ascontiguousarray(values, dtype=np.float32)
            raw = name.encode()
            keep.extend((buf, raw))
            arr[i].name = raw
            arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = buf.size
        arr[len(table)].name = None  # the terminator
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ConvertError(f"llama.cpp could not quantize {src.name} to {quant} (code {rc})",
                           fix="check the F16 file with `fmgguf inspect` and the imatrix, then run again")


def quantize(src: Path, dst: Path, quant: str, imatrix: Path | None = None, nthread: int = 0,
             timeout: float | None = None) -> None:
    """Quantize ``src`` into ``dst`` in a child process; raise ConvertError with llama.cpp's last words."""
    cmd = [sys.executable, "-m", "fmgguf.convert.quantize", str(src), str(dst), quant, str(nthread)]
    if imatrix is not None:
        cmd.append(str(imatrix))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        lines = [ln for ln in (out or "").strip().splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("error: ")), None)
        last = err.removeprefix("error: ") if err else (lines[-1] if lines else f"exit code {proc.returncode}")
        raise ConvertError(f"quantizing to {quant} failed: {last}",
                           fix="check the F16 file and the imatrix, then run again")


def _main(argv: list[str]) -> int:
    src, dst, quant, nthread = Path(argv[0]), Path(argv[1]), argv[2], int(argv[3])
    imatrix = Path(argv[4]) if len(argv) > 4 else None
    try:
        quantize_in_process(src, dst, quant, imatrix, nthread)
    except ConvertError as exc:
        print(f"error: {exc.one_line()}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
