"""The thread count llama.cpp would choose, the ``threads`` setting, and the per-slot reuse plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fmgguf.runtime.engine.kv_reuse import KV_REUSE_MIN, plan_reuse
from fmgguf.runtime.hw.threads import choose_threads, physical_cores


def _topology(root: Path, siblings: list[str]) -> Path:
    for cpu, mask in enumerate(siblings):
        d = root / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "thread_siblings").write_text(mask + "\n")
    return root


def test_hyperthreads_count_once_and_vm_cpus_each(tmp_path: Path) -> None:
    smt = _topology(tmp_path / "smt", ["3", "3", "c", "c"])  # 2 cores x 2 threads
    assert physical_cores([0, 1, 2, 3], smt) == 2
    assert physical_cores([0, 1], smt) == 1  # the affinity mask holds one core's two threads
    vm = _topology(tmp_path / "vm", ["1", "2"])  # every vCPU its own core (this machine's layout)
    assert physical_cores([0, 1], vm) == 2


def test_default_is_the_usable_cores_and_the_setting_wins() -> None:
    usable = len(os.sched_getaffinity(0))
    auto = choose_threads(None)
    assert auto.source == "cores" and 1 <= auto.n_threads <= usable and auto.cpus == usable
    assert auto.n_threads == auto.cores == physical_cores(sorted(os.sched_getaffinity(0)))  # one per core
    forced = choose_threads(3)
    assert forced.n_threads == 3 and forced.source == "setting"


def test_threads_setting_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from fmgguf.errors import ConfigError
    from fmgguf.settings import load_settings

    monkeypatch.setenv("FMGGUF_THREADS", "5")
    monkeypatch.setenv("FMGGUF_PARALLEL", "2")
    s = load_settings()
    assert s.n_threads == 5 and s.parallel == 2
    monkeypatch.setenv("FMGGUF_THREADS", "-1")
    with pytest.raises(ConfigError):
        load_settings()


def test_load_options_carry_the_thread_choice() -> None:
    from fmgguf.runtime.engine.engine import LoadOptions

    kw = LoadOptions(n_ctx=256).llama_kwargs()
    assert kw["n_threads"] == kw["n_threads_batch"] == choose_threads(None).n_threads
    assert kw["kv_unified"] is True and kw["n_seq_max"] == 5  # 4 slots and the FIM lane
    assert LoadOptions(n_threads=1, parallel=1).llama_kwargs()["n_seq_max"] == 1


def test_reuse_plan_prefix_and_moved_chunks() -> None:
    head, a, b, tail = [1, 2, 3], list(range(100, 100 + KV_REUSE_MIN)), list(range(300, 300 + KV_REUSE_MIN)), [9]
    cache = head + [50] * 40 + a + b
    plan = plan_reuse(cache, head + a + b + tail, can_shift=True)
    assert plan.prefix == 3 and plan.kept == 3 + len(a) + len(b)
    assert plan.moves == ((43, 3, len(a) + len(b)),)
    assert plan_reuse(cache, head + a + b + tail, can_shift=False).kept == 3
    assert plan_reuse(head + a, head + a, can_shift=True).kept == len(head + a) - 1  # the last token is decoded again
    assert plan_reuse([], head, can_shift=True).kept == 0
