"""The real-model fetch (fmgguf.download.wheel_model) against local wheels served to the real pip
(PIP_NO_INDEX + PIP_FIND_LINKS): pinned wheel hashes, the GGUF hashed while it is joined, the cache,
offline; a file split over ordered wheels: joined in order, resumable per part, a wrong part named."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fmgguf.download.wheel_model import WheelModel, WheelPart, cache_path, cached, fetch
from fmgguf.errors import DownloadError, IntegrityError, OfflineError
from fmgguf.testing.wheels import build_wheel, split_wheels

MEMBER = "fake_model/model.gguf"
PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def _wheel(where: Path, payload: bytes = PAYLOAD, dist: str = "fake_model_pkg", member: str = MEMBER) -> Path:
    return build_wheel(where, dist, member, payload)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(wheel: Path, payload: bytes = PAYLOAD) -> WheelModel:
    part = WheelPart("fake-model-pkg", "1.0.0", _sha(wheel.read_bytes()), MEMBER)
    return WheelModel(key="fake-model-pkg-1.0.0", file_name="model.gguf", size=len(payload), sha256=_sha(payload),
                      parts=(part,), license="apache-2.0", source="test")


def _split(links: Path, payload: bytes = PAYLOAD, n: int = 3) -> WheelModel:
    """``payload`` cut raw into ``n`` slices, slice i in the wheel fake-split-part<i> as data/part0<i>.bin."""
    parts = tuple(WheelPart(p["package"], p["version"], p["wheel_sha256"], p["member"]) for p in split_wheels(links, payload, n))
    return WheelModel(key="fake-split", file_name="split.gguf", size=len(payload), sha256=_sha(payload),
                      parts=parts, license="apache-2.0", source="test")


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
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf"]  # no partial file or temp folder
    (tmp_path / "links" / "fake_model_pkg-1.0.0-py3-none-any.whl").unlink()
    assert fetch(model, settings) == path  # from the cache: pip is not asked again


def test_a_wheel_that_differs_from_its_pin_is_refused(settings: Any, tmp_path: Path) -> None:
    model = _model(_wheel(tmp_path / "links"))
    model = replace(model, parts=(replace(model.parts[0], wheel_sha256="0" * 64),))
    with pytest.raises(IntegrityError):
        fetch(model, settings)
    assert cached(model, settings) is None


def test_a_gguf_that_differs_from_its_pin_never_lands(settings: Any, tmp_path: Path) -> None:
    model = replace(_model(_wheel(tmp_path / "links")), sha256="f" * 64)
    with pytest.raises(IntegrityError):
        fetch(model, settings)
    assert not cache_path(model, settings).exists()
    assert not list(cache_path(model, settings).parent.rglob("*.joining")) and not list(cache_path(model, settings).parent.rglob(".pip-*"))


def test_offline_with_an_empty_cache_says_so(settings: Any, tmp_path: Path) -> None:
    model = _model(_wheel(tmp_path / "links"))
    with pytest.raises(OfflineError) as err:
        fetch(model, settings.replace(offline=True))
    assert "offline" in err.value.message and "fake-model-pkg==1.0.0" in (err.value.fix or "")


def test_a_split_file_is_joined_in_order_and_checked(settings: Any, tmp_path: Path) -> None:
    model = _split(tmp_path / "links")
    seen: list[tuple[str, int, int]] = []
    path = fetch(model, settings, progress=lambda what, n, count: seen.append((what, n, count)))
    assert path.read_bytes() == PAYLOAD
    assert [n for _w, n, _c in seen] == [1, 2, 3] and seen[0][0] == "fake-split-part1==1.0.0"
    assert sorted(p.name for p in path.parent.iterdir()) == ["split.gguf"]  # parts gone, nothing half-joined


def test_a_split_fetch_resumes_with_the_parts_it_has(settings: Any, tmp_path: Path) -> None:
    links = tmp_path / "links"
    model = _split(links)
    (links / "fake_split_part3-1.0.0-py3-none-any.whl").rename(tmp_path / "part3.whl")  # part 3 is out of reach
    with pytest.raises(DownloadError) as err:
        fetch(model, settings)
    assert "part 3 of 3 (fake-split-part3==1.0.0)" in err.value.message
    assert cached(model, settings) is None and not cache_path(model, settings).exists()
    kept = sorted(p.name for p in (cache_path(model, settings).parent / ".parts").glob("*.whl"))
    assert kept == ["part01-fake-split-part1-1.0.0.whl", "part02-fake-split-part2-1.0.0.whl"]
    # parts 1 and 2 vanish from the index, part 3 comes back: the run resumes with the kept parts
    for i in (1, 2):
        (links / f"fake_split_part{i}-1.0.0-py3-none-any.whl").unlink()
    (tmp_path / "part3.whl").rename(links / "fake_split_part3-1.0.0-py3-none-any.whl")
    assert fetch(model, settings).read_bytes() == PAYLOAD


def test_a_wrong_part_is_named_and_nothing_lands(settings: Any, tmp_path: Path) -> None:
    links = tmp_path / "links"
    model = _split(links)
    _wheel(links, b"not the slice", dist="fake_split_part2", member="fake_split_part2/data/part02.bin")
    with pytest.raises(IntegrityError) as err:
        fetch(model, settings)
    assert "part 2 of 3 (fake-split-part2==1.0.0)" in err.value.message and model.parts[1].wheel_sha256 in err.value.message
    assert not cache_path(model, settings).exists()


def test_a_kept_part_that_changed_is_fetched_again(settings: Any, tmp_path: Path) -> None:
    links = tmp_path / "links"
    model = _split(links)
    parts = cache_path(model, settings).parent / ".parts"
    parts.mkdir(parents=True)
    (parts / "part01-fake-split-part1-1.0.0.whl").write_bytes(b"corrupt")
    assert fetch(model, settings).read_bytes() == PAYLOAD


def test_parts_that_join_to_another_file_never_land(settings: Any, tmp_path: Path) -> None:
    model = replace(_split(tmp_path / "links"), sha256="e" * 64)
    with pytest.raises(IntegrityError) as err:
        fetch(model, settings)
    assert "joined from" in err.value.message and "e" * 64 in err.value.message
    assert not [p for p in cache_path(model, settings).parent.iterdir() if p.suffix in (".gguf", ".joining")]
