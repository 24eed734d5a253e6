"""The CPU's extra weight buffers: which tensors llama.cpp repacks on this CPU, and how much it costs.

On the CPU, llama.cpp (ggml-cpu/repack.cpp) copies some matmul weights into a ``CPU_REPACK``
buffer, interleaved for its SIMD kernels. Which ones depends on the kernels compiled in:

=========  ================================  =======================================
type       x86 (this build's flags)          ARM
=========  ================================  =======================================
Q4_0       AVX2, rows % 8                    i8mm or dotprod, rows % 4
Q4_K       AVX2, rows % 8                    i8mm or dotprod, rows % 8
Q2_K       AVX512, rows % 8                  —
IQ4_NL     AVX2, rows % 8                    dotprod, rows % 4
MXFP4      AVX2, rows % 8                    dotprod, rows % 4
Q5_K/Q6_K  —                                 i8mm or dotprod, rows % 8
Q8_0       —                                 i8mm or dotprod, rows % 4
=========  ================================  =======================================

Q4_1, Q5_0, Q5_1, Q8_0 (x86), Q3_K, IQ4_XS and the float types are never repacked. Only weights
used by a matrix multiplication are (not token embeddings, read with GET_ROWS); a tied output
layer repacks a second copy of ``token_embd``. With mmap (llama.cpp's default) the file stays
mapped, so the ``CPU_Mapped`` buffer is the file range of the other tensors and the repacked
copies come on top; without mmap the two buffers share the weights. This module reads the
kernels from ggml's CPU backend (``ggml_backend_get_features``) with ctypes, without importing
llama_cpp. AMX buffers (x86 AMX builds) are not modelled: :func:`cpu_kernels` says when they exist.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmgguf.runtime.gguf.gguf_file import GGUFInfo, TensorInfo

#: ggml's TENSOR_ALIGNMENT: every tensor in an allocated CPU buffer starts on this boundary
ALIGN = 32
#: weights that llama.cpp reads with GET_ROWS (never a matmul, never repacked)
_NOT_MATMUL = ("token_embd.", "per_layer_token_embd.", "pos_embd.", "token_types.")


@dataclass(frozen=True)
class CpuKernels:
    """What the CPU backend of this llama.cpp build was compiled with (its feature list)."""

    features: frozenset[str]
    sve_cnt: int = 0

    def has(self, name: str) -> bool:
        return name in self.features

    @property
    def repack(self) -> bool:
        return self.has("REPACK")

    @property
    def amx(self) -> bool:
        return self.has("AMX_INT8")


def repack_interleave(type_name: str, k: CpuKernels) -> int | None:
    """The row multiple a tensor of ``type_name`` needs to be repacked on this CPU (None: never)."""
    t = type_name.upper()
    avx2, neon = k.has("AVX2"), k.has("NEON")
    i8mm, dot = neon and k.has("MATMUL_INT8"), neon and k.has("DOTPROD")
    if t == "Q4_0":
        if avx2 or (k.has("SVE") and k.has("MATMUL_INT8") and k.sve_cnt == 32):
            return 8
        return 4 if i8mm or dot else None
    if t == "Q4_K":
        return 8 if avx2 or i8mm or dot else None
    if t == "Q2_K":
        return 8 if k.has("AVX512") else None
    if t in ("IQ4_NL", "MXFP4"):
        return 8 if avx2 else (4 if dot else None)
    if t in ("Q5_K", "Q6_K"):
        return 8 if i8mm or dot else None
    if t == "Q8_0":
        return 4 if i8mm or dot else None
    return None


def _is_matmul_weight(t: "TensorInfo") -> bool:
    if not t.name.endswith(".weight") or t.name.startswith(_NOT_MATMUL) or len(t.shape) < 2:
        return False
    return len(t.shape) == 2 or (len(t.shape) == 3 and "_exps" in t.name)


def repacked(t: "TensorInfo", k: CpuKernels) -> bool:
    """Whether llama.cpp puts this tensor (as a matmul weight on the CPU) into CPU_REPACK."""
    if not k.repack or not _is_matmul_weight(t):
        return False
    step = repack_interleave(t.type, k)
    return step is not None and t.shape[1] % step == 0


def pad(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class HostBuffers:
    """llama.cpp's model buffers for a CPU-only load, as it prints them (bytes)."""

    cpu: int  # CPU_Mapped (mmap: the file range of the non-repacked tensors) or CPU (allocated)
    repack: int  # CPU_REPACK
    repack_layers: tuple[int, ...]  # per block
    repack_output: int  # output.weight, or the tied copy of token_embd

    @property
    def total(self) -> int:
        return self.cpu + self.repack


def host_buffers(info: "GGUFInfo", k: CpuKernels | None, use_mmap: bool = True) -> HostBuffers:
    """The model buffers of a CPU-only load of ``info`` (no repack when ``k`` is None)."""
    layers = [0] * info.n_layer
    out = 0
    kept: list["TensorInfo"] = []
    names = {t.name for t in info.tensors}
    for t in info.tensors:
        if k is not None and repacked(t, k):
            if t.layer is not None and t.layer < info.n_layer:
                layers[t.layer] += pad(t.n_bytes)
            else:
                out += pad(t.n_bytes)
        else:
            kept.append(t)
        if t.name == "token_embd.weight" and "output.weight" not in names and k is not None:
            # tied output: llama.cpp duplicates token_embd as a matmul weight; repacked, it is a second copy
            as_output = type(t)("output.weight", t.shape, t.type, t.offset, t.n_bytes)
            if repacked(as_output, k):
                out += pad(t.n_bytes)
    if use_mmap:
        cpu = max(t.offset + t.n_bytes for t in kept) - min(t.offset for t in kept) if kept else 0
    else:
        cpu = sum(pad(t.n_bytes) for t in kept)
    return HostBuffers(cpu, sum(layers) + out, tuple(layers), out)


@lru_cache(maxsize=1)
def cpu_kernels() -> CpuKernels | None:
    """The CPU backend's feature list from the llama.cpp libraries llama-cpp-python ships (None if absent)."""
    from fmgguf.runtime.hw.devices import ggml_lib

    lib = ggml_lib()  # the libggml llama.cpp itself uses, not a second copy of the library
    if lib is None:
        return None
    reg = lib.ggml_backend_reg_by_name(b"CPU")
    fn = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features") if reg else None
    if not fn:
        return None

    class _Feature(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]

    get = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(fn)
    feats, i, sve = set(), 0, 0
    arr = get(reg)
    while arr[i].name:
        name, value = arr[i].name.decode(), (arr[i].value or b"").decode()
        if name == "SVE_CNT":
            sve = int(value or 0)
        elif value not in ("0", ""):
            feats.add(name)
        i += 1
    return CpuKernels(frozenset(feats), sve)
