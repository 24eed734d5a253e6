"""Server test fixtures: two tiny models on a loopback hub, settings pointing at it, live servers.

The tiny models and the hub are built once per session; each app gets its own home (store,
catalog) so tests do not see each other's downloads unless they share a fixture on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

#: model id -> tiny architecture
TINY = {"tiny-qwen": "qwen2", "tiny-llama": "llama"}
#: the tests download Q4_K_M and generate with F16 (the downloaded-state assertions rely on the split);
#: quantized generation is covered by the runtime, bench and demo tests.
QUANTS = ("Q4_K_M", "F16")
GEN_QUANT = "F16"


def _shared_cache() -> Path:
    return Path(os.environ.get("FMGGUF_CACHE") or Path.home() / ".cache" / "fmgguf")


@pytest.fixture(scope="session")
def tiny_entries() -> tuple[list[dict], dict[str, dict[str, Path]]]:
    """(catalog cards, hub repos) for the tiny models."""
    from fmgguf.testing import tiny_card, tiny_repo_files

    cards, repos = [], {}
    for model_id, arch in TINY.items():
        repo = f"fmgguf-test/{model_id}-GGUF"
        cards.append(tiny_card(model_id, arch=arch, size="unit", repo=repo, quants=QUANTS))
        repos[repo] = tiny_repo_files(model_id, arch=arch, size="unit", quants=QUANTS)
    return cards, repos


@pytest.fixture(scope="session")
def hub(tiny_entries: Any) -> Iterator[Any]:
    from fmgguf.testing.hub_server import HubServer

    with HubServer(tiny_entries[1]) as server:
        yield server


def make_settings(root: Path, endpoint: str, cards: list[dict], **overrides: Any) -> Any:
    """Settings for one server: its own home, store and user catalog holding ``cards``."""
    from fmgguf.settings import Settings

    root.mkdir(parents=True, exist_ok=True)
    catalog_file = root / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump({"models": cards}, sort_keys=False), encoding="utf-8")
    values = dict(home=root / "home", config_file=root / "config.yaml", catalog_file=catalog_file,
                  hf_endpoint=endpoint, hub_cache=root / "hub", shared_cache=_shared_cache(), keep_alive=0.0)
    values.update(overrides)
    return Settings.load(env={}, **values)


@pytest.fixture
def settings(tmp_path: Path, hub: Any, tiny_entries: Any) -> Any:
    return make_settings(tmp_path / "server", hub.endpoint, tiny_entries[0])


class LiveServer:
    """The app on a real uvicorn server in a thread of this process, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from fmgguf.server.runner import bind_socket

        self.app = app
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def state(self) -> Any:
        return self.app.state.fmgguf

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="session")
def live_server() -> type[LiveServer]:
    """The LiveServer class (test modules cannot import conftest under --import-mode=importlib)."""
    return LiveServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hub: Any, tiny_entries: Any) -> Iterator[LiveServer]:
    """A live server with tiny-qwen loaded and tiny-llama downloaded (shared by a module)."""
    from fmgguf.server.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("served"), hub.endpoint, tiny_entries[0])
    app = create_app(settings, max_queue=64)
    state = app.state.fmgguf
    for model_id in TINY:
        state.downloader.download_model(model_id, GEN_QUANT)
    state.manager.switch_model("tiny-qwen", GEN_QUANT, n_ctx=4096)
    with LiveServer(app) as live:
        yield live
    state.manager.close()
