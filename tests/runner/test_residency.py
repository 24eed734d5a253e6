"""Several resident models: LRU eviction at max_loaded and when the fit plan says the next one does
not fit, pinned models never evicted nor idled out, keep-alive per model and per request, and the
seed's switch semantics next to all of it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fmgguf.errors import InsufficientMemoryError


def _keys(m) -> list[str]:
    return [i.key for i in m.loaded()]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three distinct small files (copies of two tiny models, so three keys)."""
    import shutil

    from fmgguf.testing import build_tiny_model

    out = tmp_path_factory.mktemp("three")
    a, b = build_tiny_model("qwen2", "unit", "F16"), build_tiny_model("llama", "unit", "F16")
    return [shutil.copyfile(a, out / "m-a.gguf"), shutil.copyfile(b, out / "m-b.gguf"),
            shutil.copyfile(b, out / "m-c.gguf")]


@pytest.mark.parametrize("isolation", ["process", "inprocess"])
def test_lru_eviction_and_pinning(runner_manager, three: list[Path], isolation: str) -> None:
    a, b, c = (str(p) for p in three)
    m = runner_manager(max_loaded=2, isolation=isolation)
    m.ensure_loaded(a, n_ctx=128)
    m.ensure_loaded(b, n_ctx=128)
    assert _keys(m) == ["m-a", "m-b"]
    m.generate_text("x", max_tokens=1, model="m-a")  # a is now the most recently used
    m.ensure_loaded(c, n_ctx=128)  # over the cap: the least recently used (b) goes
    assert sorted(_keys(m)) == ["m-a", "m-c"]
    m.ensure_loaded("m-a", pinned=True)  # already resident: just pinned
    m.generate_text("x", max_tokens=1, model="m-c")
    m.ensure_loaded(b, n_ctx=128)  # a is the least recently used but pinned: c goes
    assert sorted(_keys(m)) == ["m-a", "m-b"]
    assert {i.key: i.pinned for i in m.loaded()} == {"m-a": True, "m-b": False}
    assert m.current_model() is None  # ensure_loaded never selects
    with pytest.raises(Exception, match="no model is loaded"):
        m.generate_text("x", max_tokens=1)
    assert m.generate_text("x", max_tokens=1, model="m-b").model_id == "m-b"


def test_pinned_models_fill_the_cap(runner_manager, three: list[Path]) -> None:
    a, b, c = (str(p) for p in three)
    m = runner_manager(max_loaded=2)
    m.ensure_loaded(a, n_ctx=128, pinned=True)
    m.ensure_loaded(b, n_ctx=128, pinned=True)
    with pytest.raises(InsufficientMemoryError, match="pinned") as info:
        m.ensure_loaded(c, n_ctx=128)
    assert "FMGGUF_MAX_LOADED_MODELS" in info.value.fix
    assert sorted(_keys(m)) == ["m-a", "m-b"]
    assert m.unload("m-a") is True and _keys(m) == ["m-b"]


def test_switch_keeps_seed_semantics_beside_resident_models(runner_manager, three: list[Path]) -> None:
    a, b, c = three
    m = runner_manager(max_loaded=3)
    m.ensure_loaded(str(c), n_ctx=128, pinned=True)  # a pinned completion model beside the chat model
    m.load_file(a, n_ctx=128)
    assert m.current_model().key == "m-a"
    m.load_file(b, n_ctx=128)  # replaces the selected model, leaves the pinned one alone
    assert sorted(_keys(m)) == ["m-b", "m-c"] and m.current_model().key == "m-b"
    assert m.generate_text("x", max_tokens=1).model_id == "m-b"
    assert m.generate_text("x", max_tokens=1, model="m-c").model_id == "m-c"
    assert m.current_model().key == "m-b"  # naming another model does not change the selection
    m.select("m-c")
    assert m.current_model().key == "m-c" and sorted(_keys(m)) == ["m-b", "m-c"]
    assert m.unload() is True and _keys(m) == [] and m.current_model() is None


def test_keep_alive_per_model_and_per_request(runner_manager, three: list[Path]) -> None:
    a, b, c = (str(p) for p in three)
    m = runner_manager(keep_alive=0, max_loaded=3)  # the manager's default: stay loaded
    # (a model idles out while the others load and generate: its keep-alive outlasts those steps here)
    m.ensure_loaded(a, n_ctx=128, keep_alive=2.0)
    m.ensure_loaded(b, n_ctx=128)
    m.ensure_loaded(c, n_ctx=128, keep_alive=0.4, pinned=True)  # pinned: never idled out
    m.generate_text("x", max_tokens=1, model="m-b", keep_alive=2.5)  # per request
    info = {i.key: i for i in m.loaded()}
    assert info["m-a"].keep_alive == 2.0 and info["m-b"].keep_alive == 2.5 and info["m-c"].expires_in_s is None
    deadline = time.monotonic() + 10
    while len(m.loaded()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _keys(m) == ["m-c"]


def test_memory_budget_evicts_unpinned_models_before_giving_up(runner_manager, three: list[Path]) -> None:
    """When the fit plan says the next model does not fit in the memory left, unpinned models are
    unloaded (least recently used first) and the plan measured again; pinned ones stay. (Free RAM on
    a shared machine moves by hundreds of MiB, so "fits after one eviction" is not asserted here.)"""
    a, b, c = (str(p) for p in three)
    m = runner_manager(max_loaded=3)
    m.ensure_loaded(a, n_ctx=128, pinned=True)
    m.ensure_loaded(b, n_ctx=128)
    m.settings = m.settings.replace(ram_margin=1 << 50)  # nothing fits, whatever is unloaded
    with pytest.raises(InsufficientMemoryError, match="does not fit"):
        m.ensure_loaded(c, n_ctx=128)
    assert _keys(m) == ["m-a"]  # b was given up first; pinned a stayed


def test_other_load_options_load_a_resident_model_again(runner_manager, three: list[Path]) -> None:
    a = str(three[0])
    m = runner_manager()
    first = m.ensure_loaded(a, n_ctx=128)
    assert m.ensure_loaded("m-a").pid == first.pid  # no options: the resident one as it is
    assert m.ensure_loaded(a, n_ctx=128).pid == first.pid  # the same options: as it is
    longer = m.ensure_loaded(a, n_ctx=512)  # another context: loaded again
    assert longer.n_ctx == 512 and longer.pid != first.pid and _keys(m) == ["m-a"]


def test_the_earliest_keep_alive_runs_out_first(runner_manager, three: list[Path]) -> None:
    """The idle watcher sleeps until the *earliest* expiry: a 0.3 s model loaded after a 30 s one is
    unloaded within seconds, while the 30 s one stays."""
    a, b = str(three[0]), str(three[1])
    m = runner_manager(keep_alive=0, max_loaded=3)
    m.ensure_loaded(b, n_ctx=128, keep_alive=30)
    m.ensure_loaded(a, n_ctx=128, keep_alive=0.3)
    assert sorted(_keys(m)) == ["m-a", "m-b"]
    deadline = time.monotonic() + 5
    while "m-a" in _keys(m) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _keys(m) == ["m-b"]


def test_loading_another_model_keeps_the_pinned_selected_one(runner_manager, three: list[Path]) -> None:
    """`load_file` replaces the selected model, unless it is pinned: then both stay resident."""
    a, b = three[0], three[1]
    m = runner_manager(max_loaded=3)
    m.ensure_loaded(str(a), n_ctx=128, pinned=True)
    m.select("m-a")
    assert m.current_model().key == "m-a"
    m.load_file(b, n_ctx=128)
    assert sorted(_keys(m)) == ["m-a", "m-b"] and m.current_model().key == "m-b"
    assert {i.key: i.pinned for i in m.loaded()} == {"m-a": True, "m-b": False}
    assert m.generate_text("x", max_tokens=1, model="m-a").model_id == "m-a"
