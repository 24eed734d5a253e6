"""Test isolation: every test gets its own FMGGUF_HOME, config dir and hub cache; no real hub.

The shared cache (FMGGUF_CACHE: vocab files, tiny models) is kept between tests and runs on
purpose: it only holds things fmgguf can rebuild, and rebuilding them per test would be slow.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

_HUB_HOSTS = ("huggingface.co", "hf.co", "cdn-lfs.huggingface.co")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("fmgguf-home")
    monkeypatch.setenv("FMGGUF_HOME", str(home))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: never the real hub
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    for name in ("FMGGUF_CATALOG", "FMGGUF_CONFIG", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                 "FMGGUF_OFFLINE", "FMGGUF_DEFAULT_MODEL", "FMGGUF_VRAM", "FMGGUF_RPC"):
        monkeypatch.delenv(name, raising=False)
    if not os.environ.get("FMGGUF_CACHE"):
        monkeypatch.setenv("FMGGUF_CACHE", str(Path.home() / ".cache" / "fmgguf"))
    return home


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection that is not loopback fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else None
        if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost")) \
                and self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"test tried to reach {address!r}; tests may only use loopback")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        from fmgguf.testing.gpu import cuda_available  # noqa: PLC0415
        has_gpu = cuda_available()
    except Exception:  # the helper may not exist or llama_cpp may not be built with CUDA
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on a GPU machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
