"""Shared tiny models and a loaded manager for the runtime-engine tests.

llama.cpp runs in the pytest process here (that is what the manager does), so a session canary
first loads and generates from each model in a child process: a llama.cpp build that crashes on
this machine (SIGILL/SIGABRT) fails these tests with the reason instead of killing pytest.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

#: the quant the engine tests use (F16 needs no quantized kernels; Q8_0 is tested by the canary too)
QUANT = "F16"

_CANARY = r"""
import sys
from fmgguf.runtime.engine.engine import Engine, LoadOptions, GenerationStats
with Engine(sys.argv[1], LoadOptions(n_ctx=128)) as e:
    toks = e.tokenize("def f(x):", add_bos=e.add_bos)
    text = "".join(e.stream(toks, GenerationStats(), max_tokens=4, temperature=0))
print("ok")
"""


def _canary(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _CANARY, str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or "ok" not in proc.stdout:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        how = f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
        pytest.fail(f"llama.cpp cannot run {path.name} with this llama-cpp-python build ({how}) {tail}".strip(),
                    pytrace=False)


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("qwen2", "unit", QUANT)
    _canary(path)
    return path


@pytest.fixture(scope="session")
def llama_path() -> Path:
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("llama", "unit", QUANT)
    _canary(path)
    return path


@pytest.fixture(scope="session")
def starcoder_path() -> Path:
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("starcoder2", "unit", QUANT)
    _canary(path)
    return path


@pytest.fixture(scope="session")
def manager(qwen_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A manager with the tiny qwen2 model loaded (shared: tests must leave it loaded and idle)."""
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    home = tmp_path_factory.mktemp("mgr-home")
    m = ModelManager(load_settings(home=home), keep_alive=0, max_queue=8)
    m.load_file(qwen_path, n_ctx=512)
    yield m
    m.close()


@pytest.fixture()
def fresh_manager(tmp_path: Path):
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    made = []

    def make(**kw):
        kw.setdefault("keep_alive", 0)
        m = ModelManager(load_settings(home=tmp_path), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
