"""Fixtures for the download tests: random 'GGUF' payloads (the downloader does not read GGUF
content), a loopback hub, user-catalog entries pointing at it, a downloader with short timeouts."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fmgguf.testing.hub_server import HubServer

REPO = "fmgguf-test/blob-GGUF"


def payload(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + random.Random(seed).randbytes(size - 4))
    return path


def add_model(model_id: str, files: dict[str, Path], repo: str = REPO, quant: str = "Q8_0",
              pin: dict[str, str] | None = None, sizes: dict[str, int] | None = None) -> None:
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.settings import load_settings

    entry: dict[str, Any] = {"id": model_id, "family": "custom", "display_name": model_id, "variants": {quant: {
        "repo": repo,
        "files": [{"name": name, "sha256": (pin or {}).get(name), "size": (sizes or {}).get(name)} for name in files],
    }}}
    add_user_entry(load_settings(), entry)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """One 2 MB file for model 'blob' (Q8_0)."""
    return {"blob-Q8_0.gguf": payload(tmp_path / "served" / "blob-Q8_0.gguf", 2_000_000)}


@pytest.fixture
def hub(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer({REPO: files}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        add_model("blob", files)
        yield server


def make_downloader(**settings_changes: Any):
    from fmgguf.download import ModelDownloader
    from fmgguf.settings import load_settings

    dl = ModelDownloader(load_settings(**settings_changes))
    dl.read_timeout = 2.0
    dl.backoff_base = 0.02
    return dl


@pytest.fixture
def downloader():
    return make_downloader()


@contextmanager
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Any socket connect (loopback included) is recorded and refused."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise AssertionError(f"network used while offline: {address!r}")
        return real_connect(self, address)

    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", refuse)
        m.setattr(socket.socket, "connect_ex", refuse)
        yield attempts
