"""Real RPC workers (`fmgguf worker`, llama.cpp's own server) on ephemeral loopback ports.

Each worker runs in its own session, so a test can SIGKILL it (and its server child) for real.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def fmgguf_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fmgguf", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def start_worker(*extra: str, timeout: float = 60.0) -> Worker:
    proc = subprocess.Popen(fmgguf_cmd("worker", "--port", "0", "--threads", "1", *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=child_env())
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream) -> None:  # noqa: ANN001
        for line in stream:
            lines.put(line)
        lines.put(None)

    for s in (proc.stdout, proc.stderr):
        threading.Thread(target=pump, args=(s,), daemon=True).start()
    seen: list[str] = []
    closed = 0
    while closed < 2:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            break
        if line is None:
            closed += 1
            continue
        seen.append(line)
        if "worker listening on " in line:
            port = int(line.split("worker listening on ")[1].split()[0].rsplit(":", 1)[1])
            return Worker(proc, port, seen)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("fmgguf worker did not start: " + " | ".join(x.strip() for x in seen[-5:]), pytrace=False)


@pytest.fixture()
def workers() -> Iterator[list[Worker]]:
    """Two CPU workers on ephemeral loopback ports."""
    started = [start_worker(), start_worker()]
    yield started
    for w in started:
        w.kill()


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    from fmgguf.testing import build_tiny_model

    return build_tiny_model("qwen2", "unit", "F16")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
