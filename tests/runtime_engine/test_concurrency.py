"""Concurrent callers queue and never corrupt each other; a full queue says busy; idle models unload."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fmgguf.errors import BusyError


def test_threads_queue_and_each_gets_its_own_answer(fresh_manager, qwen_path: Path) -> None:
    # one slot, so the callers really queue: batched beside each other, llama.cpp's sums over a shared
    # KV cache round differently and a sampled token may flip (tests/runtime_engine/test_slots.py
    # covers the batched path with greedy text)
    manager = fresh_manager(max_queue=8, parallel=1)
    manager.load_file(qwen_path, n_ctx=512)
    prompts = [f"def task_{i}(x):" for i in range(5)]
    expected = {p: manager.generate_text(p, max_tokens=10, temperature=0.8, seed=i).text
                for i, p in enumerate(prompts)}
    results: dict[str, str] = {}
    depths: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(prompts) + 1)

    def worker(i: int, p: str) -> None:
        try:
            start.wait()
            results[p] = manager.generate_text(p, max_tokens=10, temperature=0.8, seed=i).text
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    start.wait()
    for _ in range(50):
        depths.append(manager.queue_depth)
        time.sleep(0.002)
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == expected  # no interleaving: every caller got exactly its own sequential answer
    assert max(depths) >= 1  # they really waited in line
    assert manager.queue_depth == 0 and not manager.busy


def test_full_queue_raises_busy(fresh_manager, llama_path: Path) -> None:
    m = fresh_manager(max_queue=1, parallel=1)  # one slot: the second caller waits, the third is refused
    m.load_file(llama_path, n_ctx=128)
    holder = m.generate_text("hold", max_tokens=50, stream=True)  # holds the model until it ends
    waited: list = []
    waiter = threading.Thread(target=lambda: waited.append(m.generate_text("wait", max_tokens=3)))
    waiter.start()
    for _ in range(200):
        if m.queue_depth == 1:
            break
        time.sleep(0.01)
    assert m.queue_depth == 1
    with pytest.raises(BusyError) as err:
        m.generate_text("third", max_tokens=3)
    assert "queued" in str(err.value)
    holder.cancel()
    waiter.join(timeout=30)
    assert waited and waited[0].completion_tokens >= 1
    assert not m.busy


def test_queue_wait_timeout_is_busy(fresh_manager, llama_path: Path) -> None:
    m = fresh_manager(queue_timeout=0.2, parallel=1)
    m.load_file(llama_path, n_ctx=128)
    with m.generate_text("hold", max_tokens=50, stream=True):
        t = time.monotonic()
        with pytest.raises(BusyError):
            m.generate_text("late", max_tokens=2)
        assert 0.15 < time.monotonic() - t < 5
    assert not m.busy and m.queue_depth == 0


def test_idle_model_is_unloaded_after_keep_alive(fresh_manager, llama_path: Path) -> None:
    m = fresh_manager(keep_alive=0.6)
    m.load_file(llama_path, n_ctx=128)
    m.generate_text("a", max_tokens=2)
    time.sleep(0.3)
    m.generate_text("b", max_tokens=2)  # use resets the clock
    time.sleep(0.4)
    assert m.current_model() is not None
    deadline = time.monotonic() + 5
    while m.current_model() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.current_model() is None


def test_keep_alive_waits_for_a_running_stream(fresh_manager, llama_path: Path) -> None:
    m = fresh_manager(keep_alive=0.3)
    m.load_file(llama_path, n_ctx=256)
    stream = m.generate_text("a", max_tokens=100, stream=True)
    next(stream)
    time.sleep(0.6)
    assert m.current_model() is not None  # in use: never unloaded under a caller
    stream.cancel()
    list(stream)
    deadline = time.monotonic() + 5
    while m.current_model() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.current_model() is None
