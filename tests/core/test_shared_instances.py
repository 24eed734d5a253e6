"""No hidden singletons: the top-level get_* functions keep one instance per distinct settings (never the
first caller's for everyone), and library classes use the collaborators they are given or build their own
from their own settings."""

from __future__ import annotations

from pathlib import Path

from fmgguf.settings import load_settings


def _two_settings(tmp_path: Path):
    a = load_settings()
    return a, a.replace(home=tmp_path / "b", hf_endpoint="http://127.0.0.1:7")


def test_get_model_downloader_is_one_per_distinct_settings(tmp_path: Path) -> None:
    from fmgguf import get_model_downloader

    a, b = _two_settings(tmp_path)
    first = get_model_downloader(a)
    assert get_model_downloader(load_settings()) is first  # equal settings share it
    other = get_model_downloader(b)
    assert other is not first and other.settings == b and first.settings == a


def test_get_model_benchmarker_is_one_per_distinct_settings(tmp_path: Path) -> None:
    from fmgguf import get_model_benchmarker

    a, b = _two_settings(tmp_path)
    first = get_model_benchmarker(a)
    assert get_model_benchmarker(load_settings()) is first
    other = get_model_benchmarker(b)
    assert other is not first and other.settings == b and first.settings == a


def test_a_benchmarker_never_borrows_a_manager_built_from_other_settings(tmp_path: Path) -> None:
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.runtime.manager import ModelManager, get_model_manager

    a, b = _two_settings(tmp_path)
    get_model_manager(a)  # a process-wide manager exists, built from other settings
    assert ModelBenchmarker(b).manager.settings == b
    given = ModelManager(b)
    try:
        assert ModelBenchmarker(b, manager=given).manager is given
    finally:
        given.close()


def test_per_settings_cache_builds_once_per_key() -> None:
    from fmgguf._util import PerSettings

    built: list[object] = []
    cache: PerSettings[list] = PerSettings(lambda s: built.append(s) or [s])
    a = load_settings()
    assert cache.get(a) is cache.get(load_settings()) and len(built) == 1
    assert cache.get(a.replace(keep_alive=1.0)) is not cache.get(a) and len(built) == 2
