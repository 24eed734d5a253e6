"""An idle runner leaves the CPU alone: llama.cpp's OpenMP worker threads stop spinning soon after a
stream's last token (libgomp's default kept a core busy for ~20 ms after every stream, beside the
next model's first decode on a small machine)."""

from __future__ import annotations

import glob
import time
from pathlib import Path

import pytest

from fmgguf.runtime.engine.load_options import OMP_SPIN_COUNT


def _cpu_ns(pid: int) -> int:
    """CPU time of all of ``pid``'s threads, in ns (schedstat: no clock-tick rounding)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def _idle_cpu_ms(m, path: Path) -> tuple[bytes | None, float]:  # noqa: ANN001
    """The runner's GOMP_SPINCOUNT and the least CPU (ms) it used in the 0.3 s after a stream, of three."""
    m.load_file(path, model_id="good", n_ctx=512)
    pid = m.current_model().pid
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
    burnt = []
    for _ in range(3):
        m.generate_text("def f(x):", max_tokens=8, temperature=0)
        before = _cpu_ns(pid)
        time.sleep(0.3)
        burnt.append((_cpu_ns(pid) - before) / 1e6)
    m.unload()
    return env.get(b"GOMP_SPINCOUNT"), min(burnt)


def test_a_runner_bounds_openmp_spinning(runner_manager, good_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the same runner with libgomp's default spin count (set by hand, which is kept)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    spin, default_ms = _idle_cpu_ms(runner_manager(), good_path)
    assert spin == b"300000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    spin, bounded_ms = _idle_cpu_ms(runner_manager(), good_path)
    assert spin == OMP_SPIN_COUNT.encode()
    assert bounded_ms < default_ms / 2, f"idle CPU after a stream: {bounded_ms:.2f} ms, default {default_ms:.2f} ms"


def test_an_explicit_openmp_setting_is_kept() -> None:
    from fmgguf.runtime.engine.load_options import bound_omp_spin

    env = {"OMP_WAIT_POLICY": "active"}
    bound_omp_spin(env)
    assert "GOMP_SPINCOUNT" not in env
    env = {"GOMP_SPINCOUNT": "5"}
    bound_omp_spin(env)
    assert env == {"GOMP_SPINCOUNT": "5"}
    env = {}
    bound_omp_spin(env)
    assert env == {"GOMP_SPINCOUNT": OMP_SPIN_COUNT}
