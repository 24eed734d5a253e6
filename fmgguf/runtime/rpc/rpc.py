"""RPC workers: the ``--rpc HOST[:PORT][@BUDGET][,…]`` spec, and a pure-Python probe of each worker.

llama.cpp's RPC client aborts the whole process (GGML_ABORT) when it cannot connect, when the
handshake fails or when the protocol version differs. So before llama.cpp ever connects, every
worker is probed here over the same wire protocol (ggml-rpc.cpp, protocol 7.x): connect, HELLO
(command 14: version), DEVICE_COUNT (15), GET_DEVICE_MEMORY (11) for each device. A dead, busy or
mismatched worker becomes a :class:`~fmgguf.errors.WorkerError` naming it.

Wire format (little endian): request ``| cmd u8 | size u64 | payload |``, response ``| size u64 |
payload |``. A worker serves one client at a time: a probe closes its connection before returning.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fmgguf.errors import FmggufError, InvalidRequestError, WorkerError

if TYPE_CHECKING:
    from fmgguf.runtime.hw.devices import Device
    from fmgguf.settings import Settings

#: the protocol of the llama.cpp this fmgguf builds (vendor/llama.cpp/ggml/include/ggml-rpc.h)
PROTO_MAJOR, PROTO_MINOR = 7, 0
DEFAULT_PORT = 50052
MAX_WORKERS = 16  # GGML_RPC_MAX_SERVERS

_CMD_GET_DEVICE_MEMORY, _CMD_HELLO, _CMD_DEVICE_COUNT = 11, 14, 15
_CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: all zero = plain TCP (no RDMA)


@dataclass(frozen=True)
class WorkerSpec:
    """One ``--rpc`` entry: where the worker listens and how much memory the plan may use there."""

    host: str
    port: int = DEFAULT_PORT
    budget: int | None = None  # bytes; None = what the worker reports free

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.endpoint


@dataclass(frozen=True)
class WorkerDevice:
    index: int
    free: int
    total: int


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker answered: its protocol version and each device's memory."""

    spec: WorkerSpec
    version: tuple[int, int, int]
    devices: tuple[WorkerDevice, ...]
    probe_s: float = 0.0


def parse_workers(text: str | Sequence[str] | None) -> tuple[WorkerSpec, ...]:
    """``"a:50052@48GB,b"`` (or a list of such strings) -> worker specs; InvalidRequestError when malformed."""
    if text is None:
        return ()
    parts = [text] if isinstance(text, str) else list(text)
    items = [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
    specs = tuple(_parse_one(item) for item in items)
    if len(specs) > MAX_WORKERS:
        raise InvalidRequestError(f"--rpc names {len(specs)} workers; llama.cpp attaches at most {MAX_WORKERS}",
                                  fix="name fewer workers")
    seen = set()
    for s in specs:
        if s.endpoint in seen:
            raise InvalidRequestError(f"--rpc names worker {s.endpoint} twice", fix="name each worker once")
        seen.add(s.endpoint)
    return specs


def _parse_one(item: str) -> WorkerSpec:
    from fmgguf.errors import ConfigError
    from fmgguf.settings import parse_size

    where, _, budget_text = item.partition("@")
    fix = "write workers as HOST:PORT[@BUDGET], e.g. 10.0.0.2:50052@48GB (IPv6: use a host name)"
    if where.startswith("[") or where.count(":") > 1:
        raise InvalidRequestError(f"--rpc {item!r}: llama.cpp cannot take IPv6 literals", fix=fix)
    host, _, port_text = where.partition(":")
    if not host:
        raise InvalidRequestError(f"--rpc {item!r} names no host", fix=fix)
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise InvalidRequestError(f"--rpc {item!r}: {port_text!r} is not a port", fix=fix)
    budget = None
    if budget_text:
        try:
            budget = parse_size(budget_text, "budget")
        except ConfigError:
            raise InvalidRequestError(f"--rpc {item!r}: {budget_text!r} is not a size", fix=fix) from None
        if not budget:
            raise InvalidRequestError(f"--rpc {item!r}: a budget must be more than 0", fix=fix)
    return WorkerSpec(host, port, budget)


def format_workers(specs: Iterable[WorkerSpec]) -> str:
    """The inverse of :func:`parse_workers` (budgets in bytes)."""
    return ",".join(s.endpoint + (f"@{s.budget}" if s.budget else "") for s in specs)


# --- the probe ----------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the worker closed the connection")
        buf += chunk
    return bytes(buf)


def _call(sock: socket.socket, cmd: int, payload: bytes, answer: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size != answer:
        raise ValueError(f"answered {size} bytes to command {cmd}, expected {answer}")
    return _recv_exact(sock, size)


def probe(spec: WorkerSpec, timeout: float = 5.0) -> WorkerInfo:
    """Ask ``spec`` for its version and device memory; :class:`WorkerError` if it cannot answer right."""
    started = time.perf_counter()
    name = spec.endpoint
    try:
        sock = socket.create_connection((spec.host, spec.port), timeout=timeout)
    except socket.gaierror:
        raise WorkerError(f"RPC worker {name}: unknown host {spec.host!r}", fix="check the --rpc host name",
                          worker=name) from None
    except OSError as exc:
        raise WorkerError(f"RPC worker {name} is not reachable ({exc.strerror or exc})",
                          fix=f"start it there with `fmgguf worker --host HOST --port {spec.port}`, "
                              "or fix the --rpc address", worker=name) from None
    try:
        with sock:
            sock.settimeout(timeout)
            hello = _call(sock, _CMD_HELLO, bytes(_CONN_CAPS), 4 + _CONN_CAPS)
            version = (hello[0], hello[1], hello[2])
            if version[0] != PROTO_MAJOR or version[1] > PROTO_MINOR:
                raise WorkerError(
                    f"RPC worker {name} speaks protocol {'.'.join(map(str, version))}, this fmgguf speaks "
                    f"{PROTO_MAJOR}.{PROTO_MINOR}.x", fix="run the same fmgguf (same llama-cpp-python) on "
                    "every machine", worker=name)
            (count,) = struct.unpack("<I", _call(sock, _CMD_DEVICE_COUNT, b"", 4))
            devices = []
            for i in range(count):
                free, total = struct.unpack("<QQ", _call(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", i), 16))
                devices.append(WorkerDevice(i, int(free), int(total)))
    except TimeoutError:
        raise WorkerError(f"RPC worker {name} accepted the connection but did not answer within {timeout:g} s",
                          fix="a worker serves one client at a time: stop the other client using it, "
                              "or check that it is an `fmgguf worker`", worker=name) from None
    except (OSError, ValueError) as exc:
        raise WorkerError(f"RPC worker {name} did not speak the RPC protocol ({exc})",
                          fix="check that the --rpc address is an `fmgguf worker` of the same version",
                          worker=name) from None
    if not devices:
        raise WorkerError(f"RPC worker {name} has no devices", fix="restart it with --device CPU or CUDA0",
                          worker=name)
    return WorkerInfo(spec, version, tuple(devices), time.perf_counter() - started)


def probe_all(specs: Sequence[WorkerSpec], timeout: float = 5.0) -> list[WorkerInfo]:
    """Probe every worker at once; the first failure (in the order given) is raised."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        futures = [pool.submit(probe, s, timeout) for s in specs]
    return [f.result() for f in futures]


def wait_listening(host: str, port: int, timeout: float = 30.0, alive: object = None) -> float:
    """Seconds until something accepts connections on host:port (a worker starting up); ``alive``
    (a callable) is polled so a worker that died is reported at once. TimeoutError after ``timeout``."""
    started = time.perf_counter()
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return time.perf_counter() - started
        except OSError:
            pass
        if callable(alive) and not alive():
            raise WorkerError(f"the RPC worker on {host}:{port} exited while starting",
                              fix="see its output above (port in use? unknown --device?)", worker=f"{host}:{port}")
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")
        time.sleep(0.02)


# --- workers as planning devices -------------------------------------------------------------------
def worker_devices(specs: Sequence[WorkerSpec], *, timeout: float = 5.0,
                   need_reachable: bool = True) -> tuple[list["Device"], list[str]]:
    """Each worker's devices as the fit plan sees them (kind "RPC", in attach order), with notes.

    ``free`` is the worker's budget (``@BUDGET``) where given, else what it reports. A worker that
    cannot be reached is an error, unless ``need_reachable`` is False and it has a budget: then it
    is planned from the budget alone (``fmgguf fit`` before the machines are even set up)."""
    devices: list[Device] = []
    notes: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = [pool.submit(probe, s, timeout) for s in specs]
    for spec, fut in zip(specs, futures, strict=True):
        try:
            info = fut.result()
        except WorkerError as exc:
            if need_reachable or not spec.budget:
                if not need_reachable:
                    exc.fix = f"{exc.fix}; or give its budget (--rpc {spec.endpoint}@48GB) to plan without it"
                    exc.args = (exc.one_line(),)
                raise
            notes.append(f"worker {spec.endpoint} not reached ({exc.message}): planned from its budget alone")
            devices.append(_device(spec, 0, spec.budget, spec.budget, "budget"))
            continue
        reported = sum(d.free for d in info.devices) or 1
        for d in info.devices:
            if spec.budget:
                share = spec.budget * d.free // reported
                if share > d.free:
                    notes.append(f"worker {spec.endpoint} reports {d.free / 1024**3:.1f} GiB free on device {d.index}, "
                                 f"less than its budget: planned with what it reports")
                devices.append(_device(spec, d.index, min(share, d.free), d.total, "budget" if share <= d.free else "rpc"))
            else:
                devices.append(_device(spec, d.index, d.free, d.total, "rpc"))
                if d.free == d.total:
                    notes.append(f"worker {spec.endpoint} reports all of its {d.total / 1024**3:.1f} GiB free (a CPU "
                                 f"worker reports its whole RAM): give --rpc {spec.endpoint}@BUDGET to plan with less")
    return devices, notes


def _device(spec: WorkerSpec, index: int, free: int, total: int, source: str) -> "Device":
    from fmgguf.runtime.hw.devices import Device

    name = spec.endpoint if index == 0 else f"{spec.endpoint}#{index}"
    return Device(index=index, name=name, description=f"RPC worker {spec.endpoint}", kind="RPC", free=int(free),
                  total=int(total), backend="RPC", memory_source=source)


def attach_workers(endpoints: Sequence[str], timeout: float = 5.0) -> list[str]:
    """Probe, then attach the workers at ``endpoints`` to llama.cpp in this process (in this order: the
    fit plan's tensor_split follows it). ggml cannot detach a worker, so a process that holds other
    workers (or the same in another order) is refused: each RPC model gets a process of its own."""
    from fmgguf.errors import EngineError
    from fmgguf.runtime.hw.devices import attached_workers, rpc_attach

    endpoints = list(endpoints)
    held = attached_workers()
    if held and held != endpoints:
        raise EngineError(f"this process already has RPC workers {', '.join(held)} attached",
                          fix="load models with other workers in a runner process of their own "
                              "(the default isolation), or restart")
    if not held:
        probe_all(parse_workers(",".join(endpoints)), timeout)
    names: list[str] = []
    for ep in endpoints:
        names += rpc_attach(ep)
    return names


def explain_lost_workers(exc: FmggufError, rpc_option: object, settings: "Settings", timeout: float = 1.0) -> list[str]:
    """After a runner died: the workers it used (``rpc_option``, else ``settings.rpc``) that no longer answer.
    When there are some, ``exc`` is reworded to name them (llama.cpp aborts when a worker goes away, so the
    model itself is not to blame) and they are returned."""
    try:
        specs = parse_workers(settings.rpc if rpc_option is None else rpc_option)  # type: ignore[arg-type]
    except InvalidRequestError:
        return []
    lost = []
    for spec in specs:
        try:
            probe(spec, timeout)
        except WorkerError:
            lost.append(spec.endpoint)
    if lost:
        head = exc.message.split("; its last log lines")[0]
        exc.message = f"{head}: RPC worker {', '.join(lost)} was lost"
        exc.fix = (f"start `fmgguf worker` again on {', '.join(lost)}, or load the model without it (--rpc); "
                   "nothing else was affected")
        exc.args = (exc.one_line(),)
    return lost
