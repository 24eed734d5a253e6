"""`fmgguf list` cold start against `python -c pass` (target: under 0.3 s absolute)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Report, time_command  # noqa: E402


def main() -> None:
    report = Report()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FMGGUF_HOME": home, "FMGGUF_CONFIG_DIR": home}
        base = time_command([sys.executable, "-c", "pass"], env=env)
        cold = time_command([sys.executable, "-m", "fmgguf", "list"], env=env)
        cold_json = time_command([sys.executable, "-m", "fmgguf", "list", "--json"], env=env)
    report.ratio("fmgguf list cold start", cold, base, "< 0.3 s absolute", cold < 0.3, f"absolute {cold:.3f} s")
    report.ratio("fmgguf list --json cold start", cold_json, base, "< 0.3 s absolute", cold_json < 0.3,
                 f"absolute {cold_json:.3f} s")
    report.finish()


if __name__ == "__main__":
    main()
