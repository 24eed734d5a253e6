"""Which devices llama.cpp can use and how much memory each has free.

The truth about devices is ggml's backend device API in the very libraries llama-cpp-python
ships (``llama_cpp/lib/libggml*.so``), bound here with ctypes: the same list and the same free
memory llama.cpp itself plans with. The package is located with ``importlib.util.find_spec``,
without importing llama_cpp. Where NVML (``pynvml``) is importable, it supplies the GPU memory
numbers for NVIDIA devices (matched by PCI bus id). RAM comes from psutil.
``settings.vram_override`` (``--vram 8GB``) plans for another card: one GPU with that much free.

The same bindings reach llama.cpp's RPC backend: attaching a worker's devices (``rpc_attach``, what
llama.cpp's ``--rpc`` does) and serving this machine's devices (``rpc_serve``, `fmgguf worker`).
Everything goes through ``libllama``'s handle: the wheel's libggml copies each have a registry.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from fmgguf._util import JsonObject

DEV_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL", 4: "META"}


@dataclass(frozen=True)
class Device:
    index: int  # position among ggml devices (llama.cpp's device order)
    name: str  # CUDA0, Vulkan0, Metal, CPU, ...
    description: str
    kind: str  # CPU | GPU | IGPU | ACCEL | RPC (a worker's device attached in this process)
    free: int
    total: int
    backend: str  # the ggml backend registry it belongs to (CUDA, Vulkan, Metal, CPU, ...)
    pci_id: str | None = None
    memory_source: str = "ggml"  # ggml | nvml | override | psutil | rpc (probe) | budget (--rpc @BUDGET)

    def as_dict(self) -> JsonObject:
        return asdict(self)


@dataclass(frozen=True)
class SystemMemory:
    gpus: list[Device]
    ram_free: int  # available RAM (psutil `available`)
    ram_total: int
    backends: list[str] = field(default_factory=list)
    source: str = "ggml"  # ggml | override | none
    #: RPC workers' devices (kind "RPC"), in the order llama.cpp puts them: before the local GPUs
    workers: list[Device] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> JsonObject:
        return {"gpus": [g.as_dict() for g in self.gpus], "ram_free": self.ram_free, "ram_total": self.ram_total,
                "backends": self.backends, "source": self.source, "workers": [w.as_dict() for w in self.workers],
                "notes": self.notes}


def llama_cpp_lib_dir() -> Path | None:
    """llama_cpp/lib of the installed llama-cpp-python, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        lib = Path(loc) / "lib"
        if lib.is_dir():
            return lib
    return None


def _lib_name(stem: str) -> str:
    if sys.platform == "darwin":
        return f"lib{stem}.dylib"
    if sys.platform == "win32":
        return f"{stem}.dll"
    return f"lib{stem}.so"


class _Props(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("description", ctypes.c_char_p), ("memory_free", ctypes.c_size_t),
                ("memory_total", ctypes.c_size_t), ("type", ctypes.c_int), ("device_id", ctypes.c_char_p),
                ("caps", ctypes.c_bool * 4)]


@lru_cache(maxsize=1)
def _ggml() -> ctypes.CDLL | None:
    """ggml's API through ``libllama``: the wheel ships libggml as separate *copies* (``.so``, ``.so.0``,
    ``.so.0.x.y``), each with its own backend registry, so binding ``libggml.so`` directly can give a
    registry llama.cpp never sees. libllama, opened by the very path llama_cpp opens, is one shared
    handle whichever is loaded first, and its symbol lookup reaches the libggml llama.cpp uses."""
    lib_dir = llama_cpp_lib_dir()
    if lib_dir is None:
        return None
    mode = getattr(os, "RTLD_GLOBAL", 0)
    try:
        lib = ctypes.CDLL(str(lib_dir / _lib_name("llama")), mode=mode)
    except OSError:
        return None
    vp = ctypes.c_void_p
    sigs = {"ggml_backend_dev_count": ([], ctypes.c_size_t), "ggml_backend_dev_get": ([ctypes.c_size_t], vp),
            "ggml_backend_dev_name": ([vp], ctypes.c_char_p), "ggml_backend_dev_description": ([vp], ctypes.c_char_p),
            "ggml_backend_dev_type": ([vp], ctypes.c_int),
            "ggml_backend_dev_memory": ([vp, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)], None),
            "ggml_backend_dev_get_props": ([vp, ctypes.POINTER(_Props)], None),
            "ggml_backend_dev_backend_reg": ([vp], vp), "ggml_backend_reg_name": ([vp], ctypes.c_char_p),
            "ggml_backend_reg_count": ([], ctypes.c_size_t), "ggml_backend_reg_get": ([ctypes.c_size_t], vp),
            "ggml_backend_load_all": ([], None), "ggml_backend_reg_by_name": ([ctypes.c_char_p], vp),
            "ggml_backend_reg_get_proc_address": ([vp, ctypes.c_char_p], vp), "ggml_backend_register": ([vp], None),
            "ggml_backend_reg_dev_count": ([vp], ctypes.c_size_t),
            "ggml_backend_reg_dev_get": ([vp, ctypes.c_size_t], vp),
            "ggml_backend_dev_by_name": ([ctypes.c_char_p], vp)}
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    if lib.ggml_backend_reg_count() <= 1:  # backends built as loadable modules (GGML_BACKEND_DL)
        lib.ggml_backend_load_all()
    return lib



def ggml_lib() -> ctypes.CDLL | None:
    """The one ctypes binding of ggml's backend API (see :func:`_ggml`); None without llama-cpp-python."""
    return _ggml()

def ggml_backends() -> list[str]:
    """Names of the ggml backends this llama.cpp build registers (CPU, CUDA, Metal, Vulkan, ...)."""
    lib = _ggml()
    if lib is None:
        return []
    return [lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode() for i in range(lib.ggml_backend_reg_count())]


def ggml_devices() -> list[Device]:
    """Every ggml device with its free/total memory, as llama.cpp sees them."""
    lib = _ggml()
    if lib is None:
        return []
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        if reg and lib.ggml_backend_reg_name(reg) == b"RPC":  # attached worker: asking it would go over the
            out.append(Device(index=i, name=lib.ggml_backend_dev_name(dev).decode(), kind="RPC", free=0, total=0,
                              description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                              backend="RPC", memory_source="rpc"))  # network (fmgguf.runtime.rpc.rpc.probe does)
            continue
        props = _Props()
        lib.ggml_backend_dev_get_props(dev, ctypes.byref(props))
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(Device(index=i, name=(props.name or b"?").decode(), description=(props.description or b"").decode(),
                          kind=DEV_TYPES.get(props.type, str(props.type)), free=int(free.value), total=int(total.value),
                          backend=lib.ggml_backend_reg_name(reg).decode() if reg else "?",
                          pci_id=props.device_id.decode() if props.device_id else None))
    return out


# --- llama.cpp's RPC backend (workers) -----------------------------------------------------------------
#: endpoint -> its device names, for the workers attached in this process (mirrors ggml's own registry,
#: which is process-wide and has no way to unregister a backend)
_ATTACHED: dict[str, list[str]] = {}
_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p))


F = TypeVar("F")


def _rpc_fn(name: str, proto: Callable[[int], F]) -> F | None:
    lib = _ggml()
    reg = lib.ggml_backend_reg_by_name(b"RPC") if lib is not None else None
    addr = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    return proto(addr) if addr else None


def rpc_supported() -> bool:
    """True when this llama.cpp build has the RPC backend (built with GGML_RPC=on)."""
    return _rpc_fn("ggml_backend_rpc_add_server", _ADD_SERVER) is not None


def rpc_attach(endpoint: str) -> list[str]:
    """Register the devices of the worker at ``endpoint`` with llama.cpp's registry, as llama.cpp's own
    ``--rpc`` does (they come first in llama.cpp's device order, in the order attached); returns their
    names (RPC0, RPC1, ...). Attaching the same endpoint again is a no-op. **Probe the worker first**
    (:func:`fmgguf.runtime.rpc.rpc.probe`): llama.cpp aborts the process when it cannot reach it."""
    lib, add = _ggml(), _rpc_fn("ggml_backend_rpc_add_server", _ADD_SERVER)
    if lib is None or add is None:
        from fmgguf.errors import WorkerError

        raise WorkerError("this llama.cpp build has no RPC backend",
                          fix="reinstall with `make install` (it builds llama-cpp-python with -DGGML_RPC=on)")
    attached = _ATTACHED
    if endpoint not in attached:
        reg = add(endpoint.encode())
        if not reg:
            from fmgguf.errors import WorkerError

            raise WorkerError(f"RPC worker {endpoint} reports no devices", fix="restart it with --device")
        lib.ggml_backend_register(reg)
        attached[endpoint] = [lib.ggml_backend_dev_name(lib.ggml_backend_reg_dev_get(reg, i)).decode()
                              for i in range(lib.ggml_backend_reg_dev_count(reg))]
    return list(attached[endpoint])


def attached_workers() -> list[str]:
    """Endpoints attached in this process (they stay: ggml has no way to unregister a backend)."""
    return list(_ATTACHED)


def rpc_serve(endpoint: str, device_names: list[str], n_threads: int, cache_dir: str | None = None) -> str:
    """Serve ``device_names`` as an RPC worker on ``endpoint`` (``ggml_backend_rpc_start_server``). Blocks
    for as long as it serves, so run it in a process of its own; returns why it stopped."""
    lib, start = _ggml(), _rpc_fn("ggml_backend_rpc_start_server", _START_SERVER)
    if lib is None or start is None:
        return "this llama.cpp build has no RPC backend (reinstall with `make install`: -DGGML_RPC=on)"
    devs = []
    for name in device_names:
        dev = lib.ggml_backend_dev_by_name(name.encode())
        if not dev:
            known = ", ".join(d.name for d in ggml_devices())
            return f"no device named {name!r} here (devices: {known})"
        devs.append(dev)
    arr = (ctypes.c_void_p * len(devs))(*devs)
    start(endpoint.encode(), cache_dir.encode() if cache_dir else None, n_threads, len(devs), arr)
    return f"the RPC server on {endpoint} stopped (port in use, or the address is not on this machine?)"


def default_worker_devices() -> list[str]:
    """What a worker serves when no --device is given: every GPU-like device, else the CPU (as rpc-server)."""
    devs = ggml_devices()
    gpus = [d.name for d in devs if d.kind in ("GPU", "IGPU") and d.backend != "RPC"]
    return gpus or [d.name for d in devs if d.kind == "CPU"][:1]


def _nvml_memory() -> dict[str, tuple[int, int]]:
    """PCI bus id (lower case, domain:bus:device.function) -> (free, total) from NVML, if present."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no NVIDIA GPU
        return {}
    out = {}
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            bus = pynvml.nvmlDeviceGetPciInfo(h).busId
            bus = bus.decode() if isinstance(bus, bytes) else bus
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out[_norm_pci(bus)] = (int(mem.free), int(mem.total))
    finally:
        pynvml.nvmlShutdown()
    return out


def _norm_pci(bus: str) -> str:
    """NVML writes 00000000:01:00.0, ggml 0000:01:00.0: keep the last 4 hex digits of the domain."""
    bus = bus.lower()
    dom, _, rest = bus.partition(":")
    return f"{dom[-4:]}:{rest}"


def ram() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def system_memory(vram_override: int | None = None, use_nvml: bool = True) -> SystemMemory:
    """GPUs (free/total), RAM, the backends of this llama.cpp build. With ``vram_override`` the GPU list
    is one hypothetical device with that much free memory (planning for another machine)."""
    ram_free, ram_total = ram()
    backends = ggml_backends()
    if vram_override is not None:
        gpus = [] if vram_override <= 0 else [Device(0, "GPU0", "planned (--vram)", "GPU", int(vram_override),
                                                     int(vram_override), "override", memory_source="override")]
        return SystemMemory(gpus, ram_free, ram_total, backends, source="override")
    devices = ggml_devices()
    gpus = [d for d in devices if d.kind in ("GPU", "IGPU") and d.total > 0]
    nvml = _nvml_memory() if use_nvml and gpus else {}
    if nvml:
        gpus = [Device(**{**d.as_dict(), "free": nvml[_norm_pci(d.pci_id)][0], "total": nvml[_norm_pci(d.pci_id)][1],
                          "memory_source": "nvml"}) if d.pci_id and _norm_pci(d.pci_id) in nvml else d for d in gpus]
    return SystemMemory(gpus, ram_free, ram_total, backends, source="ggml" if devices else "none")
