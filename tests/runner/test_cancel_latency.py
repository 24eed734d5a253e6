"""A cancel reaches the runner at once: the stream ends within a second or two of the cancel, the
runner stopped by it (still alive, the same process), well before the 10 s after which a runner that
does not stop is killed as hung. (Without this, a cancel that never reached the runner was noticed
only through that hang timeout.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

#: seconds from the cancel to the end of the stream (the runner's hang timeout is 10 s)
BOUND_S = 2.0
MAX_TOKENS = 2000


def _start(runner_manager, good_path: Path):  # noqa: ANN001, ANN202
    m = runner_manager()
    m.load_file(good_path, model_id="good", n_ctx=2048)
    pid = m.current_model().pid
    stream = m.generate_text("def f(x):", max_tokens=MAX_TOKENS, temperature=0.8, seed=1, stream=True)
    return m, pid, stream


def _stopped_by_the_cancel(m, pid: int, stream) -> None:  # noqa: ANN001
    result = stream.result
    assert result is not None and result.finish_reason == "cancelled", result
    assert result.completion_tokens < MAX_TOKENS
    assert not m.busy
    assert m.current_model().pid == pid  # the runner stopped; it was not killed as hung
    t = time.monotonic()
    assert m.generate_text("def g(y):", max_tokens=2, temperature=0).completion_tokens >= 1
    assert time.monotonic() - t < 30


def test_cancel_while_another_thread_reads_reaches_the_runner_at_once(runner_manager, good_path: Path) -> None:
    """A server's pump thread is blocked reading the stream; the request handler cancels it."""
    m, pid, stream = _start(runner_manager, good_path)
    pieces: list[str] = []
    errors: list[BaseException] = []
    ended: list[float] = []

    def consume() -> None:
        try:
            for piece in stream:
                pieces.append(piece)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            ended.append(time.monotonic())

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 60
    while len(pieces) < 3 and not ended and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(pieces) >= 3 and not ended, "the stream did not get going"
    cancelled = time.monotonic()
    stream.cancel()
    reader.join(timeout=30)
    assert not reader.is_alive() and not errors, errors
    latency = ended[0] - cancelled
    assert latency < BOUND_S, f"the stream ended {latency:.2f} s after the cancel"
    _stopped_by_the_cancel(m, pid, stream)


def test_closing_a_stream_stops_the_runner_at_once(runner_manager, good_path: Path) -> None:
    """The consumer itself stops reading (a client that went away) and closes the stream."""
    m, pid, stream = _start(runner_manager, good_path)
    for _ in range(3):
        next(stream)
    closed = time.monotonic()
    stream.close()
    latency = time.monotonic() - closed
    assert latency < BOUND_S, f"closing the stream took {latency:.2f} s"
    _stopped_by_the_cancel(m, pid, stream)



def test_a_stream_starts_no_thread_in_the_parent(runner_manager, good_path: Path) -> None:
    """The cancel flag's own hook passes a cancel on: a stream through a runner costs the parent no
    thread (one started per stream ran beside the runner's first decode and delayed the first token)."""
    m = runner_manager()
    m.load_file(good_path, model_id="good", n_ctx=2048)
    m.generate_text("def f(x):", max_tokens=2, temperature=0)
    before = set(threading.enumerate())
    stream = m.generate_text("def f(x):", max_tokens=MAX_TOKENS, temperature=0.8, seed=1, stream=True)
    for _ in range(3):
        next(stream)
    started = set(threading.enumerate()) - before
    stream.close()
    assert not started, sorted(t.name for t in started)
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
