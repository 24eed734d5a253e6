"""The built wheel carries the catalog: a non-editable install into a throwaway venv lists 20 models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_non_editable_install_ships_catalog(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=300)
    wheel = next(wheels.glob("fmgguf-*.whl"))
    import zipfile

    assert "fmgguf/_data/models.yaml" in zipfile.ZipFile(wheel).namelist()
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # only what `fmgguf list` needs; the package itself is installed from the wheel, not the checkout
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "pydantic>=2", "pyyaml", "click", "platformdirs", "rich",
                    "filelock"], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(env_dir / "bin" / "fmgguf"), "list", "--json"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 21  # 20 code models + the demo model
    where = subprocess.run([str(py), "-c", "import fmgguf.catalog.loader as l; print(l.builtin_catalog_path())"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
    assert str(env_dir) in where and "site-packages" in where
