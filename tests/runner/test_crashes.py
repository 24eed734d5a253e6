"""A runner that dies (killed mid-stream, or aborted by llama.cpp on a lying file at load or at the
first decode) is a clear error for the call in flight and nothing else: the manager stays usable,
the other resident models keep their runners, the next request starts the runner again, and three
crashes in a row mark the model broken, on disk, until its file changes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fmgguf.errors import ModelBrokenError, RunnerCrashedError, exit_code_for, http_status_for


def _pids(m) -> dict[str, int]:
    return {info.key: info.pid for info in m.loaded()}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT])
def test_runner_killed_mid_stream(runner_manager, good_path: Path, sig: signal.Signals) -> None:
    m = runner_manager()
    m.load_file(good_path, model_id="good", n_ctx=512)
    pid = m.current_model().pid
    assert pid and pid != os.getpid()
    stream = m.generate_text("def f(x):", max_tokens=400, temperature=0.8, seed=1, stream=True)
    assert next(stream)
    os.kill(pid, sig)
    with pytest.raises(RunnerCrashedError) as info:
        for _ in stream:
            pass
    err = info.value
    msg = str(err)
    assert sig.name in msg and "good" in msg and "\n" not in msg
    assert err.details["signal"] == sig.name and err.details["pid"] == pid and err.fix and msg.endswith(err.fix)
    assert http_status_for(err) == 502 and exit_code_for(err) != 0
    assert not m.busy and m.current_model() is None  # the dead runner is gone, the manager is free
    # the next request starts the selected model again, in a new runner
    again = m.generate_text("def f(x):", max_tokens=3, temperature=0)
    assert again.completion_tokens >= 1 and again.model_id == "good"
    assert m.current_model().pid not in (None, pid)
    assert m.sup.health.get("good") is None  # a generation that finished clears the crash count


def test_aborting_file_at_first_decode_leaves_the_other_model_serving(runner_manager, good_path: Path,
                                                                       lying_files: dict[str, Path]) -> None:
    m = runner_manager(trusting=True)
    m.load_file(good_path, model_id="good", n_ctx=256)
    good_pid = m.current_model().pid
    bad = lying_files["nan-rms-eps"]
    assert m.ensure_loaded(str(bad), n_ctx=128).key == "nan-rms-eps"  # it loads; the first decode aborts
    assert set(_pids(m)) == {"good", "nan-rms-eps"}
    with pytest.raises(RunnerCrashedError) as info:
        m.generate_text("def f(x):", max_tokens=4, model="nan-rms-eps")
    msg = str(info.value)
    assert "SIGABRT" in msg and "GGML_ASSERT(eps >= 0.0f)" in msg, msg  # llama.cpp's own last words
    assert _pids(m) == {"good": good_pid}  # the good model never noticed
    assert m.current_model().id == "good"
    assert m.generate_text("def f(x):", max_tokens=3, temperature=0).completion_tokens >= 1


def test_aborting_file_at_load(runner_manager, good_path: Path, lying_files: dict[str, Path]) -> None:
    m = runner_manager(trusting=True)
    m.ensure_loaded(str(good_path), n_ctx=256)
    with pytest.raises(RunnerCrashedError) as info:
        m.ensure_loaded(str(lying_files["moe-used-above-count"]), n_ctx=128)
    assert "SIGABRT" in str(info.value) and "while loading the model" in str(info.value)
    assert [i.key for i in m.loaded()] == [good_path.stem]
    assert m.generate_text("x", max_tokens=2, model=good_path.stem).completion_tokens >= 1


def test_three_crashes_in_a_row_mark_a_model_broken(runner_manager, lying_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from fmgguf.runtime.runner.health import HealthBook

    m = runner_manager(trusting=True)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(lying_files["neg-rms-eps"].read_bytes())
    started = time.monotonic()
    for n in (1, 2, 3):
        with pytest.raises(RunnerCrashedError) as info:
            m.generate_text("x", max_tokens=2, model=str(bad))
        assert ("marked broken" in str(info.value)) is (n == 3)
    assert time.monotonic() - started >= 0.25 + 0.5  # restarts backed off
    t = time.monotonic()
    with pytest.raises(ModelBrokenError) as broken:
        m.generate_text("x", max_tokens=2, model=str(bad))
    assert time.monotonic() - t < 1.0  # refused without starting a runner
    assert http_status_for(broken.value) == 503 and "crashed 3 times" in str(broken.value)
    assert "GGML_ASSERT" in str(broken.value)  # the reason is kept
    # on disk, for every process using this home (the server's status, `fmgguf ls`)
    rec = HealthBook(m.settings.home).broken()["bad"]
    assert rec.crashes == 3 and rec.signal == "SIGABRT"
    # a changed file (re-downloaded, re-imported) starts afresh
    os.utime(bad, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert HealthBook(m.settings.home).broken() == {}
    with pytest.raises(RunnerCrashedError) as again:
        m.generate_text("x", max_tokens=2, model=str(bad))
    assert "marked broken" not in str(again.value)  # the new file's first crash, not the old file's fourth
    rec = HealthBook(m.settings.home).get("bad", bad)
    assert rec is not None and rec.crashes == 1 and not rec.broken


def _started_at(pid: int) -> float:
    """When process ``pid`` started, on the time.time() clock (/proc's start time, in clock ticks since
    boot, is floored to the tick: up to 10 ms early)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(after_name[19])  # field 22 of proc(5), starttime; field 3 is after_name[0]
    boot_epoch = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot_epoch + ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process start times from /proc (Linux)")
def test_each_restart_starts_its_backoff_after_the_crash(runner_manager, lying_files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """The new runner process itself starts backoff(n) after crash n (not just the call returning
    that late: a runner's start-up alone takes longer than the first backoffs)."""
    from fmgguf.runtime.runner.health import HealthBook, backoff

    m = runner_manager(trusting=True)
    bad = tmp_path / "late.gguf"
    bad.write_bytes(lying_files["neg-rms-eps"].read_bytes())  # loads; aborts at the first decode
    book = HealthBook(m.settings.home)
    m.ensure_loaded(str(bad), n_ctx=128)
    for n in (1, 2):
        with pytest.raises(RunnerCrashedError):
            m.generate_text("x", max_tokens=2, model="late")
        rec = book.get("late", bad)
        assert rec is not None and rec.crashes == n and not rec.broken
        restarted = m.ensure_loaded(str(bad), n_ctx=128)  # at once: the restart must wait, not the caller
        waited = _started_at(restarted.pid) - rec.at
        assert waited >= backoff(n) - 0.02, f"restart {n} began {waited:.3f} s after the crash, backoff is {backoff(n)}"
    assert m.runner_restarts == 2


def test_two_resident_models_one_killed_while_the_other_streams(runner_manager, good_path: Path,
                                                                other_path: Path) -> None:
    m = runner_manager()
    a = m.ensure_loaded(str(good_path), n_ctx=512)
    b = m.ensure_loaded(str(other_path), n_ctx=256)
    stream = m.generate_text("def f(x):", max_tokens=60, temperature=0.7, seed=2, stream=True, model=a.key)
    first = next(stream)
    os.kill(b.pid, signal.SIGKILL)
    rest = "".join(stream)
    assert stream.result.finish_reason in ("length", "stop") and (first + rest) == stream.result.text
    # b's death is noticed at its next use, which restarts it
    out = m.generate_text("def f(x):", max_tokens=3, model=b.key)
    assert out.completion_tokens >= 1
    pids = _pids(m)
    assert pids[a.key] == a.pid and pids[b.key] != b.pid


@pytest.mark.parametrize("lie", ["nan-rms-eps", "moe-used-zero"])
def test_cli_on_an_aborting_file_exits_with_one_line(lying_files: dict[str, Path], lie: str) -> None:
    """`fmgguf run FILE` on a file that aborts llama.cpp (at the first decode, at load): the CLI itself
    never dies of the signal; it exits non-zero with one line (the runner's crash, or the validator's
    refusal once the validator knows the lie) and no traceback."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fmgguf", "run", str(lying_files[lie]), "def f(x):",
                           "--max-tokens", "4", "--ctx", "128"], capture_output=True, text=True, timeout=180)
    assert proc.returncode > 0, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and lines, proc.stderr
    last = lines[-1]
    assert "SIGABRT" in last or "GGUF" in last or lie in last, last


def test_a_frozen_runner_is_killed_when_its_stream_is_cancelled(runner_manager, good_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that stops answering (SIGSTOP here; a hung decode in life) cannot hold the manager:
    a cancelled stream waits CANCEL_GRACE_S for it to stop, then kills it."""
    import threading

    import fmgguf.runtime.runner.proxy as proxy

    monkeypatch.setattr(proxy, "CANCEL_GRACE_S", 1.0)
    m = runner_manager()
    m.load_file(good_path, model_id="good", n_ctx=512)
    pid = m.current_model().pid
    stream = m.generate_text("def f(x):", max_tokens=400, temperature=0.8, seed=1, stream=True)
    assert next(stream)
    os.kill(pid, signal.SIGSTOP)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in stream:
                pass
        except RunnerCrashedError as exc:
            errors.append(exc)

    reader = threading.Thread(target=consume)  # blocked on the frozen runner, as a server's pump thread is
    reader.start()
    time.sleep(0.3)
    t = time.monotonic()
    stream.cancel()  # what a client that goes away does
    reader.join(timeout=15)
    assert not reader.is_alive() and time.monotonic() - t < 8
    assert errors and "stopped answering" in str(errors[0]) and "good" in str(errors[0])
    assert not m.busy
    with pytest.raises(ProcessLookupError):  # killed, not left frozen
        os.kill(pid, 0)
    assert m.generate_text("def f(x):", max_tokens=2).completion_tokens >= 1  # started again
    assert m.current_model().pid != pid
