"""`make run` runs `fmgguf demo`: the whole job offline on a tiny model, leaving the user's home alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_whole_job_offline(isolated_home: Path, tmp_path: Path) -> None:
    keep = tmp_path / "demo-home"
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "demo", "--tasks", "2", "--keep", str(keep)],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    sha = re.search(r"sha256 ([0-9a-f]{64}) verified", out)
    assert sha, out
    assert "[4/7]" in out and "\n  verified" in out
    assert re.search(r"(CPU only|Full GPU|Partial)", out)
    assert re.search(r"\d+ tokens, first after \d+ ms", out)
    assert "pass@1" in out and "Done in" in out
    # the pulled file is in the demo's own hub cache, byte-identical to the pin
    blobs = list((keep / "hub").rglob("blobs/*"))
    assert any(b.name == sha.group(1) for b in blobs)
    # and nothing was written to the user's home catalog
    assert not (isolated_home / "config" / "catalog.yaml").exists()
