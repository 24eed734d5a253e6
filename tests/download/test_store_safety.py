"""The store never loses a verified file: a wrong pin is a pin problem (fail at once, nothing moved,
nothing fetched), a blob another model verified is never moved, real corruption is quarantined and
fetched at most once more. Plus the pulls' trust edges: a token never follows a redirect to another
host, a mirror that ignores Range, a stale record after a pin change, a bundle against a pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fmgguf.download.bundle import export_models, import_bundle
from fmgguf.errors import BundleError, IntegrityError
from fmgguf.testing.hub_server import Fault, HubServer

from .conftest import REPO, add_model, make_downloader, payload

WRONG = "f" * 64


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def quarantined(dl) -> list[Path]:
    qdir = dl.settings.store_dir / "quarantine"
    return sorted(qdir.iterdir()) if qdir.is_dir() else []


def two_entries_one_blob(files: dict[str, Path]) -> None:
    """`right` and `wrong` name the same repo and file; only `right` pins its real sha256."""
    name, path = next(iter(files.items()))
    add_model("right", files, pin={name: sha(path)})
    add_model("wrong", files, pin={name: WRONG})


# --- the shared-blob wrong-pin case ---------------------------------------------------------------------
@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-hub", "plain-git-mirror"])
def test_wrong_pin_on_a_shared_blob_keeps_the_other_model_verified(tmp_path, monkeypatch, lfs):
    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 1_000_000)}
    with HubServer({REPO: files}, lfs=lfs) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        two_entries_one_blob(files)
        dl = make_downloader()
        good = dl.download_model("right", "Q8_0")
        assert len(hub.gets()) == 1
        with pytest.raises(IntegrityError) as err:
            dl.download_model("wrong", "Q8_0")
        msg = str(err.value)
        assert WRONG in msg and sha(files["blob-Q8_0.gguf"]) in msg and "\n" not in msg  # both hashes, one line
        assert "catalog" in err.value.fix
        assert len(hub.gets()) == 1, "the wrong pin made it download again"
        assert quarantined(dl) == [] and good.exists()
        assert dl.verify_and_quarantine("right").ok and dl.model_path("right", "Q8_0") == good
        assert not dl.is_model_downloaded("wrong")


def test_wrong_pin_first_pull_from_a_plain_git_mirror_downloads_once(tmp_path, monkeypatch):
    """No hash before the transfer (plain git file): the bytes match the mirror's git blob id, so
    the pin is wrong. One download, no quarantine, and asking again downloads nothing."""
    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 1_000_000)}
    with HubServer({REPO: files}, lfs=False) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        two_entries_one_blob(files)
        dl = make_downloader()
        for _ in range(2):
            with pytest.raises(IntegrityError, match="expectation is wrong"):
                dl.download_model("wrong", "Q8_0")
        assert len(hub.gets()) == 1 and quarantined(dl) == []
        dl.download_model("right", "Q8_0")  # the correctly pinned entry uses the bytes already there
        assert len(hub.gets()) == 1


def test_verify_after_a_pin_change_moves_nothing_another_model_uses(tmp_path, monkeypatch):
    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 1_000_000)}
    name, real = "blob-Q8_0.gguf", sha(files["blob-Q8_0.gguf"])
    with HubServer({REPO: files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("right", files, pin={name: real})
        add_model("other", files, pin={name: real})
        dl = make_downloader()
        path = dl.download_model("right", "Q8_0")
        dl.download_model("other", "Q8_0")
        add_model("other", files, pin={name: WRONG})  # someone edits the catalog wrongly
        dl.reload_catalog()
        with pytest.raises(IntegrityError, match="now pins"):  # the stale record is not handed out
            dl.model_path("other", "Q8_0")
        result = dl.verify_and_quarantine("other")
        assert not result.ok and "pin changed" in result.checks[0].problem
        assert quarantined(dl) == [] and path.exists()
        assert dl.verify_and_quarantine("right").ok
        assert len(hub.gets()) == 1


class _NoHashHandler(HubServer.handler_class):  # type: ignore[name-defined, misc]
    """A generic HTTP mirror: its ETag is no hash (size-mtime, as static file servers send), its tree no oid."""

    def _file_etags(self, repo_id, filename, entry):  # noqa: ANN001, ANN202
        return {"ETag": f'"{entry.size:x}-{int(entry.path.stat().st_mtime):x}"'}

    def _tree_entry(self, repo_id, name, f):  # noqa: ANN001, ANN202
        return {"type": "file", "path": name, "size": f.size}


class NoHashHub(HubServer):
    handler_class = _NoHashHandler


def test_a_blob_another_model_verified_is_kept_when_the_mirror_sends_no_hash(tmp_path, monkeypatch):
    """Only the other model's record can vouch for the cached bytes here (the mirror publishes no
    sha256 and no git blob id): the wrong pin fails at once, nothing is moved or fetched again."""
    from fmgguf.download.transfer import head_file
    from fmgguf.settings import load_settings

    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 1_000_000)}
    with NoHashHub({REPO: files}, lfs=False) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        remote = head_file(load_settings(), REPO, "blob-Q8_0.gguf", None, timeout=10)
        assert remote.sha256 is None and remote.git_oid is None  # nothing from the mirror vouches
        two_entries_one_blob(files)
        dl = make_downloader()
        good = dl.download_model("right", "Q8_0")
        with pytest.raises(IntegrityError) as err:
            dl.download_model("wrong", "Q8_0")
        assert "right:Q8_0 verified these bytes" in str(err.value) and WRONG in str(err.value)
        assert len(hub.gets()) == 1, "the wrong pin made it download again"
        assert quarantined(dl) == [] and good.exists()
        assert dl.verify_and_quarantine("right").ok and dl.model_path("right", "Q8_0") == good


def test_verify_after_a_pin_change_of_the_only_model_moves_nothing(hub, files, downloader):
    """No other model vouches for the file: what keeps it is that its bytes are the ones verified at install."""
    name = "blob-Q8_0.gguf"
    real = sha(files[name])
    add_model("blob", files, pin={name: real})
    downloader.reload_catalog()
    path = downloader.download_model("blob", "Q8_0")
    add_model("blob", files, pin={name: WRONG})  # the only model's pin is edited wrongly
    downloader.reload_catalog()
    result = downloader.verify_and_quarantine("blob")
    assert not result.ok and "pin changed" in result.checks[0].problem, result.checks
    assert quarantined(downloader) == []
    assert path.exists() and sha(path) == real
    assert len(hub.gets()) == 1


def test_deleting_one_of_two_models_that_share_a_blob_keeps_the_other(tmp_path, monkeypatch):
    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 1_000_000)}
    with HubServer({REPO: files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("first", files)
        add_model("second", files)
        dl = make_downloader()
        one, two = dl.download_model("first", "Q8_0"), dl.download_model("second", "Q8_0")
        blob = one.resolve()
        assert two.resolve() == blob and len(hub.gets()) == 1  # one blob, two records
        assert dl.delete_model("first") is True
        assert not dl.is_model_downloaded("first")
        assert dl.verify_and_quarantine("second").ok
        assert sha(dl.model_path("second", "Q8_0")) == sha(files["blob-Q8_0.gguf"])
        assert len(hub.gets()) == 1 and quarantined(dl) == []
        assert dl.delete_model("second") is True and not blob.exists()  # the last user takes it along


# --- real corruption -----------------------------------------------------------------------------------
def test_corrupt_cached_blob_is_quarantined_and_fetched_exactly_once_more(hub, files, downloader):
    path = downloader.download_model("blob", "Q8_0")
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[4242] ^= 0xFF
    blob.write_bytes(bytes(data))
    hub.add_fault(Fault(flip_byte_at=99, times=None))  # the mirror corrupts every transfer from now on
    with pytest.raises(IntegrityError, match="failed verification"):
        downloader.download_model("blob", "Q8_0")
    assert len(hub.gets()) == 2, "the bad cached copy counts as the first: only one more fetch"
    assert len(quarantined(downloader)) == 2


def test_fresh_corruption_is_fetched_at_most_once_more(hub, files, downloader):
    hub.add_fault(Fault(flip_byte_at=10, times=None))
    with pytest.raises(IntegrityError):
        downloader.download_model("blob", "Q8_0")
    assert len(hub.gets()) == 2 and len(quarantined(downloader)) == 2


# --- trust edges -----------------------------------------------------------------------------------------
def test_the_token_never_follows_a_redirect_to_another_host(tmp_path, monkeypatch):
    files = {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 500_000)}
    with HubServer({REPO: files}, host="127.0.0.2") as cdn, \
            HubServer({REPO: files}, redirect_to=cdn.endpoint) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_the_hub_only")
        add_model("blob", files)
        path = make_downloader().download_model("blob", "Q8_0")
        assert sha(path) == sha(files["blob-Q8_0.gguf"])
        assert hub.requests and all(r["auth"] == "Bearer hf_secret_token_for_the_hub_only" for r in hub.requests)
        assert cdn.gets(), "the file did not come from the CDN"
        assert all(r["auth"] is None for r in cdn.requests), "the hub token was sent to another host"


def test_a_mirror_that_ignores_range_on_resume_gives_a_correct_file(hub, files, downloader):
    hub.add_fault(Fault(drop_after=300_000))  # the first transfer breaks ...
    hub.add_fault(Fault(ignore_range=True))   # ... and the resume's Range is ignored (200, whole file)
    path = downloader.download_model("blob", "Q8_0")
    assert sha(path) == sha(files["blob-Q8_0.gguf"])
    gets = hub.gets()
    assert len(gets) == 2 and gets[1]["range"] == "bytes=300000-" and gets[1]["status"] == 200
    assert quarantined(downloader) == []  # restarted cleanly, not caught later as corruption


def test_an_old_record_is_not_reused_after_the_catalog_pin_changes(hub, files, downloader):
    path = downloader.download_model("blob", "Q8_0")  # no pin: the hub's sha256
    add_model("blob", files, pin={"blob-Q8_0.gguf": WRONG})
    downloader.reload_catalog()
    with pytest.raises(IntegrityError) as err:
        downloader.download_model("blob", "Q8_0")
    assert WRONG in str(err.value)
    with pytest.raises(IntegrityError, match="now pins"):
        downloader.model_path("blob", "Q8_0")
    assert path.exists() and len(hub.gets()) == 1


def test_a_bundle_that_contradicts_a_catalog_pin_installs_nothing(hub, files, downloader, tmp_path, monkeypatch):
    downloader.download_model("blob", "Q8_0")
    bundle = tmp_path / "b.tar"
    export_models(downloader, ["blob:Q8_0"], bundle)
    home = tmp_path / "second"
    monkeypatch.setenv("FMGGUF_HOME", str(home))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    add_model("blob", files, pin={"blob-Q8_0.gguf": WRONG})  # this machine's catalog pins another hash
    dl2 = make_downloader(offline=True)
    with pytest.raises(BundleError, match="catalog pins"):
        import_bundle(dl2, bundle)
    assert dl2.list_downloaded() == [] and not list(dl2.settings.hub_cache.glob("models--*/blobs/*"))
