"""`fmgguf mirror serve`: a second machine with no internet pulls through the mirror (HF_ENDPOINT) with
the real downloader; the mirror is read-only and enforces serve's API-key rules.

Machine A pulls from the loopback test hub ("the internet"), then serves what it has (an export
bundle, its hub cache, a plain folder) with the real CLI in its own process; machine B (another
FMGGUF_HOME and hub cache) pulls from that process only.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fmgguf.testing.hub_server import HubServer

REPO = "fmgguf-test/blob-GGUF"
QUANTS = ("Q8_0", "Q4_K_M")
KEY = "mirror-key-123456"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(files: dict[str, Path]) -> dict[str, Any]:
    """The catalog entry both machines share: two quants in one repo, sha256 pinned."""
    return {"id": "blob", "family": "custom", "display_name": "blob", "variants": {
        q: {"repo": REPO, "files": [{"name": f"blob-{q}.gguf", "sha256": sha(files[f"blob-{q}.gguf"])}]}
        for q in QUANTS}}


def use_home(root: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str | None = None) -> Any:
    """Point fmgguf at the machine whose home is ``root``; its downloader."""
    from fmgguf.download import ModelDownloader
    from fmgguf.settings import load_settings

    monkeypatch.setenv("FMGGUF_HOME", str(root))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(root / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    dl = ModelDownloader(load_settings())
    dl.read_timeout, dl.backoff_base, dl.retries = 2.0, 0.02, 1
    return dl


@pytest.fixture
def machine_a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Machine A: both quants pulled from the 'internet', exported as a folder and a .tar bundle."""
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.download.bundle import export_models

    files = {}
    for i, q in enumerate(QUANTS):
        path = tmp_path / "internet" / f"blob-{q}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF" + random.Random(i).randbytes(700_000 + i))
        files[path.name] = path
    with HubServer({REPO: files}) as internet:
        dl = use_home(tmp_path / "a", monkeypatch, internet.endpoint)
        add_user_entry(dl.settings, _entry(files))
        dl = use_home(tmp_path / "a", monkeypatch, internet.endpoint)
        for q in QUANTS:
            dl.download_model("blob", q)
    export_models(dl, ["blob"], tmp_path / "bundle")
    export_models(dl, ["blob"], tmp_path / "bundle.tar")
    return {"files": files, "hub_cache": tmp_path / "a" / "hub", "bundle": tmp_path / "bundle",
            "tar": tmp_path / "bundle.tar", "commit": internet.commits[REPO]}


@contextmanager
def mirror(source: Path, *args: str, banner: list[str] | None = None) -> Iterator[str]:
    """`fmgguf mirror serve SOURCE --port 0 ARGS` in its own process; yields its endpoint (``banner``
    receives the lines it printed before it)."""
    proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "mirror", "serve", str(source), "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        lines = banner if banner is not None else []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"serving .* on (http://\S+) ", line)
            if found:
                yield found.group(1)
                return
        raise AssertionError("the mirror did not start: " + "".join(lines))
    finally:
        proc.terminate()
        proc.wait(10)


def machine_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, files: dict[str, Path],
              token: str | None = None) -> Any:
    """Machine B: its own home and hub cache, the same catalog entry, only the mirror to pull from."""
    from fmgguf.catalog.user import add_user_entry

    dl = use_home(tmp_path / "b", monkeypatch, endpoint, token)
    if not dl.settings.catalog_file.exists():
        add_user_entry(dl.settings, _entry(files))
    return use_home(tmp_path / "b", monkeypatch, endpoint, token)


def pull_all(dl: Any, files: dict[str, Path]) -> None:
    for q in QUANTS:
        path = dl.download_model("blob", q)
        assert sha(path) == sha(files[f"blob-{q}.gguf"])
        assert Path(path).resolve().is_relative_to(dl.settings.hub_cache.resolve())
    assert dl.verify_model_integrity("blob").ok


@pytest.mark.parametrize("kind", ["bundle", "tar", "hub_cache"])
def test_a_second_machine_pulls_through_the_mirror(machine_a, tmp_path, monkeypatch, kind) -> None:
    with mirror(machine_a[kind]) as endpoint:
        dl = machine_b(tmp_path, monkeypatch, endpoint, machine_a["files"])
        pull_all(dl, machine_a["files"])
        # the mirror serves the commit machine A pulled (the bundle and the hub cache both record it)
        info = httpx.get(f"{endpoint}/api/models/{REPO}", timeout=10).json()
        assert info["sha"] == machine_a["commit"]
        assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(machine_a["files"])


def test_a_plain_folder_is_served_as_org_name_file(machine_a, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "plain" / REPO
    folder.mkdir(parents=True)
    for name, path in machine_a["files"].items():
        shutil.copy(path, folder / name)
    with mirror(tmp_path / "plain") as endpoint:
        pull_all(machine_b(tmp_path, monkeypatch, endpoint, machine_a["files"]), machine_a["files"])


def test_a_folder_serves_a_pinned_catalog_revision_for_files_that_match_the_pin(machine_a, tmp_path, monkeypatch) -> None:
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.errors import DownloadError

    pinned = "fedcba9876543210fedcba9876543210fedcba98"
    folder = tmp_path / "plain" / REPO
    folder.mkdir(parents=True)
    for name, path in machine_a["files"].items():
        shutil.copy(path, folder / name)
    entry = _entry(machine_a["files"])
    for variant in entry["variants"].values():
        variant["revision"] = pinned
    entry["variants"]["Q4_K_M"]["files"][0]["sha256"] = "0" * 64  # the folder's Q4_K_M is not the pinned file
    add_user_entry(use_home(tmp_path / "b", monkeypatch, "http://127.0.0.1:9").settings, entry)
    banner: list[str] = []
    with mirror(tmp_path / "plain", banner=banner) as endpoint:
        said = "".join(banner)
        assert "pinned revision fedcba987654 for blob:Q8_0 (blob-Q8_0.gguf: sha256 matches the catalog pin)" in said
        assert "blob:Q4_K_M" not in said
        dl = use_home(tmp_path / "b", monkeypatch, endpoint)
        path = dl.download_model("blob", "Q8_0")
        assert sha(path) == sha(machine_a["files"]["blob-Q8_0.gguf"]) and Path(path).parent.name == pinned
        assert dl.records.get("blob", "Q8_0").commit == pinned
        with pytest.raises(DownloadError) as err:
            dl.download_model("blob", "Q4_K_M")
        assert f"revision {pinned} not found" in err.value.message
        assert "only for files whose sha256 matches the catalog pin" in err.value.message
        r = httpx.head(f"{endpoint}/{REPO}/resolve/0123456789012345678901234567890123456789/blob-Q8_0.gguf", timeout=10)
        assert r.status_code == 404 and "serves a catalog-pinned revision only for files" in r.headers["X-Error-Message"]


def test_ranges_are_served_for_resumed_downloads(machine_a) -> None:
    data = machine_a["files"]["blob-Q8_0.gguf"].read_bytes()
    with mirror(machine_a["tar"]) as endpoint:
        url = f"{endpoint}/{REPO}/resolve/main/blob-Q8_0.gguf"
        r = httpx.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
        assert r.status_code == 206 and r.content == data[1000:]
        assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        head = httpx.head(url, timeout=10)
        assert head.headers["X-Linked-Etag"].strip('"') == sha(machine_a["files"]["blob-Q8_0.gguf"])
        assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=10).status_code == 416


def test_the_mirror_is_read_only(machine_a) -> None:
    bundle_file = next(machine_a["bundle"].rglob("blob-Q8_0.gguf"))
    before = sha(bundle_file)
    with mirror(machine_a["bundle"]) as endpoint:
        url = f"{endpoint}/{REPO}/resolve/main/blob-Q8_0.gguf"
        for method in ("PUT", "POST", "DELETE", "PATCH"):
            r = httpx.request(method, url, content=b"GGUF-overwritten", timeout=10)
            assert r.status_code == 405, (method, r.status_code)
            assert r.headers["Allow"] == "GET, HEAD"
        r = httpx.post(f"{endpoint}/api/repos/create", json={"name": "x"}, timeout=10)
        assert r.status_code == 405
        assert httpx.get(url, timeout=10).content == machine_a["files"]["blob-Q8_0.gguf"].read_bytes()
    assert sha(bundle_file) == before


def test_the_api_key_is_enforced(machine_a, tmp_path, monkeypatch) -> None:
    from fmgguf.errors import FmggufError

    with mirror(machine_a["bundle"], "--api-key", KEY) as endpoint:
        url = f"{endpoint}/{REPO}/resolve/main/blob-Q8_0.gguf"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong-key-0000"}, timeout=10).status_code == 401
        assert httpx.head(f"{endpoint}/api/models/{REPO}", timeout=10).status_code == 401
        dl = machine_b(tmp_path, monkeypatch, endpoint, machine_a["files"])
        with pytest.raises(FmggufError, match="HF_TOKEN"):
            dl.download_model("blob", "Q8_0")
        assert not list(dl.settings.hub_cache.glob("models--*/blobs/*"))
        pull_all(machine_b(tmp_path, monkeypatch, endpoint, machine_a["files"], token=KEY), machine_a["files"])


def test_off_loopback_needs_a_key_and_bad_sources_are_one_line(machine_a, tmp_path) -> None:
    cmd = [sys.executable, "-m", "fmgguf", "mirror", "serve", str(machine_a["bundle"]), "--port", "0"]
    proc = subprocess.run([*cmd, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "refusing to listen on 0.0.0.0 without an API key" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    cmd[5] = str(tmp_path / "empty")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "holds no files to serve" in proc.stderr and "Traceback" not in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(machine_a["bundle"], broken)
    next(broken.rglob("blob-Q4_K_M.gguf")).unlink()
    cmd[5] = str(broken)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "lacks models/blob/Q4_K_M/blob-Q4_K_M.gguf" in proc.stderr


def test_huggingface_hub_itself_downloads_through_the_mirror(machine_a, tmp_path) -> None:
    """Hub-compatible for other clients too: huggingface_hub's own hf_hub_download and list_repo_files."""
    from huggingface_hub import HfApi, hf_hub_download

    with mirror(machine_a["tar"]) as endpoint:
        path = hf_hub_download(REPO, "blob-Q4_K_M.gguf", endpoint=endpoint, cache_dir=tmp_path / "hf")
        assert sha(Path(path)) == sha(machine_a["files"]["blob-Q4_K_M.gguf"])
        assert machine_a["commit"] in path  # the snapshot is the commit the bundle recorded
        assert sorted(HfApi(endpoint=endpoint).list_repo_files(REPO)) == sorted(machine_a["files"])
