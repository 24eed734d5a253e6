"""Pulls against the loopback hub: verification, layout, resume, retries, faults, offline, disk."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from fmgguf.errors import DiskSpaceError, DownloadError, IntegrityError, NotDownloadedError, OfflineError, exit_code_for
from fmgguf.testing.hub_server import Fault, HubServer

from .conftest import REPO, add_model, make_downloader, no_sockets, payload


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_verifies_and_uses_the_hub_cache_layout(hub, files, downloader):
    src = files["blob-Q8_0.gguf"]
    path = downloader.download_model("blob", "Q8_0")
    assert path.read_bytes() == src.read_bytes()
    assert path.is_symlink() and "snapshots" in path.parts
    assert path.resolve().name == sha(src)  # blob named by the LFS etag, like huggingface_hub
    assert downloader.model_path("blob", "Q8_0") == path
    rec = downloader.list_downloaded()[0]
    assert rec["trust"] == "hub" and rec["files"][0]["sha256"] == sha(src)
    lock = json.loads((downloader.settings.store_dir / "lock.json").read_text())
    assert lock["files"][f"{REPO}/blob-Q8_0.gguf"]["sha256"] == sha(src)
    # huggingface_hub's own cache scanner sees the file
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(downloader.settings.hub_cache)
    assert [r.repo_id for r in info.repos] == [REPO]
    # a second pull transfers nothing
    gets = len(hub.gets())
    assert downloader.download_model("blob", "Q8_0") == path
    assert len(hub.gets()) == gets


def test_seed_call_form_with_model_config(hub, downloader):
    from fmgguf.catalog import ModelConfig

    path = downloader.download_model("blob", ModelConfig(name="blob", quantization="8bit"))
    assert path.name == "blob-Q8_0.gguf" and downloader.is_model_downloaded("blob")


def test_dropped_connection_resumes_with_range(hub, files, downloader):
    hub.add_fault(Fault(drop_after=1_200_000))
    path = downloader.download_model("blob", "Q8_0")
    gets = hub.gets()
    assert [g["range"] for g in gets] == [None, "bytes=1200000-"]
    assert hub.bytes_sent() == 2_000_000  # nothing fetched twice
    assert sha(path) == sha(files["blob-Q8_0.gguf"])


def test_flipped_byte_once_is_quarantined_and_fetched_again(hub, files, downloader):
    hub.add_fault(Fault(flip_byte_at=123_456, times=1))
    path = downloader.download_model("blob", "Q8_0")
    assert sha(path) == sha(files["blob-Q8_0.gguf"])
    assert len(hub.gets()) == 2 and hub.gets()[1]["range"] is None  # the retry starts fresh
    bad = list((downloader.settings.store_dir / "quarantine").iterdir())
    assert len(bad) == 1 and bad[0].stat().st_size == 2_000_000


def test_corrupting_server_gives_integrity_error_and_installs_nothing(hub, files, downloader):
    hub.add_fault(Fault(flip_byte_at=7, times=None))
    with pytest.raises(IntegrityError) as err:
        downloader.download_model("blob", "Q8_0")
    msg = str(err.value)
    assert "blob-Q8_0.gguf" in msg and sha(files["blob-Q8_0.gguf"]) in msg
    assert err.value.details["actual"] and err.value.details["actual"] != err.value.details["expected"]
    assert exit_code_for(err.value) == 8
    assert len(hub.gets()) == 2  # one automatic fresh retry, no more
    assert not downloader.is_model_downloaded("blob")
    with pytest.raises(NotDownloadedError):
        downloader.model_path("blob", "Q8_0")
    blobs = downloader.settings.hub_cache / "models--fmgguf-test--blob-GGUF" / "blobs"
    assert [p.name for p in blobs.iterdir()] == []  # nothing where the loader would look


@pytest.mark.parametrize("delta", [+5000, -5000])
def test_wrong_content_length_is_survived(hub, files, downloader, delta):
    hub.add_fault(Fault(length_delta=delta))
    path = downloader.download_model("blob", "Q8_0")
    assert sha(path) == sha(files["blob-Q8_0.gguf"])
    if delta > 0:  # claimed more than it sent: every byte arrived, the hang-up is harmless
        assert len(hub.gets()) == 1
    else:  # claimed less: the rest is asked for with Range
        assert [g["range"] for g in hub.gets()] == [None, "bytes=1995000-"]


def test_missing_file_is_a_clear_404(hub, files, downloader):
    add_model("ghost", {"ghost-Q8_0.gguf": Path("x")})
    with pytest.raises(DownloadError) as err:
        downloader.download_model("ghost", "Q8_0")
    assert "ghost-Q8_0.gguf not found" in str(err.value) and exit_code_for(err.value) == 7


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_500_then_200_is_retried(hub, files, downloader, method):
    hub.add_fault(Fault(method=method, status=500, times=2))
    path = downloader.download_model("blob", "Q8_0")
    assert sha(path) == sha(files["blob-Q8_0.gguf"])
    statuses = [r["status"] for r in hub.requests if r["method"] == method and r.get("file")]
    assert statuses[:3] == [500, 500, 200]


def test_429_retry_after_is_honoured(hub, files, downloader):
    hub.add_fault(Fault(status=429, retry_after=1))
    t0 = time.monotonic()
    downloader.download_model("blob", "Q8_0")
    assert time.monotonic() - t0 >= 0.95  # backoff_base is 0.02 s: only Retry-After explains a 1 s wait
    assert [g["status"] for g in hub.gets()] == [429, 200]


def test_retries_are_bounded(hub, monkeypatch):
    hub.add_fault(Fault(status=503, times=None))
    dl = make_downloader(download_retries=2)
    with pytest.raises(DownloadError, match="after 2 retries"):
        dl.download_model("blob", "Q8_0")
    assert len(hub.gets()) == 3


def test_stalled_server_times_out_and_is_retried(hub, files):
    hub.add_fault(Fault(stall_s=1.5))
    dl = make_downloader()
    dl.read_timeout = 0.4
    path = dl.download_model("blob", "Q8_0")
    assert sha(path) == sha(files["blob-Q8_0.gguf"]) and len(hub.gets()) == 2


def test_slow_server_and_max_rate(hub, files, downloader):
    hub.throttle = 4_000_000  # a slow server: 0.5 s for the file, well within the read timeout
    t0 = time.monotonic()
    downloader.download_model("blob", "Q8_0", max_rate=1_500_000)  # our own cap is tighter
    elapsed = time.monotonic() - t0
    assert 1.2 < elapsed < 6, elapsed


def test_offline_missing_model_says_how_to_get_it_without_any_socket(hub, monkeypatch):
    dl = make_downloader(offline=True)
    with no_sockets(monkeypatch) as attempts:
        with pytest.raises(OfflineError) as err:
            dl.download_model("blob", "Q8_0")
    assert attempts == []
    assert "export" in err.value.fix and "import" in err.value.fix and exit_code_for(err.value) == 6


def test_offline_local_model_works_without_any_socket(hub, files, downloader, monkeypatch):
    downloader.download_model("blob", "Q8_0")
    dl = make_downloader(offline=True)
    with no_sockets(monkeypatch) as attempts:
        assert dl.download_model("blob", "Q8_0") == downloader.model_path("blob", "Q8_0")
        assert dl.verify_model_integrity("blob").ok
        assert dl.list_downloaded()[0]["id"] == "blob"
    assert attempts == []


def test_plain_git_mirror_is_trust_on_first_use_then_locked(tmp_path, monkeypatch):
    f = payload(tmp_path / "a" / "blob-Q8_0.gguf", 300_000, seed=1)
    with HubServer({REPO: {f.name: f}}, lfs=False) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        add_model("blob", {f.name: f})
        dl = make_downloader()
        dl.download_model("blob", "Q8_0")
        assert dl.list_downloaded()[0]["trust"] == "tofu"
        lock = dl.hashlock.get(REPO, f.name)
        assert lock["source"] == "tofu" and lock["sha256"] == sha(f)
        dl.delete_model("blob")
    # the mirror now serves other bytes under the same name: the lock catches it
    g = payload(tmp_path / "b" / "blob-Q8_0.gguf", 300_000, seed=2)
    with HubServer({REPO: {g.name: g}}, lfs=False) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        with pytest.raises(IntegrityError, match="lock"):
            make_downloader().download_model("blob", "Q8_0")


def test_git_blob_id_catches_corruption_even_without_sha256(tmp_path, monkeypatch):
    f = payload(tmp_path / "a" / "blob-Q8_0.gguf", 300_000, seed=1)
    with HubServer({REPO: {f.name: f}}, lfs=False) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        add_model("blob", {f.name: f})
        server.add_fault(Fault(flip_byte_at=10))
        path = make_downloader().download_model("blob", "Q8_0")
        assert sha(path) == sha(f) and len(server.gets()) == 2


def test_catalog_pin_mismatch_fails_before_transfer(hub, files, downloader):
    add_model("blob", files, pin={"blob-Q8_0.gguf": "0" * 64})
    downloader.reload_catalog()
    with pytest.raises(IntegrityError, match="pins"):
        downloader.download_model("blob", "Q8_0")
    assert hub.gets() == []


def test_free_disk_is_checked_before_starting(hub, files, downloader):
    add_model("blob", files, sizes={"blob-Q8_0.gguf": 2**55})
    downloader.reload_catalog()
    with pytest.raises(DiskSpaceError, match="needs 32768.0 TiB") as err:
        downloader.download_model("blob", "Q8_0")
    assert err.value.details["needed"] == 2**55 and exit_code_for(err.value) == 9
    assert hub.gets() == []


def test_split_model_is_pulled_part_by_part(tmp_path, monkeypatch):
    parts = {f"big-Q8_0-0000{i}-of-00002.gguf": payload(tmp_path / f"p{i}.gguf", 400_000, seed=i) for i in (1, 2)}
    with HubServer({REPO: parts}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        add_model("big", parts)
        dl = make_downloader()
        path = dl.download_model("big", "Q8_0")
        assert path.name == "big-Q8_0-00001-of-00002.gguf"
        assert (path.parent / "big-Q8_0-00002-of-00002.gguf").read_bytes() == parts["big-Q8_0-00002-of-00002.gguf"].read_bytes()
        assert [g["file"] for g in server.gets()] == list(parts)


def test_tampered_file_is_never_returned_and_verify_quarantines_it(hub, files, downloader):
    path = downloader.download_model("blob", "Q8_0")
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    st = blob.stat()
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="changed"):
        downloader.model_path("blob", "Q8_0")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # even a sneaky tamper keeping the mtime...
    result = downloader.verify_model_integrity("blob")  # ...is caught by re-hashing
    assert not result.ok and result.checks[0].problem.startswith("sha256 mismatch")
    assert not blob.exists() and not downloader.is_model_downloaded("blob")


def test_delete_and_disk_usage(hub, files, downloader):
    downloader.download_model("blob", "Q8_0")
    du = downloader.disk_usage()
    assert du["total"] == 2_000_000 and du["models"] == [{"id": "blob", "quant": "Q8_0", "bytes": 2_000_000}]
    assert downloader.delete_model("blob")
    assert downloader.list_downloaded() == [] and downloader.disk_usage()["total"] == 0
    assert not list((downloader.settings.hub_cache / "models--fmgguf-test--blob-GGUF" / "blobs").iterdir())
    assert not downloader.delete_model("blob")


def test_partial_file_from_an_earlier_run_is_rehashed_and_resumed(hub, files, downloader):
    src = files["blob-Q8_0.gguf"]
    part = downloader.cache.incomplete(REPO, sha(src))
    part.parent.mkdir(parents=True)
    part.write_bytes(src.read_bytes()[:700_000])
    path = downloader.download_model("blob", "Q8_0")
    assert [g["range"] for g in hub.gets()] == ["bytes=700000-"] and sha(path) == sha(src)


def test_corrupt_partial_file_is_caught_and_redone(hub, files, downloader):
    src = files["blob-Q8_0.gguf"]
    part = downloader.cache.incomplete(REPO, sha(src))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 700_000)  # garbage left by something else
    path = downloader.download_model("blob", "Q8_0")
    assert sha(path) == sha(src)
    assert [g["range"] for g in hub.gets()] == ["bytes=700000-", None]


def test_file_already_fetched_by_huggingface_hub_is_adopted_without_a_transfer(hub, files, downloader):
    from huggingface_hub import hf_hub_download

    theirs = hf_hub_download(REPO, "blob-Q8_0.gguf", cache_dir=downloader.settings.hub_cache,
                             endpoint=hub.endpoint)
    gets = len(hub.gets())
    path = downloader.download_model("blob", "Q8_0")
    assert len(hub.gets()) == gets  # verified from disk, not fetched again
    assert os.path.realpath(path) == os.path.realpath(theirs)
    assert downloader.list_downloaded()[0]["trust"] == "hub"
