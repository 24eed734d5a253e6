"""First-use review findings on the store commands: unknown ids, no network, local-model hints,
built-in ids, store leaks, lock waits, Ctrl-C, flag validation."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.download.bundle import export_models, import_bundle
from fmgguf.download.local import import_gguf
from fmgguf.errors import DownloadError, NotDownloadedError, UnknownModelError, exit_code_for
from fmgguf.testing.hub_server import Fault, HubServer

from .conftest import REPO, add_model, make_downloader, payload

BUILTIN = "qwen2.5-coder-1.5b-instruct"


class Result:
    """A CliRunner result with the exit code main() would give (it maps fmgguf errors)."""

    def __init__(self, res) -> None:
        self.output, self.exception = res.output, res.exception
        self.exit_code = res.exit_code
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            self.exit_code = exit_code_for(res.exception)


def invoke(*args: str) -> Result:
    return Result(CliRunner().invoke(cli, list(args)))


def fmgguf(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fmgguf", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def fake_gguf(path: Path, size: int = 50_000, seed: int = 1) -> Path:
    return payload(path, size, seed)


# 1. verify ------------------------------------------------------------------------------------
def test_verify_unknown_id_is_unknown_model_with_suggestions():
    res = invoke("verify", "qwen2.5-coder-1.5b-instrct")
    assert res.exit_code == 4 and isinstance(res.exception, UnknownModelError)
    assert "did you mean" in str(res.exception)


def test_verify_known_but_not_downloaded_is_exit_5():
    res = invoke("verify", BUILTIN)
    assert res.exit_code == 5 and isinstance(res.exception, NotDownloadedError)
    assert f"fmgguf pull {BUILTIN}" in str(res.exception)


def test_verify_with_nothing_downloaded_says_so():
    res = invoke("verify")
    assert res.exit_code == 0 and "no models downloaded" in res.output
    assert json.loads(invoke("verify", "--json").output) == []


# 2. no network --------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "http://nosuch-host.invalid"])
def test_unreachable_endpoint_fails_at_once_naming_it(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    add_model("blob", {"blob-Q8_0.gguf": tmp_path / "x"})
    dl = make_downloader()
    dl.backoff_base = 1.0  # the CLI's: retries would take seconds
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as err:
        dl.download_model("blob", "Q8_0")
    assert time.monotonic() - t0 < 2.0
    text = str(err.value)
    assert endpoint in text and "HF_ENDPOINT" in text and "fmgguf import" in text and "mirror" in text
    assert "resumes" not in text


def test_cli_pull_with_no_network_prints_one_line(tmp_path):
    add_model("blob", {"blob-Q8_0.gguf": tmp_path / "x"})
    t0 = time.monotonic()
    proc = fmgguf("pull", "blob", "--quant", "Q8_0")
    assert time.monotonic() - t0 < 10  # interpreter start included; the pull itself does not retry
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 7 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot reach http://127.0.0.1:9 (HF_ENDPOINT)")


def test_cli_pull_retries_silently_unless_verbose(hub, files):
    hub.add_fault(Fault(status=503, method="GET"))
    proc = fmgguf("pull", "blob", "--quant", "Q8_0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "retry" not in proc.stderr
    assert [g["status"] for g in hub.gets()] == [503, 200]  # it did retry


# 3. hints for local models ----------------------------------------------------------------------
def test_local_model_hints_say_reimport_not_pull(tmp_path):
    dl = make_downloader()
    src = fake_gguf(tmp_path / "my-Q8_0.gguf")
    import_gguf(dl, src, "my-tiny", "Q8_0")
    path = Path(dl.model_path("my-tiny", "Q8_0"))
    with open(path, "r+b") as fh:  # corrupt it in place (a hard link: the source changes too)
        fh.seek(10)
        fh.write(b"XXXX")
    res = invoke("verify", "my-tiny")
    assert res.exit_code == 8
    text = str(res.exception)
    assert "fmgguf import-gguf FILE --as my-tiny" in text and "fmgguf pull" not in text
    dl = make_downloader()
    for call in (lambda: dl.model_path("my-tiny", "Q8_0"), lambda: dl.download_model("my-tiny", "Q8_0")):
        with pytest.raises(NotDownloadedError) as err:
            call()
        assert "import-gguf FILE --as my-tiny" in str(err.value) and "fmgguf pull" not in str(err.value)


# 4. built-in ids --------------------------------------------------------------------------------
def test_import_gguf_refuses_a_builtin_id_unless_forced(tmp_path):
    src = fake_gguf(tmp_path / "x-Q4_K_M.gguf")
    res = invoke("import-gguf", str(src), "--as", BUILTIN)
    assert res.exit_code == 2 and "built-in" in str(res.exception) and "--force" in str(res.exception)
    card = make_downloader().catalog.get(BUILTIN)
    assert card.builtin and "Q8_0" in card.variants  # untouched
    dl = make_downloader()
    info = import_gguf(dl, src, BUILTIN, "Q4_K_M", force=True)
    assert info["id"] == BUILTIN


# 5. unknown ids for export / rm -----------------------------------------------------------------
@pytest.mark.parametrize("args", [("rm", "qwen2.5-coder-1.5b-instrct"),
                                  ("export", "qwen2.5-coder-1.5b-instrct", "--to", "/tmp/never-written")])
def test_export_and_rm_unknown_id_is_unknown_model(args):
    res = invoke(*args)
    assert res.exit_code == 4 and isinstance(res.exception, UnknownModelError), res.output
    assert "did you mean" in str(res.exception)
    assert not Path("/tmp/never-written").exists()


# 6. store leaks ----------------------------------------------------------------------------------
def test_import_gguf_then_bundle_then_rm_leaves_nothing(tmp_path, monkeypatch):
    src = fake_gguf(tmp_path / "a-Q8_0.gguf", seed=1)
    other = fake_gguf(tmp_path / "b-Q8_0.gguf", seed=2)
    # a bundle of "m" made in another home from another file
    home_b = tmp_path / "b"
    monkeypatch.setenv("FMGGUF_HOME", str(home_b))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home_b / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home_b / "hub"))
    dl_b = make_downloader()
    import_gguf(dl_b, other, "m", "Q8_0")
    bundle = tmp_path / "m.tar"
    export_models(dl_b, ["m:Q8_0"], bundle)
    home_a = tmp_path / "a"
    monkeypatch.setenv("FMGGUF_HOME", str(home_a))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home_a / "config"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home_a / "hub"))
    dl = make_downloader()
    import_gguf(dl, src, "m", "Q8_0")
    local = dl.settings.store_dir / "local"
    assert list(local.rglob("*.gguf"))
    import_bundle(dl, bundle)
    assert not list(local.rglob("*.gguf")), "the replaced import's hard link is dropped"
    assert invoke("rm", "m").exit_code == 0
    leftovers = [p for p in local.rglob("*")] if local.exists() else []
    assert leftovers == []
    assert not list(dl.settings.hub_cache.glob("models--*/blobs/*"))
    assert src.exists() and other.exists()  # never the user's files


def test_rm_removes_empty_local_folders_and_du_counts_hard_links_once(tmp_path):
    src = fake_gguf(tmp_path / "a-Q8_0.gguf", size=300_000)
    dl = make_downloader()
    import_gguf(dl, src, "m1", "Q8_0")
    import_gguf(dl, src, "m2", "Q8_0")  # the same file twice: two hard links, one inode
    du = json.loads(invoke("du", "--json").output)
    assert du["total"] == 300_000
    assert du["locations"] == [str(dl.settings.store_dir / "local")]
    assert f"total in {dl.settings.store_dir / 'local'}" in invoke("du").output
    assert invoke("rm", "m1").exit_code == 0
    assert not (dl.settings.store_dir / "local" / "m1").exists()
    assert (dl.settings.store_dir / "local" / "m2").exists()


# 7. lock waits and Ctrl-C ------------------------------------------------------------------------
def test_second_pull_says_it_waits_and_the_lock_file_goes(hub, files):
    from fmgguf.download.locking import hold

    dl = make_downloader()
    lock_path = dl.settings.locks_dir / "pull-blob-Q8_0.lock"
    lines: queue.Queue[str] = queue.Queue()
    with hold(lock_path, 5):
        proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "pull", "blob", "--quant", "Q8_0", "--json"],
                                env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.put(proc.stderr.readline()), daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            proc.kill()
            first = "(nothing printed in 30 s)"
    out, err = proc.communicate(timeout=60)
    assert first.strip() == "waiting for another fmgguf pull of blob:Q8_0…"
    assert proc.returncode == 0, err
    assert json.loads(out)[0]["id"] == "blob"
    assert not lock_path.exists()


def test_lock_survives_removal_races(tmp_path):
    from fmgguf.download.locking import LockTimeout, hold

    path = tmp_path / "x.lock"
    inside = []
    errors = []

    def worker(n: int) -> None:
        try:
            for _ in range(30):
                with hold(path, 20):
                    inside.append(n)
                    assert len(inside) == 1, "two holders at once"
                    inside.pop()
        except (AssertionError, LockTimeout) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and not path.exists()
    waits = []
    with hold(path, 1), pytest.raises(LockTimeout):
        with hold(path, 0.2, lambda: waits.append(1)):
            pass
    assert waits == [1]


@pytest.mark.slow
def test_ctrl_c_pull_says_how_to_resume(tmp_path, monkeypatch):
    src = payload(tmp_path / "served" / "blob-Q8_0.gguf", 6_000_000)
    with HubServer({REPO: {src.name: src}}, throttle=1_000_000) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("blob", {src.name: src})
        dl = make_downloader()
        # Ctrl-C's SIGINT handled the default way even where this test runs in a background job (a
        # non-interactive shell starts those with SIGINT ignored, and Python then keeps it ignored)
        proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "pull", "blob", "--quant", "Q8_0", "--json"],
                                env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 30
        parts = lambda: list(dl.settings.hub_cache.glob("models--*/blobs/*.incomplete"))  # noqa: E731
        while not (parts() and parts()[0].stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the pull ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["interrupted; run the same pull again to resume"]


# 8. / 9. flag validation --------------------------------------------------------------------------
def test_import_gguf_bad_id_names_the_flag(tmp_path):
    src = fake_gguf(tmp_path / "x-Q4_K_M.gguf")
    res = invoke("import-gguf", str(src), "--as", "My_Tiny")
    assert res.exit_code == 2, res.output
    text = str(res.exception)
    assert text.startswith("--as 'My_Tiny'") and "my_tiny" in text and "catalog.yaml" not in text


@pytest.mark.parametrize("rate", ["0", "fast", "-5MB"])
def test_max_rate_must_be_a_positive_rate(hub, rate):
    res = invoke("pull", "blob", "--max-rate", rate)
    assert res.exit_code == 2
    assert "20MB/s" in str(res.exception) and "8GB" not in str(res.exception)
    assert hub.gets() == []


def test_max_rate_accepts_per_second_units(hub, files):
    res = invoke("pull", "blob", "--quant", "Q8_0", "--max-rate", "50MB/s", "--json")
    assert res.exit_code == 0, res.output
