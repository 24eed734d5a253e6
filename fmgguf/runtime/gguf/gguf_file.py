"""Read and validate a GGUF header (metadata + tensor table) without loading weights.

Our own bounded parser, not ``gguf.GGUFReader``: GGUFReader memory-maps the file and builds numpy
views from counts it has not checked, so a hostile count can make it allocate without bound or
spin. Here every count is checked against the bytes that remain before anything is read, every
string and array is bounded, and any problem becomes :class:`GGUFError` with the reason. The
checks mirror what llama.cpp's loader (ggml/src/gguf.cpp, llama-model-loader.cpp) refuses, so a
file that passes here is one llama.cpp will open.

The byte source is pluggable (a local file, or HTTP Range reads of a remote file: see
``fmgguf.runtime.gguf.remote_header``): only the header is ever read.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from fmgguf.errors import GGUFError
from fmgguf.runtime.gguf.gguf_info import GGUFArray, GGUFInfo, MetaValue, TensorInfo
from fmgguf.runtime.gguf.validation import Problem, check_model

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64
#: arrays longer than this are kept as a summary (type + count), not their values
MAX_KEPT_ARRAY = 4096
#: architectures in gguf's table that are not language models llama.cpp can load as one
_NOT_LOADABLE = {"clip", "wavtokenizer-dec"}
#: names in llama-cpp-python 0.3.36's src/llama-arch.cpp that the gguf package's table lacks
_LLAMA_CPP_EXTRA_ARCHES = frozenset({
    "bailingmoe3", "cohere2moe", "deepseek32", "deepseek4", "dflash", "dots3note", "eagle3", "gemma4-assistant", "glm5-next", "granite_swa", "graniteswitch", "hrm_text", "hy_v3", "hy_v4", "kimi-k3", "laguna", "maple", "mellum", "minimax-01", "minimax-m3", "muse-glimmer", "nanbeige", "pockettts", "qwen3tts", "qwen4exp", "spark2_5", "talkie"})

# GGUF metadata value types: id -> (name, struct format or None, size)
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("u8", "<B", 1), 1: ("i8", "<b", 1), 2: ("u16", "<H", 2), 3: ("i16", "<h", 2),
    4: ("u32", "<I", 4), 5: ("i32", "<i", 4), 6: ("f32", "<f", 4), 7: ("bool", "<?", 1),
    10: ("u64", "<Q", 8), 11: ("i64", "<q", 8), 12: ("f64", "<d", 8),
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@lru_cache(maxsize=1)
def ggml_types() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, block size, bytes per block), from the gguf package's tables."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return {int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}


@lru_cache(maxsize=1)
def supported_architectures() -> frozenset[str]:
    from gguf.constants import MODEL_ARCH_NAMES

    return (frozenset(MODEL_ARCH_NAMES.values()) | _LLAMA_CPP_EXTRA_ARCHES) - _NOT_LOADABLE


def row_bytes(type_name_or_id: str | int, n: int) -> int:
    """Bytes of a row of ``n`` elements of a ggml type (ggml_row_size)."""
    types = ggml_types()
    if isinstance(type_name_or_id, str):
        match = [k for k, v in types.items() if v[0] == type_name_or_id.upper()]
        if not match:
            raise GGUFError(f"unknown ggml type {type_name_or_id!r}", fix="use f16, q8_0 or q4_0")
        type_name_or_id = match[0]
    _, blck, size = types[type_name_or_id]
    return n // blck * size


# --- byte sources --------------------------------------------------------------------------------
class ByteSource(Protocol):
    size: int
    where: str

    def read_at(self, offset: int, n: int) -> bytes: ...


class FileSource:
    def __init__(self, path: Path) -> None:
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise GGUFError(f"cannot open {path}: {exc.strerror or exc}", fix="check the path and its permissions") from None
        self.size = os.fstat(self._f.fileno()).st_size
        self.where = str(path)

    def read_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def close(self) -> None:
        self._f.close()


class _Cursor:
    """Sequential reads over a ByteSource through a block cache; every read is bounds-checked."""

    BLOCK = 1 << 20

    def __init__(self, src: ByteSource, fail: Callable[[str], GGUFError]) -> None:
        self.src, self.fail, self.pos = src, fail, 0
        self._buf, self._buf_start = b"", 0

    @property
    def remaining(self) -> int:
        return self.src.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise self.fail(f"truncated: {what} at byte {self.pos} needs {n} bytes, {self.remaining} left")
        rel = self.pos - self._buf_start
        if rel < 0 or rel + n > len(self._buf):
            want = max(n, self.BLOCK)
            self._buf = self.src.read_at(self.pos, min(want, self.remaining))
            self._buf_start, rel = self.pos, 0
            if len(self._buf) < n:
                raise self.fail(f"truncated: could read only {len(self._buf)} of {n} bytes at {self.pos}")
        self.pos += n
        return self._buf[rel:rel + n]

    def unpack(self, fmt: str, size: int, what: str) -> int:  # an integer field (fmt: a struct integer code)
        return struct.unpack(fmt, self.take(size, what))[0]

    def skip(self, n: int, what: str) -> None:
        """Step over ``n`` bytes without reading them (values that are only counted)."""
        if n < 0 or n > self.remaining:
            raise self.fail(f"truncated: {what} at byte {self.pos} needs {n} bytes, {self.remaining} left")
        self.pos += n

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` length-prefixed strings without decoding them (vocabularies, merges).

        The walk is the hot path of a header read (a 152k-token vocabulary plus its merges is 300k
        strings), so it runs as a tight loop over the cached block and leaves it only to refill or
        to check a string that does not end inside the block."""
        unpack_from = _U64.unpack_from
        i = 0
        while i < count:
            rel = self.pos - self._buf_start
            if rel < 0 or rel + 8 > len(self._buf):
                self.take(8, f"{what}[{i}] length")  # refills the block at pos (or fails: truncated)
                self.pos -= 8
                rel = 0
            buf, start = self._buf, self._buf_start
            end = len(buf)
            while i < count:
                nxt = rel + 8
                if nxt > end:
                    break
                nxt += unpack_from(buf, rel)[0]
                if nxt > end:
                    break
                rel = nxt
                i += 1
            self.pos = start + rel
            if i < count and rel + 8 <= end:  # string i runs past the block: check it, then step over it
                n = unpack_from(buf, rel)[0]
                if n > self.remaining - 8:
                    raise self.fail(f"{what}[{i}] claims {n} bytes but only {self.remaining - 8} remain")
                self.pos += 8 + n
                i += 1

    def string(self, what: str) -> str:
        n = self.unpack("<Q", 8, f"{what} length")
        if n > self.remaining:
            raise self.fail(f"{what} claims {n} bytes but only {self.remaining} remain")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


def _read_value(cur: _Cursor, vtype: int, key: str) -> MetaValue:
    if vtype in _SCALARS:
        _, fmt, size = _SCALARS[vtype]
        return struct.unpack(fmt, cur.take(size, f"value of {key}"))[0]  # an integer, a float or a bool
    if vtype == _STRING:
        return cur.string(f"value of {key}")
    if vtype == _ARRAY:
        etype = cur.unpack("<I", 4, f"array type of {key}")
        count = cur.unpack("<Q", 8, f"array length of {key}")
        if etype == _ARRAY:
            raise cur.fail(f"metadata {key} is an array of arrays, which llama.cpp does not read")
        if etype not in _SCALARS and etype != _STRING:
            raise cur.fail(f"metadata {key} has unknown array element type {etype}")
        min_size = 8 if etype == _STRING else _SCALARS[etype][2]
        if count * min_size > cur.remaining:
            raise cur.fail(f"metadata {key} claims {count} elements, more than the file can hold")
        if etype == _STRING:
            if count > MAX_KEPT_ARRAY:
                cur.skip_strings(count, key)
                return GGUFArray("string", count)
            return [cur.string(f"{key}[{i}]") for i in range(count)]
        name, fmt, size = _SCALARS[etype]
        if count > MAX_KEPT_ARRAY:
            cur.skip(count * size, f"array {key}")
            return GGUFArray(name, count)
        raw = cur.take(count * size, f"array {key}")
        return list(struct.unpack(f"<{count}{fmt[1]}", raw))
    raise cur.fail(f"metadata {key} has unknown value type {vtype}")


def parse_gguf(src: ByteSource, check_data: bool = True, *, model: bool = True) -> GGUFInfo:
    """Parse and validate the header from ``src``. ``check_data=False`` skips the file-length checks
    (for a header fetched alone, when the total size is not known). ``model=False`` reads a file that
    need not describe a model (the 2nd, 3rd… part of a gguf-split model holds tensors and split.* keys only)."""
    where = src.where

    def fail(reason: str) -> GGUFError:
        return GGUFError(f"{where} is not a valid GGUF file: {reason}",
                         fix="delete it and download it again (fmgguf pull ID), or check its source")

    cur = _Cursor(src, fail)
    version, n_tensors, n_kv = _read_preamble(cur, src.size)
    metadata = _read_metadata(cur, n_kv)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise fail(f"general.alignment {alignment!r} is not a power of two")
    types = ggml_types()
    seen: set[str] = set()
    tensors = [_read_tensor(cur, i, types, seen) for i in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    _check_offsets(cur, tensors, alignment, data_offset if check_data else None)
    info = GGUFInfo(where, src.size, version, alignment, data_offset, metadata, tensors)
    if model:
        _check_architecture(info, fail)
    return info


def _read_preamble(cur: _Cursor, size: int) -> tuple[int, int, int]:  # (version, n_tensors, n_kv), checked
    if size < 24:
        raise cur.fail(f"only {size} bytes, too short for a GGUF header")
    magic = cur.take(4, "magic")
    if magic != GGUF_MAGIC:
        raise cur.fail(f"bad magic {magic!r} (expected b'GGUF')")
    version = cur.unpack("<I", 4, "version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise cur.fail("big-endian GGUF; llama.cpp on this machine reads little-endian files only")
        raise cur.fail(f"GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors = cur.unpack("<q", 8, "tensor count")
    n_kv = cur.unpack("<q", 8, "metadata count")
    # a metadata entry takes at least 8 (key len) + 1 (key) + 4 (type) + 1 bytes, a tensor info 8+1+4+8+4+8
    if n_kv < 0 or n_kv * 14 > cur.remaining:
        raise cur.fail(f"metadata count {n_kv} is impossible for a {size}-byte file")
    if n_tensors < 0 or n_tensors * 33 > cur.remaining:
        raise cur.fail(f"tensor count {n_tensors} is impossible for a {size}-byte file")
    return version, n_tensors, n_kv


def _read_metadata(cur: _Cursor, n_kv: int) -> dict[str, MetaValue]:
    metadata: dict[str, MetaValue] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if not key:
            raise cur.fail(f"metadata key #{i} is empty")
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        vtype = cur.unpack("<I", 4, f"type of {key}")
        metadata[key] = _read_value(cur, vtype, key)
    return metadata


def _read_tensor(cur: _Cursor, i: int, types: dict[int, tuple[str, int, int]], seen: set[str]) -> TensorInfo:
    name = cur.string(f"tensor #{i} name")
    if len(name.encode()) >= GGML_MAX_NAME:
        raise cur.fail(f"tensor #{i} name is {len(name)} bytes (llama.cpp allows {GGML_MAX_NAME - 1})")
    if name in seen:
        raise cur.fail(f"duplicate tensor {name!r}")
    seen.add(name)
    n_dims = cur.unpack("<I", 4, f"dims of {name}")
    if not 1 <= n_dims <= GGML_MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {GGML_MAX_DIMS} allowed)")
    shape = tuple(cur.unpack("<q", 8, f"shape of {name}") for _ in range(n_dims))
    ttype = cur.unpack("<i", 4, f"type of {name}")
    offset = cur.unpack("<Q", 8, f"offset of {name}")
    if ttype not in types:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {ttype}")
    tname, blck, tsize = types[ttype]
    if any(d < 0 for d in shape):
        raise cur.fail(f"tensor {name!r} has a negative dimension {shape}")
    n_el = 1
    for d in shape:
        n_el *= d
    if n_el >= 1 << 62:
        raise cur.fail(f"tensor {name!r} has an absurd shape {shape}")
    if shape[0] % blck:
        raise cur.fail(f"tensor {name!r} row length {shape[0]} is not a multiple of {tname}'s block size {blck}")
    return TensorInfo(name, shape, tname, offset, n_el // blck * tsize)


def _check_offsets(cur: _Cursor, tensors: list[TensorInfo], alignment: int, data_offset: int | None) -> None:
    """Tensors packed in order and aligned; with ``data_offset`` (a known file length), inside the file."""
    expected = 0
    for t in tensors:
        if t.offset % alignment:
            raise cur.fail(f"tensor {t.name!r} offset {t.offset} is not aligned to {alignment}")
        if t.offset != expected:
            raise cur.fail(f"tensor {t.name!r} has offset {t.offset}, expected {expected}")
        expected += -(-t.n_bytes // alignment) * alignment
        if data_offset is not None and data_offset + t.offset + t.n_bytes > cur.src.size:
            raise cur.fail(f"tensor {t.name!r} data ends at byte {data_offset + t.offset + t.n_bytes}, "
                           f"past the end of the file ({cur.src.size} bytes): truncated")


def _check_architecture(info: GGUFInfo, fail: Callable[[str], GGUFError]) -> None:
    arch = info.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise fail("general.architecture is missing")
    if arch not in supported_architectures():
        raise GGUFError(f"{info.path}: architecture {arch!r} is not supported by this llama.cpp",
                        fix="use a GGUF of a supported architecture (fmgguf list shows tested ones)")
    for suffix in ("block_count", "embedding_length"):
        v = info.metadata.get(f"{arch}.{suffix}")
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 1 << 20:
            raise fail(f"{arch}.{suffix} is missing or not a sane integer ({v!r})")
    n_layer = info.n_layer
    for t in info.tensors:
        if t.layer is not None and t.layer >= n_layer + 8:  # nextn/MTP layers sit just past block_count
            raise fail(f"tensor {t.name!r} belongs to layer {t.layer} but the model has {n_layer}")


def read_gguf(path: str | os.PathLike[str], *, check: bool = True) -> GGUFInfo:
    """Validated header, metadata and tensor table of a local GGUF (GGUFError on any problem).

    ``check`` (default) also holds the metadata against the tensors as llama.cpp's loader uses them
    (:func:`file_problems`) and raises for the first problem; ``check=False`` returns a well-formed
    file's header even when llama.cpp could not load it (``fmgguf inspect`` shows the problems)."""
    p = Path(path)
    if p.is_dir():
        raise GGUFError(f"{p} is a directory, not a GGUF file", fix="pass the .gguf file itself")
    src = FileSource(p)
    try:
        info = parse_gguf(src)
        if check:
            require_loadable(info)
        return info
    except GGUFError:
        raise
    except (MemoryError, RecursionError, OverflowError, struct.error, ValueError) as exc:  # never a traceback
        raise GGUFError(f"{p} is not a valid GGUF file: {type(exc).__name__}: {exc}",
                        fix="delete it and download it again, or check its source") from None
    finally:
        src.close()


_SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def with_split_tensors(info: GGUFInfo) -> GGUFInfo | None:
    """A gguf-split model's first part with the tensor tables of all its parts (llama.cpp loads them
    together); ``info`` itself for a single file; None when a part is missing or unreadable."""
    count = info.metadata.get("split.count", 1)
    if not isinstance(count, int) or count <= 1:
        return info
    m = _SPLIT_NAME.match(Path(info.path).name)
    if m is None or int(m["count"]) != count:
        return None
    tensors = list(info.tensors)
    for no in range(1, count + 1):
        part = Path(info.path).with_name(f"{m['stem']}-{no:05d}-of-{count:05d}.gguf")
        if part.name == Path(info.path).name:
            continue
        try:
            src = FileSource(part)
        except GGUFError:
            return None
        try:
            tensors += parse_gguf(src, model=False).tensors
        except (GGUFError, MemoryError, OverflowError, struct.error, ValueError):
            return None
        finally:
            src.close()
    return dataclasses.replace(info, tensors=tensors)


def file_problems(info: GGUFInfo) -> list[Problem]:
    """``check_model`` of a file as llama.cpp loads it: a split model's first part with its other parts' tensors."""
    whole = with_split_tensors(info)
    return check_model(whole or info, tensors=whole is not None)


def require_loadable(info: GGUFInfo) -> None:
    """GGUFError naming the first field llama.cpp would refuse or abort on (see validation.py)."""
    problems = file_problems(info)
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise GGUFError(f"{info.path} cannot be loaded by llama.cpp: {problems[0]}{more}",
                        fix="its metadata disagrees with what llama.cpp needs: get a correct GGUF "
                            "(`fmgguf inspect FILE` lists every problem)")
