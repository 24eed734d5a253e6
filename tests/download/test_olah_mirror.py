"""End to end through a real hub mirror: `olah` serving local git repositories offline.

Three repositories behind one olah: a tiny real GGUF as a plain git file (catalog pin path), a
small file as a plain git file with no pin (trust-on-first-use path, git blob id checked), and a
git-lfs-style repository (pointer committed, object in .git/lfs/objects: olah sends its sha256).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmgguf.catalog.user import add_user_entry
from fmgguf.settings import load_settings

from .conftest import add_model, make_downloader, payload

pytestmark = pytest.mark.slow


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=fmgguf", "-c", "user.email=fmgguf@localhost", "-c", "init.defaultBranch=main",
                    *args], cwd=repo, check=True, capture_output=True)


def make_repo(mirrors: Path, repo_id: str, files: dict[str, Path], lfs: bool = False) -> None:
    repo = mirrors / "models" / repo_id
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    for name, src in files.items():
        if lfs:
            digest = hashlib.sha256(src.read_bytes()).hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / digest[:2] / digest[2:4] / digest
            obj.parent.mkdir(parents=True)
            shutil.copyfile(src, obj)
            (repo / name).write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\n"
                                     f"size {src.stat().st_size}\n")
        else:
            shutil.copyfile(src, repo / name)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "models")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def olah(tmp_path: Path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to build the mirror repositories")
    olah_cli = Path(sys.executable).with_name("olah-cli")
    if not olah_cli.exists():
        pytest.skip("olah is not installed (pip install olah)")
    mirrors = tmp_path / "mirrors"
    port = free_port()
    config = tmp_path / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'repos-path = "{tmp_path / "olah-repos"}"\nmirrors-path = ["{mirrors}"]\n'
        "[accessibility]\noffline = true\n")
    state: dict = {"mirrors": mirrors, "endpoint": f"http://127.0.0.1:{port}", "proc": None}

    def start() -> str:
        log = open(tmp_path / "olah.log", "wb")
        state["proc"] = subprocess.Popen([str(olah_cli), "-c", str(config), "--log-path", str(tmp_path / "logs")],
                                         cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return state["endpoint"]
            except OSError:
                if state["proc"].poll() is not None:
                    break
                time.sleep(0.1)
        pytest.fail("olah did not start: " + (tmp_path / "olah.log").read_text()[-2000:])

    state["start"] = start
    yield state
    if state["proc"] is not None:
        state["proc"].terminate()
        try:
            state["proc"].wait(10)
        except subprocess.TimeoutExpired:
            state["proc"].kill()


def test_pull_through_olah_mirror(olah, tmp_path, monkeypatch):
    from fmgguf.testing import tiny_card, tiny_repo_files

    card = tiny_card("tiny-mirror", arch="gemma3", quants=("Q4_K_M",), repo="fmgguf-test/tiny-mirror-GGUF")
    gguf = tiny_repo_files("tiny-mirror", arch="gemma3", quants=("Q4_K_M",))
    make_repo(olah["mirrors"], "fmgguf-test/tiny-mirror-GGUF", gguf)
    plain = {"plain-Q8_0.gguf": payload(tmp_path / "src" / "plain-Q8_0.gguf", 600_000, seed=3)}
    make_repo(olah["mirrors"], "fmgguf-test/plain-GGUF", plain)
    lfs = {"lfs-Q8_0.gguf": payload(tmp_path / "src" / "lfs-Q8_0.gguf", 500_000, seed=4)}
    make_repo(olah["mirrors"], "fmgguf-test/lfs-GGUF", lfs, lfs=True)
    endpoint = olah["start"]()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    add_user_entry(load_settings(), card)
    add_model("plain", plain, repo="fmgguf-test/plain-GGUF")
    add_model("lfs", lfs, repo="fmgguf-test/lfs-GGUF")
    dl = make_downloader()
    dl.read_timeout = 30

    path = dl.download_model("tiny-mirror", "Q4_K_M")
    assert path.read_bytes() == gguf["tiny-mirror-Q4_K_M.gguf"].read_bytes()
    rows = {r["id"]: r for r in dl.list_downloaded()}
    assert rows["tiny-mirror"]["trust"] == "pin"

    path = dl.download_model("plain", "Q8_0")
    assert path.read_bytes() == plain["plain-Q8_0.gguf"].read_bytes()
    assert {r["id"]: r for r in dl.list_downloaded()}["plain"]["trust"] == "tofu"

    path = dl.download_model("lfs", "Q8_0")
    assert path.read_bytes() == lfs["lfs-Q8_0.gguf"].read_bytes()
    assert {r["id"]: r for r in dl.list_downloaded()}["lfs"]["trust"] == "hub"

    # and huggingface_hub itself agrees with the layout we wrote
    from huggingface_hub import scan_cache_dir

    repos = {r.repo_id for r in scan_cache_dir(dl.settings.hub_cache).repos}
    assert repos == {"fmgguf-test/tiny-mirror-GGUF", "fmgguf-test/plain-GGUF", "fmgguf-test/lfs-GGUF"}
