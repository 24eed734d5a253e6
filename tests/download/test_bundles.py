"""Export → import on a second FMGGUF_HOME with the network off; tampered bundles install nothing."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from fmgguf.download.bundle import MANIFEST, export_models, import_bundle
from fmgguf.download.local import import_gguf
from fmgguf.errors import BundleError, GGUFError, exit_code_for

from .conftest import make_downloader, no_sockets


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pulled(hub, files, downloader):
    downloader.download_model("blob", "Q8_0")
    return downloader


def second_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "airgapped"
    monkeypatch.setenv("FMGGUF_HOME", str(home))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return make_downloader(offline=True)


def installed_nothing(dl) -> bool:
    return dl.list_downloaded() == [] and not list(dl.settings.hub_cache.glob("models--*/blobs/*")) \
        and not dl.settings.catalog_file.exists()


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_export_then_import_offline_on_a_second_home(pulled, files, tmp_path, monkeypatch, kind):
    dest = tmp_path / ("bundle.tar" if kind == "tar" else "bundle")
    manifest = export_models(pulled, ["blob:Q8_0"], dest)
    assert manifest["models"][0]["files"][0]["sha256"] == sha(files["blob-Q8_0.gguf"])
    dl2 = second_home(tmp_path, monkeypatch)
    with no_sockets(monkeypatch) as attempts:
        installed = import_bundle(dl2, dest)
        assert installed[0]["id"] == "blob"
        path = dl2.model_path("blob", "Q8_0")
        assert sha(path) == sha(files["blob-Q8_0.gguf"])
        assert dl2.verify_model_integrity("blob").ok
        assert dl2.download_model("blob", "Q8_0") == path  # a pull offline finds it
        assert "blob" in dl2.catalog  # the user catalog entry travelled with it
    assert attempts == []


def test_flipped_byte_in_bundle_is_refused_and_installs_nothing(pulled, tmp_path, monkeypatch):
    dest = tmp_path / "bundle"
    export_models(pulled, ["blob"], dest)
    gguf = dest / "models" / "blob" / "Q8_0" / "blob-Q8_0.gguf"
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0x01
    gguf.write_bytes(bytes(data))
    dl2 = second_home(tmp_path, monkeypatch)
    with pytest.raises(BundleError) as err:
        import_bundle(dl2, dest)
    assert "models/blob/Q8_0/blob-Q8_0.gguf is corrupt" in str(err.value) and exit_code_for(err.value) == 10
    assert installed_nothing(dl2)


def test_truncated_tar_is_refused(pulled, tmp_path, monkeypatch):
    dest = tmp_path / "bundle.tar"
    export_models(pulled, ["blob"], dest)
    with open(dest, "r+b") as fh:
        fh.truncate(dest.stat().st_size // 2)
    dl2 = second_home(tmp_path, monkeypatch)
    with pytest.raises(BundleError, match="blob-Q8_0.gguf"):
        import_bundle(dl2, dest)
    assert installed_nothing(dl2)


def test_missing_file_is_refused(pulled, tmp_path, monkeypatch):
    dest = tmp_path / "bundle"
    export_models(pulled, ["blob"], dest)
    (dest / "models" / "blob" / "Q8_0" / "blob-Q8_0.gguf").unlink()
    dl2 = second_home(tmp_path, monkeypatch)
    with pytest.raises(BundleError, match="lacks models/blob/Q8_0/blob-Q8_0.gguf"):
        import_bundle(dl2, dest)
    assert installed_nothing(dl2)


@pytest.mark.parametrize("bad_path", ["../outside.gguf", "/etc/passwd", "models/../../x.gguf"])
def test_manifest_paths_that_escape_are_refused(pulled, tmp_path, monkeypatch, bad_path):
    dest = tmp_path / "bundle"
    export_models(pulled, ["blob"], dest)
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["models"][0]["files"][0]["path"] = bad_path
    (dest / MANIFEST).write_text(json.dumps(manifest))
    dl2 = second_home(tmp_path, monkeypatch)
    with pytest.raises(BundleError, match="rejected"):
        import_bundle(dl2, dest)
    assert installed_nothing(dl2)


def test_symlink_member_in_tar_is_refused(pulled, tmp_path, monkeypatch):
    dest = tmp_path / "bundle.tar"
    export_models(pulled, ["blob"], dest)
    evil = tmp_path / "evil.tar"
    with tarfile.open(dest) as src, tarfile.open(evil, "w") as out:
        for m in src.getmembers():
            if m.name.endswith(".gguf"):
                link = tarfile.TarInfo(m.name)
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                out.addfile(link)
            else:
                out.addfile(m, src.extractfile(m))
    dl2 = second_home(tmp_path, monkeypatch)
    with pytest.raises(BundleError, match="not a regular file"):
        import_bundle(dl2, evil)
    assert installed_nothing(dl2)


def test_import_gguf_registers_a_hard_link_not_a_copy(tmp_path, downloader):
    f = tmp_path / "my-model-Q4_K_M.gguf"
    f.write_bytes(b"GGUF" + os.urandom(10_000))
    info = import_gguf(downloader, f, "my-model")
    assert info["quant"] == "Q4_K_M" and info["mode"] == "hardlink"
    path = downloader.model_path("my-model", "Q4_K_M")
    assert os.stat(path).st_ino == os.stat(f).st_ino  # same bytes on disk, no second copy
    card = downloader.catalog.get("my-model")
    assert card.variants["Q4_K_M"].files[0].sha256 == sha(f)
    assert downloader.list_downloaded()[0]["trust"] == "local"
    assert downloader.delete_model("my-model") and f.exists()  # the user's file is never deleted


def test_import_gguf_refuses_non_gguf(tmp_path, downloader):
    f = tmp_path / "x-Q8_0.gguf"
    f.write_bytes(b"not a gguf")
    with pytest.raises(GGUFError):
        import_gguf(downloader, f, "x")
    assert downloader.list_downloaded() == []
