"""A really full disk (a small tmpfs), a pull killed with SIGKILL, two pulls racing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fmgguf.errors import DiskSpaceError
from fmgguf.testing.hub_server import Fault, HubServer

from .conftest import REPO, add_model, make_downloader, payload


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MiB tmpfs (needs root; skipped elsewhere). Disk-full is real ENOSPC from the kernel."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_mid_transfer_keeps_partial_and_resumes(small_disk, tmp_path, monkeypatch):
    src = payload(tmp_path / "served" / "blob-Q8_0.gguf", 6_000_000)
    monkeypatch.setenv("HF_HUB_CACHE", str(small_disk / "hub"))
    with HubServer({REPO: {src.name: src}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("blob", {src.name: src})
        hub.add_fault(Fault(stall_s=1.0))  # time to fill the disk once the transfer has started
        dl = make_downloader()
        part = dl.cache.incomplete(REPO, sha(src))
        filler = small_disk / "filler"

        def fill() -> None:
            deadline = time.monotonic() + 10
            while not part.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            with open(filler, "wb") as fh:
                fh.write(b"\0" * (free - 2_000_000))  # leave ~2 MB: the 6 MB file cannot fit

        t = threading.Thread(target=fill)
        t.start()
        with pytest.raises(DiskSpaceError) as err:
            dl.download_model("blob", "Q8_0")
        t.join()
        assert "disk full" in str(err.value) and "resume" in err.value.fix
        kept = part.stat().st_size
        assert 1_000_000 < kept < 6_000_000
        assert not dl.cache.blob(REPO, sha(src)).exists() and not dl.is_model_downloaded("blob")
        filler.unlink()
        path = dl.download_model("blob", "Q8_0")
        assert sha(path) == sha(src)
        assert hub.gets()[-1]["range"] == f"bytes={kept}-"


def _pull_proc(endpoint: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_ENDPOINT": endpoint, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "fmgguf", "pull", "blob", "--quant", "Q8_0", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_pull_then_resume(tmp_path, monkeypatch):
    src = payload(tmp_path / "served" / "blob-Q8_0.gguf", 6_000_000)
    with HubServer({REPO: {src.name: src}}, throttle=2_000_000) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("blob", {src.name: src})
        dl = make_downloader()
        part = dl.cache.incomplete(REPO, sha(src))
        proc = _pull_proc(hub.endpoint)
        deadline = time.monotonic() + 30
        while (not part.exists() or part.stat().st_size < 1_500_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kept = part.stat().st_size
        assert 1_500_000 <= kept < 6_000_000
        hub.throttle = None
        path = dl.download_model("blob", "Q8_0")
        assert sha(path) == sha(src)
        last = hub.gets()[-1]
        assert last["range"] is not None and int(last["range"].removeprefix("bytes=").rstrip("-")) >= kept - 1_000_000


@pytest.mark.slow
def test_two_processes_pulling_the_same_model_transfer_once(tmp_path, monkeypatch):
    src = payload(tmp_path / "served" / "blob-Q8_0.gguf", 4_000_000)
    with HubServer({REPO: {src.name: src}}, throttle=4_000_000) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("blob", {src.name: src})
        procs = [_pull_proc(hub.endpoint) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-500:] for o in outs]
        assert len(hub.gets()) == 1 and hub.bytes_sent() == 4_000_000  # one transfer
        assert sha(make_downloader().model_path("blob", "Q8_0")) == sha(src)


def test_file_size_limit_mid_transfer_is_a_disk_error_anywhere(tmp_path, monkeypatch):
    """Works without root: RLIMIT_FSIZE makes the kernel refuse writes (EFBIG) past 1 MB."""
    src = payload(tmp_path / "served" / "blob-Q8_0.gguf", 3_000_000)
    with HubServer({REPO: {src.name: src}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        add_model("blob", {src.name: src})
        code = ("import resource, signal, sys\n"
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))\n"
                "from fmgguf.cli.main import main\n"
                "main(['pull', 'blob', '--quant', 'Q8_0'])\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HF_ENDPOINT": hub.endpoint})
        assert proc.returncode == 9, proc.stderr[-800:]
        assert "disk full while downloading blob-Q8_0.gguf" in proc.stderr and "Traceback" not in proc.stderr
        dl = make_downloader()
        part = dl.cache.incomplete(REPO, sha(src))
        assert part.stat().st_size == 1_000_000 and not dl.is_model_downloaded("blob")
        assert sha(dl.download_model("blob", "Q8_0")) == sha(src)
        assert hub.gets()[-1]["range"] == "bytes=1000000-"
