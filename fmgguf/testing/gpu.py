"""Is a CUDA GPU usable by our llama.cpp build? Answered without importing (or loading) llama_cpp.

Two cheap facts must both hold: ``nvidia-smi`` lists a GPU, and the installed llama_cpp package
ships a CUDA ggml backend library (``libggml-cuda.so`` or a statically linked ``libggml*``/
``libllama*`` that mentions CUDA). Used by tests/conftest.py to skip ``gpu`` tests.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
from pathlib import Path


def llama_cpp_lib_dir() -> Path | None:
    """The directory holding llama_cpp's shared libraries (found via its spec, not by importing it)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    lib = pkg / "lib"
    return lib if lib.is_dir() else pkg


def has_cuda_backend(lib_dir: Path | None = None) -> bool:
    """True when the llama_cpp build includes the CUDA ggml backend."""
    lib_dir = lib_dir or llama_cpp_lib_dir()
    if lib_dir is None or not lib_dir.is_dir():
        return False
    if any(lib_dir.glob("libggml-cuda*")) or any(lib_dir.glob("ggml-cuda*.dll")):
        return True
    # a monolithic build links the backend into libggml / libllama
    for lib in [*lib_dir.glob("libggml.so*"), *lib_dir.glob("libllama.so*")]:
        try:
            with open(lib, "rb") as fh:
                if b"ggml_backend_cuda_init" in fh.read():
                    return True
        except OSError:
            continue
    return False


def nvidia_gpu_present() -> bool:
    """``nvidia-smi -L`` lists at least one GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """A CUDA GPU is present and our llama.cpp can use it."""
    return nvidia_gpu_present() and has_cuda_backend()
