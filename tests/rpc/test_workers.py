"""The RPC backend in the installed wheel, the Python probe, `fmgguf worker` and wrong addresses."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from fmgguf.errors import InvalidRequestError, WorkerError
from fmgguf.runtime.rpc.rpc import DEFAULT_PORT, WorkerSpec, parse_workers, probe

from .conftest import child_env, closed_port, fmgguf_cmd, start_worker

_SAME_HANDLE = r"""
import ctypes, sys
first = sys.argv[1]
if first == "llama_cpp":
    import llama_cpp
from fmgguf.runtime.hw import devices
ours = devices._ggml()
import llama_cpp
theirs = llama_cpp.llama_cpp._lib
addr = lambda lib: ctypes.cast(lib.ggml_backend_reg_by_name, ctypes.c_void_p).value
print(addr(ours) == addr(theirs), bool(ours.ggml_backend_reg_by_name(b"RPC")), devices.rpc_supported())
"""


@pytest.mark.parametrize("first", ["fmgguf", "llama_cpp"])
def test_rpc_backend_resolves_through_the_library_llama_cpp_uses(first: str) -> None:
    from fmgguf.runtime.hw.devices import llama_cpp_lib_dir

    assert (llama_cpp_lib_dir() / "libggml-rpc.so").is_file(), "the wheel was built without -DGGML_RPC=on"
    out = subprocess.run([sys.executable, "-c", _SAME_HANDLE, first], capture_output=True, text=True, timeout=120,
                         env=child_env())
    assert out.stdout.split() == ["True", "True", "True"], out.stderr


def test_parse_workers() -> None:
    specs = parse_workers("10.0.0.2:50053@48GB, gpu-box ,127.0.0.1:7@512MiB")
    assert specs == (WorkerSpec("10.0.0.2", 50053, 48 * 1000**3), WorkerSpec("gpu-box", DEFAULT_PORT, None),
                     WorkerSpec("127.0.0.1", 7, 512 * 1024**2))
    assert parse_workers("") == () and parse_workers(None) == ()
    for bad in ("a:0", "a:x", "[::1]:5", "::1", "a@lots", "a@0", "a,a", ":5"):
        with pytest.raises(InvalidRequestError):
            parse_workers(bad)


def test_probe_reads_version_and_device_memory(workers) -> None:  # noqa: ANN001
    info = probe(WorkerSpec("127.0.0.1", workers[0].port))
    assert info.version[0] == 7
    assert len(info.devices) == 1 and 0 < info.devices[0].free <= info.devices[0].total


def test_wrong_port_is_one_line_error_without_abort(tiny_path) -> None:  # noqa: ANN001
    port = closed_port()
    out = subprocess.run(fmgguf_cmd("run", str(tiny_path), "def f", "-n", "2", "--rpc", f"127.0.0.1:{port}"),
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 25, out.stderr  # WorkerError, not a signal (SIGABRT would be negative)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: RPC worker 127.0.0.1:{port} is not reachable"), lines
    assert "fmgguf worker" in lines[0]


def test_a_port_that_is_no_worker_is_named() -> None:
    """Something else listens there (it hangs up): a WorkerError naming it, not llama.cpp's abort."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def hang_up() -> None:
        conn, _ = srv.accept()
        conn.recv(64)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    with srv, pytest.raises(WorkerError, match=r"127\.0\.0\.1:\d+ did not speak the RPC protocol"):
        probe(WorkerSpec("127.0.0.1", srv.getsockname()[1]), timeout=5)


def test_busy_worker_times_out_with_the_reason(workers) -> None:  # noqa: ANN001
    """A worker serves one client at a time: a second client gets a clear error, not a hang."""
    w = workers[0]
    holder = socket.create_connection(("127.0.0.1", w.port))
    try:  # the holder has said HELLO, so the worker is busy with it
        holder.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))
        holder.recv(36)
        with pytest.raises(WorkerError, match="one client at a time"):
            probe(WorkerSpec("127.0.0.1", w.port), timeout=1.0)
    finally:
        holder.close()
    assert probe(WorkerSpec("127.0.0.1", w.port)).version[0] == 7  # free again


def test_worker_refuses_non_loopback_without_allow_remote() -> None:
    out = subprocess.run(fmgguf_cmd("worker", "--host", "0.0.0.0", "--port", "0"), capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode == 2
    assert "--allow-remote" in out.stderr and "ssh -N -L" in out.stderr


def test_worker_with_allow_remote_warns_and_serves() -> None:
    w = start_worker("--host", "0.0.0.0", "--allow-remote")
    try:
        text = "".join(w.lines)
        assert "NO authentication" in text and "SSH tunnel" in text
        assert probe(WorkerSpec("127.0.0.1", w.port)).version[0] == 7
    finally:
        w.kill()


def test_worker_unknown_device_is_one_line() -> None:
    out = subprocess.run(fmgguf_cmd("worker", "--port", "0", "--device", "NOPE0"), capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode != 0 and out.returncode > 0
    assert "no device named 'NOPE0'" in out.stderr and "CPU" in out.stderr


def test_rpc_in_process_isolation_is_refused_before_llama_cpp_connects(workers, tiny_path, tmp_path) -> None:  # noqa: ANN001
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    m = ModelManager(load_settings(home=tmp_path), keep_alive=0, isolation="inprocess")
    with pytest.raises(InvalidRequestError, match="runner process"):
        m.load_file(tiny_path, n_ctx=256, rpc=workers[0].endpoint)
    from fmgguf.runtime.hw.devices import attached_workers

    assert attached_workers() == []  # nothing was attached to this (pytest's) process
    m.close()


def test_worker_on_a_port_in_use_is_one_line(workers) -> None:  # noqa: ANN001
    out = subprocess.run(fmgguf_cmd("worker", "--port", str(workers[0].port)), capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode == 2 and "listening" not in out.stderr + out.stdout
    assert out.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{workers[0].port}: "
                                               "Address already in use — pick another --port (0: any free one), "
                                               "or an address of this machine for --host"]


def test_a_worker_of_another_protocol_version_is_named() -> None:
    """An older llama.cpp's worker (protocol 6) answering HELLO: refused by the probe, before llama.cpp
    (which would abort the process) ever connects. A real v6 worker needs another llama.cpp build, so
    this peer speaks just the HELLO of one, byte for byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def old_worker() -> None:
        conn, _ = srv.accept()
        with conn:
            hello = conn.recv(64)
            assert hello[0] == 14 and int.from_bytes(hello[1:9], "little") == 24
            conn.sendall((28).to_bytes(8, "little") + bytes([6, 1, 0, 0]) + bytes(24))
            conn.recv(64)

    threading.Thread(target=old_worker, daemon=True).start()
    port = srv.getsockname()[1]
    with srv, pytest.raises(WorkerError, match=rf"RPC worker 127\.0\.0\.1:{port} speaks protocol 6\.1\.0"):
        probe(WorkerSpec("127.0.0.1", port), timeout=5)


def _hello_only_worker(version: tuple[int, int, int]) -> socket.socket:
    """A peer that answers HELLO with ``version`` (then waits for the client to hang up)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            hello = conn.recv(64)
            assert hello[0] == 14
            conn.sendall((28).to_bytes(8, "little") + bytes([*version, 0]) + bytes(24))
            conn.recv(64)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_worker_of_a_newer_minor_protocol_version_is_named() -> None:
    """7.1.0 against this fmgguf's 7.0.x: a newer minor version may send what this client cannot read
    (llama.cpp's client refuses it too), so the probe refuses it before llama.cpp connects."""
    srv = _hello_only_worker((7, 1, 0))
    port = srv.getsockname()[1]
    with srv, pytest.raises(WorkerError, match=rf"RPC worker 127\.0\.0\.1:{port} speaks protocol 7\.1\.0") as err:
        probe(WorkerSpec("127.0.0.1", port), timeout=5)
    assert "same fmgguf" in err.value.fix
