"""`fmgguf worker`: serve this machine's devices to other machines' fmgguf (llama.cpp's RPC backend).

The server is llama.cpp's own, from the same library the client uses, run in a child process
(:mod:`fmgguf.runtime.rpc.rpc_worker`): its C call never returns, and the child can be stopped cleanly.
The protocol has no authentication and no encryption, so a worker binds to loopback unless
``--allow-remote`` says otherwise, and then it prints why that is dangerous and what is safer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import click

from fmgguf.cli._common import AppContext, human_bytes, pass_app

SECURITY_WARNING = """\
WARNING: this worker listens on {host}:{port}, beyond this machine.
  llama.cpp's RPC protocol has NO authentication and NO encryption: anyone who can reach this port
  can run computations here and read or change what the worker holds. Never expose it to an open
  network. Safe setups:
    - a trusted, isolated LAN, with a firewall that lets only the client machine reach port {port};
    - or keep the worker on loopback (`fmgguf worker`, no --host) and reach it through an SSH tunnel
      from the client: `ssh -N -L {port}:127.0.0.1:{port} user@this-machine`, then `--rpc 127.0.0.1:{port}`.
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str, port: int = 0) -> int:
    """``port`` if it can be bound on ``host`` now (0: any free one); InvalidRequestError if not."""
    from fmgguf.errors import InvalidRequestError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InvalidRequestError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                      fix="pick another --port (0: any free one), or an address of this machine "
                                          "for --host") from None
        return int(s.getsockname()[1])


@click.command("worker")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=50052, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--device", "devices", multiple=True,
              help="Device(s) to serve: CPU, CUDA0, ... (repeatable or comma-separated; default: every GPU, "
                   "else the CPU).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="CPU threads (default: half the cores).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Cache large weight tensors in DIR, so a model loads faster the next time.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (read the warning it prints).")
@pass_app
def worker_cmd(app: AppContext, host: str, port: int, devices: tuple[str, ...], threads: int | None,
               cache_dir: str | None, allow_remote: bool) -> None:
    """Serve this machine's devices (CPU, GPUs) as an RPC worker for `--rpc HOST:PORT`, in the foreground.

    Each worker serves one client at a time. Stop it with Ctrl-C."""
    from fmgguf.errors import InvalidRequestError

    if ":" in host:
        raise InvalidRequestError(f"--host {host!r}: llama.cpp's RPC server takes IPv4 addresses",
                                  fix="use 127.0.0.1, 0.0.0.0 or this machine's IPv4 address")
    if not is_loopback(host) and not allow_remote:
        raise InvalidRequestError(
            f"--host {host} would expose an unauthenticated, unencrypted RPC worker to the network",
            fix="add --allow-remote on a trusted, firewalled LAN, or keep the default 127.0.0.1 and use an SSH "
                f"tunnel (ssh -N -L {port or 50052}:127.0.0.1:{port or 50052} user@this-machine)")
    if not is_loopback(host):
        click.echo(SECURITY_WARNING.format(host=host, port=port or 50052), err=True)
    port = _free_port(host, port)
    names = ",".join(n.strip() for d in devices for n in d.split(",") if n.strip()) or "-"
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    n_threads = threads or app.settings.n_threads or max(1, (os.cpu_count() or 2) // 2)
    code = serve(host, port, names, n_threads, os.path.abspath(cache_dir) if cache_dir else None)
    if code:
        sys.exit(code)


def serve(host: str, port: int, names: str, n_threads: int, cache_dir: str | None) -> int:
    """Start the worker child, say what it serves and when it is ready, and wait for it (Ctrl-C stops it)."""
    from fmgguf.runtime.rpc.rpc import wait_listening
    from fmgguf.runtime.rpc.rpc_worker import DEVICES_MARK

    started = time.perf_counter()
    cmd = [sys.executable, "-m", "fmgguf.runtime.rpc.rpc_worker", f"{host}:{port}", str(n_threads), cache_dir or "-",
           names]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        if not first.startswith(DEVICES_MARK):
            return proc.wait() or 1
        for d in json.loads(first[len(DEVICES_MARK):]):
            click.echo(f"  {d['name']:<8} {d['description'][:40]:<40} {human_bytes(d['free'])} free of "
                       f"{human_bytes(d['total'])}")
        probe_host = "127.0.0.1" if host == "0.0.0.0" else host  # noqa: S104 - we connect, not bind
        ready = wait_listening(probe_host, port, timeout=60, alive=lambda: proc.poll() is None)
        click.echo(f"fmgguf worker listening on {host}:{port} (protocol 7.0, {n_threads} threads, ready in "
                   f"{time.perf_counter() - started:.2f} s, port open after {ready:.2f} s); "
                   f"attach with --rpc {host}:{port}[@BUDGET]; Ctrl-C stops it", err=True)
        threading.Thread(target=_forward, args=(proc,), daemon=True).start()
        return proc.wait()
    except KeyboardInterrupt:
        click.echo("stopping the worker", err=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _forward(proc: subprocess.Popen) -> None:
    """The server's own log lines (client connected/closed) go on to our stdout."""
    assert proc.stdout is not None
    for line in proc.stdout:
        click.echo(line.rstrip("\n"))
