"""The runner protocol's generic parts (no llama.cpp): dataclasses field by field, errors as their own
class, crash messages, and one manager per settings."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import pytest

from fmgguf.errors import ConfigError, ContextOverflowError, EngineError, InsufficientMemoryError
from fmgguf.runtime.runner.protocol import Channel, ChannelClosed, error_from_wire, error_to_wire, from_wire, to_wire


def test_dataclasses_travel_field_by_field() -> None:
    from fmgguf.runtime.engine.engine import GenerationStats, LoadOptions

    opts = LoadOptions(n_ctx=256, n_gpu_layers=3, tensor_split=(3.0, 1.0), split_mode="row", type_k="q8_0")
    back = from_wire(LoadOptions, to_wire(opts))
    assert back == opts and isinstance(back.tensor_split, tuple)

    @dataclass
    class NewerStats(GenerationStats):  # a field another helper adds on one side
        cached_prefix: int = 0

    wire = to_wire(NewerStats(prompt_tokens=5, completion_tokens=2, finish_reason="length", cached_prefix=4))
    assert wire["cached_prefix"] == 4
    assert from_wire(NewerStats, wire).cached_prefix == 4  # flows through untouched
    older = from_wire(GenerationStats, wire)  # a side that does not know it drops it
    assert older.prompt_tokens == 5 and older.finish_reason == "length"


def test_errors_cross_as_their_own_class() -> None:
    err = InsufficientMemoryError("out of memory while generating", fix="use a smaller quant", n_ctx=4096)
    back = error_from_wire(error_to_wire(err))
    assert type(back) is InsufficientMemoryError and back.fix == err.fix and back.details["n_ctx"] == 4096
    assert type(error_from_wire(error_to_wire(ContextOverflowError("too long")))) is ContextOverflowError
    odd = error_from_wire(error_to_wire(RuntimeError("boom\nline two")))
    assert type(odd) is EngineError and "boom line two" in odd.message
    assert type(error_from_wire({"type": "NotAnError", "message": "x"})) is EngineError


def test_channel_frames_and_end_of_stream() -> None:
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    big = "x" * 300_000
    t = threading.Thread(target=lambda: left.send({"id": 1, "piece": big, "emoji": "✓"}))
    t.start()
    assert right.recv() == {"id": 1, "piece": big, "emoji": "✓"}
    t.join()
    left.close()
    with pytest.raises(ChannelClosed):
        right.recv()


def test_crash_error_names_signal_and_the_assert_line() -> None:
    from fmgguf.runtime.runner.proxy import crash_error

    lines = ["llama_model_loader: loaded meta data", "/tmp/x/vendor/llama.cpp/ggml/src/ops.cpp:1: GGML_ASSERT(eps >= 0.0f) failed",
             "/tmp/x/vendor/llama.cpp/ggml/src/ops.cpp:1: GGML_ASSERT(eps >= 0.0f) failed"] + [f"noise {i}" for i in range(6)]
    err = crash_error("m:Q4_K_M", -6, "generating", lines, 123)
    msg = str(err)
    assert "killed by SIGABRT" in msg and "m:Q4_K_M" in msg and "while generating" in msg
    assert msg.count("GGML_ASSERT") == 1 and "/tmp/x" not in msg and "noise 5" in msg
    assert err.details == {"model": "m:Q4_K_M", "signal": "SIGABRT", "exit_code": -6, "pid": 123}
    assert "out-of-memory" in crash_error("m", -9, "loading", [], 1).fix
    assert "exit code 3" in str(crash_error("m", 3, "loading", [], 1))


def test_get_model_manager_is_one_per_settings(tmp_path) -> None:
    from fmgguf.runtime import get_model_manager
    from fmgguf.settings import load_settings

    s1, s2 = load_settings(home=tmp_path / "one"), load_settings(home=tmp_path / "two")
    m1 = get_model_manager(s1)
    assert get_model_manager(s1) is m1 and get_model_manager(load_settings(home=tmp_path / "one")) is m1
    assert get_model_manager(s2) is not m1 and get_model_manager(s2).settings == s2
    assert m1.isolation == "process" and get_model_manager(s1, isolation="inprocess").isolation == "inprocess"
    assert get_model_manager(s1, isolation="inprocess") is not m1


def test_isolation_and_cap_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from fmgguf.settings import load_settings

    monkeypatch.setenv("FMGGUF_ISOLATION", "inprocess")
    monkeypatch.setenv("FMGGUF_MAX_LOADED_MODELS", "2")
    s = load_settings()
    assert s.isolation == "inprocess" and s.max_loaded_models == 2
    monkeypatch.setenv("FMGGUF_ISOLATION", "thread")
    with pytest.raises(ConfigError, match="isolation"):
        load_settings()
    monkeypatch.setenv("FMGGUF_ISOLATION", "process")
    monkeypatch.setenv("FMGGUF_MAX_LOADED_MODELS", "0")
    with pytest.raises(ConfigError, match="max_loaded_models"):
        load_settings()


def test_cancel_flag_calls_its_hooks_once_in_the_setting_thread() -> None:
    """How a runner's proxy passes a cancel on without a thread of its own per stream."""
    from fmgguf.runtime.engine.engine_api import CancelFlag

    flag = CancelFlag()
    calls: list[str] = []
    flag.on_set(lambda: calls.append(threading.current_thread().name))
    unhook = flag.on_set(lambda: calls.append("unhooked"))
    unhook()
    setter = threading.Thread(target=flag.set, name="setter")
    setter.start()
    setter.join()
    flag.set()  # a second set calls nothing again
    assert calls == ["setter"] and flag.is_set() and flag.wait(0)
    flag.on_set(lambda: calls.append("late"))  # registered after the set: called at once
    assert calls == ["setter", "late"]
