"""Runner tests: real runner processes, killed for real; files that really abort llama.cpp; a live
server. The aborting files are loaded around validation (:func:`trusting_validator`): what is
tested here is that a runner's death takes nothing else down, not that the validator catches them."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location("fmgguf_tests_aborting", Path(__file__).with_name("aborting.py"))
aborting = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules[_spec.name] = aborting  # type: ignore[union-attr]
_spec.loader.exec_module(aborting)  # type: ignore[union-attr]


def trusting_validator(path: Path, cache: dict) -> Any:
    """FileFacts from the header read without the llama.cpp-matching checks (what llama.cpp would get
    without our validator); the fit plan reuses this header, so it does not check it either."""
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.runtime.runner.loading import FileFacts

    info = read_gguf(path, check=False)
    return FileFacts(arch=info.arch, n_ctx_train=info.n_ctx_train, file_type=info.file_type,
                     fim_ids=dict(info.fim_tokens), info=info)


@pytest.fixture(scope="session")
def good_path() -> Path:
    from fmgguf.testing import build_tiny_model

    return build_tiny_model("qwen2", "unit", "F16")


@pytest.fixture(scope="session")
def other_path() -> Path:
    from fmgguf.testing import build_tiny_model

    return build_tiny_model("llama", "unit", "F16")


@pytest.fixture(scope="session")
def lying_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> file, for every lie in aborting.LIES."""
    out = tmp_path_factory.mktemp("lies")
    return {lie.name: aborting.write_lying_model(lie, out / f"{lie.name}.gguf") for lie in aborting.LIES}


@pytest.fixture
def runner_manager(tmp_path: Path):
    """Make managers with runner processes (closed at the end); ``trusting=True`` skips validation."""
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    made = []

    def make(trusting: bool = False, **kw: Any) -> Any:
        kw.setdefault("keep_alive", 0)
        kw.setdefault("isolation", "process")
        if trusting:
            kw["validator"] = trusting_validator
        m = ModelManager(load_settings(home=tmp_path / "home"), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def register_unchecked(settings: Any, file: Path, model_id: str, quant: str = "F16") -> None:
    """Put ``file`` in the store and the user catalog as ``model_id:quant`` without any check of its
    content (what `import-gguf` does minus validation: the lying files must get through)."""
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.download.hashing import sha256_file
    from fmgguf.download.records import ModelRecord, StoreRecords, file_record

    sha, size = sha256_file(file), file.stat().st_size
    add_user_entry(settings, {"id": model_id, "family": "custom", "display_name": model_id,
                              "variants": {quant: {"repo": f"local/{model_id}",
                                                   "files": [{"name": file.name, "size": size, "sha256": sha}]}}})
    rec = ModelRecord(id=model_id, quant=quant, repo=f"local/{model_id}", commit=None, revision=None, origin="local",
                      files=[file_record(file.name, file, sha, "local", None)])
    StoreRecords(settings.store_dir).put(rec)


class LiveServer:
    """The app on a real uvicorn server in a thread of this process, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from fmgguf.server.runner import bind_socket

        self.app = app
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

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


@pytest.fixture
def runner_tools() -> Any:
    """LiveServer, register_unchecked and trusting_validator (test modules cannot import conftest)."""
    class Tools:
        pass

    tools = Tools()
    tools.LiveServer = LiveServer  # type: ignore[attr-defined]
    tools.register_unchecked = register_unchecked  # type: ignore[attr-defined]
    tools.trusting_validator = trusting_validator  # type: ignore[attr-defined]
    tools.aborting = aborting  # type: ignore[attr-defined]
    return tools
