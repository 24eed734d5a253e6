"""Serving many at once: each model has its own queue, so two models stream side by side; FIM goes
ahead of chat work queued for the same model; one runner serves several streams under their own
request ids, each getting exactly its own frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fmgguf.runtime.engine.generation import GenerationStream


def test_two_models_stream_side_by_side(runner_manager, good_path: Path, other_path: Path) -> None:
    """A long stream holds its model's slot, not the manager: another model answers meanwhile."""
    m = runner_manager(parallel=1)
    m.ensure_loaded(str(good_path), n_ctx=256)
    m.ensure_loaded(str(other_path), n_ctx=256)
    long = m.generate_text("def f(x):", max_tokens=200, temperature=0.8, seed=1, stream=True, model=good_path.stem)
    assert isinstance(long, GenerationStream) and next(long)
    states = {i.key: i.state for i in m.loaded()}
    assert states == {good_path.stem: "busy", other_path.stem: "ready"}
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(
        m.generate_text("x", max_tokens=3, model=other_path.stem).model_id))
    t.start()
    t.join(timeout=30)
    assert done == [other_path.stem]  # answered while the first model's stream is still open
    assert not long.done
    long.cancel()
    assert {i.key: i.state for i in m.loaded()} == {good_path.stem: "ready", other_path.stem: "ready"}


def test_fim_goes_ahead_of_chat_queued_for_the_same_model(runner_manager, good_path: Path) -> None:
    m = runner_manager(parallel=1)
    m.load_file(good_path, n_ctx=512)
    holder = m.generate_text("hold", max_tokens=300, temperature=0.8, seed=1, stream=True)
    assert next(holder)
    finished: list[str] = []

    def run(name: str, call) -> None:  # noqa: ANN001
        call()
        finished.append(name)

    first = threading.Thread(target=run, args=("completion", lambda: m.generate_text("a", max_tokens=4)))
    first.start()
    while m.queue_depth < 1:
        time.sleep(0.01)
    second = threading.Thread(target=run, args=("fim", lambda: m.fill_in_middle("def f(x):\n    ", "\n", max_tokens=4)))
    second.start()
    while m.queue_depth < 2:
        time.sleep(0.01)
    holder.cancel()
    first.join(timeout=60)
    second.join(timeout=60)
    assert finished == ["fim", "completion"]  # queued second, served first


def test_one_runner_serves_concurrent_streams_each_its_own(good_path: Path) -> None:
    """Several streams in flight on one runner (the proxy multiplexes them by request id, whoever
    reads the socket hands the others their frames): each consumer gets exactly its own text."""
    from fmgguf.runtime.engine.engine import GenerationStats, LoadOptions
    from fmgguf.runtime.runner.proxy import EngineProxy

    proxy = EngineProxy.start(good_path, LoadOptions(n_ctx=1024, parallel=4), slots=4)
    try:
        prompts = [proxy.tokenize(f"def task_{i}(x):", add_bos=proxy.add_bos) for i in range(4)]

        def run(tokens: list[int], seed: int) -> str:
            return "".join(proxy.stream(tokens, GenerationStats(), max_tokens=12, temperature=0.0, seed=seed))

        alone = [run(p, i) for i, p in enumerate(prompts)]
        together: dict[int, str] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                together[i] = run(prompts[i], i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and [together[i] for i in range(4)] == alone
    finally:
        proxy.close()


@pytest.mark.parametrize("isolation", ["process", "inprocess"])
def test_model_states(runner_manager, good_path: Path, isolation: str) -> None:
    m = runner_manager(isolation=isolation)
    m.load_file(good_path, n_ctx=256)
    assert m.current_model().state == "ready"
    with m.generate_text("x", max_tokens=50, stream=True) as s:
        next(s)
        assert m.current_model().state == "busy" and m.current_model().active == 1
    assert m.current_model().state == "ready"


def test_several_streams_of_one_model_run_at_once(runner_manager, good_path: Path) -> None:
    """The manager sends a model's runner as many streams as it has slots: a second request to the
    same model is answered while the first one's stream is still open."""
    m = runner_manager(parallel=4)
    m.load_file(good_path, n_ctx=1024)
    assert m.current_model() is not None
    long = m.generate_text("def f(x):", max_tokens=300, temperature=0.8, seed=1, stream=True)
    assert next(long)
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(m.generate_text("def g(y):", max_tokens=3).completion_tokens))
    t.start()
    t.join(timeout=60)
    assert done and done[0] >= 1 and not long.done
    long.cancel()
