"""Switching models: the old model gives its memory back before the fit plan measures free memory,
and a switch that cannot go through says what happened and leaves the manager consistent."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from fmgguf.errors import GGUFError, InsufficientMemoryError, InvalidRequestError

#: a context this long gives the tiny llama model a 256 MiB KV cache (2 layers x 128 x K,V x f16)
BIG_CTX = 1 << 18


def test_old_model_is_released_before_the_plan_measures_memory(fresh_manager, llama_path: Path,
                                                                 qwen_path: Path) -> None:
    m = fresh_manager(isolation="inprocess")  # the RSS measured is this process's
    m.load_file(llama_path, model_id="big-kv", n_ctx=BIG_CTX, flash_attn=True)
    kv = int(m.current_model().buffers["kv"])
    assert kv >= 200 * 1024**2
    me = psutil.Process()
    rss_loaded = me.memory_info().rss
    seen: dict[str, object] = {}

    def progress(stage: str, _fraction: float) -> None:
        if stage == "plan" and "rss" not in seen:  # the planner is about to measure free memory
            seen["rss"] = me.memory_info().rss
            seen["loaded"] = m.current_model()

    result = m.load_file(qwen_path, model_id="next", n_ctx=512, progress=progress)
    assert result.success and m.current_model().id == "next"
    # the old model's KV cache is not counted against the new model: it is back with the OS
    assert rss_loaded - int(seen["rss"]) > kv // 2, (rss_loaded, seen["rss"], kv)
    assert seen["loaded"] is None, "the old model was still loaded when the new one was planned"


def test_switch_that_does_not_fit_unloads_the_old_model_and_says_so(fresh_manager, llama_path: Path,
                                                                      qwen_path: Path) -> None:
    m = fresh_manager()
    m.load_file(llama_path, model_id="old", n_ctx=256)
    roomy = m.settings
    m.settings = roomy.replace(ram_margin=1 << 50)  # no RAM left for any model
    with pytest.raises(InsufficientMemoryError) as info:
        m.load_file(qwen_path, model_id="new", n_ctx=256)
    msg = str(info.value)
    assert "does not fit" in msg and "old was unloaded" in msg and "\n" not in msg
    assert info.value.fix and msg.endswith(info.value.fix)
    assert m.current_model() is None
    with pytest.raises(Exception, match="no model is loaded"):
        m.generate_text("x", max_tokens=1)
    m.settings = roomy  # the "won't fit" plan is not kept: with memory back the same file loads
    assert m.load_file(qwen_path, model_id="new", n_ctx=256).success
    assert m.current_model().id == "new"


def test_refusals_before_any_memory_is_touched_keep_the_old_model(fresh_manager, llama_path: Path,
                                                                  qwen_path: Path, tmp_path: Path) -> None:
    m = fresh_manager()
    m.load_file(llama_path, model_id="old", n_ctx=256)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(qwen_path.read_bytes()[:4096])
    with pytest.raises(GGUFError):
        m.load_file(broken)
    with pytest.raises(InvalidRequestError, match="too small"):
        m.load_file(qwen_path, n_ctx=8)
    with pytest.raises(InvalidRequestError, match="KV cache type"):
        m.load_file(qwen_path, n_ctx=256, type_k="q9_9")
    with pytest.raises(InvalidRequestError, match="not a number"):
        m.load_file(qwen_path, n_ctx="lots")
    assert m.current_model().id == "old"
    assert m.generate_text("def f(", max_tokens=2, temperature=0).completion_tokens >= 1
