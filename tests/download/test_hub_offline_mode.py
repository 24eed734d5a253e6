"""huggingface_hub reads HF_HUB_OFFLINE once, at import; fmgguf's settings decide instead. A caller that
clears offline mode on purpose (the demo's loopback mirror) pulls even with HF_HUB_OFFLINE=1 in the
environment, and a hub request that offline mode does forbid is a one-line OfflineError naming the
variable, never an internal error. Each case runs in a fresh interpreter, as huggingface_hub's import does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from .conftest import REPO

SCRIPT = textwrap.dedent("""
    import sys
    from fmgguf.download import ModelDownloader
    from fmgguf.download.transfer import head_file
    from fmgguf.errors import FmggufError
    from fmgguf.settings import load_settings

    settings = load_settings()
    assert settings.offline  # HF_HUB_OFFLINE=1 is in the environment
    try:
        head_file(settings, sys.argv[1], "blob-Q8_0.gguf", None)
    except FmggufError as exc:
        print("REFUSED", type(exc).__name__, exc.one_line())
    dl = ModelDownloader(settings.replace(offline=False))  # the demo's loopback mirror
    print("PULLED", dl.download_model("blob", "Q8_0"))
""")


def test_settings_decide_offline_mode_not_the_import_time_variable(hub, files) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, REPO], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    refused = next(line for line in proc.stdout.splitlines() if line.startswith("REFUSED"))
    assert refused.startswith("REFUSED OfflineError") and "HF_HUB_OFFLINE" in refused, refused
    pulled = next(line for line in proc.stdout.splitlines() if line.startswith("PULLED"))
    assert pulled.endswith("blob-Q8_0.gguf"), proc.stdout
