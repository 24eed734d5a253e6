"""Run every benchmarks/bench_*.py (or those named on the command line); fail if any target is missed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    scripts = [here / f"bench_{n}.py" for n in argv] if argv else sorted(here.glob("bench_*.py"))
    failed = []
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        t0 = time.time()
        rc = subprocess.run([sys.executable, str(script)], check=False).returncode
        print(f"   ({time.time() - t0:.0f} s, exit {rc})", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"benchmarks that missed a target or failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all benchmark targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
