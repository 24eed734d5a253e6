"""Verification overhead of a pull: hashing while streaming must cost (almost) nothing.

Pulls a 1 GiB file from the loopback hub (its own process, throttled to 200 MiB/s) with sha256
verification on and off, alternating, in one run; prints the ratio of the medians.
Target: verified / unverified <= 1.05. Exit code 1 when missed.

    python benchmarks/bench_download.py [--size-mib 1024] [--rate-mib 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.05


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            fh.write(block[:n] if n < len(block) else block)
            written += n
            block = block[1:] + block[:1]  # vary the blocks a little


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=3, help="pulls of each kind (alternating)")
    args = parser.parse_args(argv)
    size = args.size_mib << 20
    rate = args.rate_mib * (1 << 20)

    with tempfile.TemporaryDirectory(prefix="fmgguf-bench-dl-") as tmp:
        root = Path(tmp)
        src = root / "served" / "bench-Q8_0.gguf"
        src.parent.mkdir()
        make_file(src, size)
        os.environ.update({"FMGGUF_HOME": str(root / "home"), "FMGGUF_CONFIG_DIR": str(root / "home"),
                           "HF_HUB_CACHE": str(root / "home" / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1"})
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("FMGGUF_OFFLINE", None)

        from fmgguf.catalog.user import add_user_entry
        from fmgguf.download import ModelDownloader
        from fmgguf.settings import load_settings
        from fmgguf.testing.hub_server import HubServerProcess

        repo = "fmgguf-bench/download-GGUF"
        with HubServerProcess({repo: {src.name: src}}, throttle=rate) as hub:
            os.environ["HF_ENDPOINT"] = hub.endpoint
            settings = load_settings()
            add_user_entry(settings, {"id": "bench-download", "variants": {"Q8_0": {"repo": repo, "files": [{"name": src.name}]}}})
            times: dict[bool, list[float]] = {True: [], False: []}
            warm = ModelDownloader(settings)  # warm-up (page cache, connections): not counted
            warm.download_model("bench-download", "Q8_0", _verify=False)
            warm.delete_model("bench-download")
            for i in range(2 * args.rounds):
                verify = i % 2 == 1  # off, on, off, on, ...
                dl = ModelDownloader(settings)
                t0 = time.perf_counter()
                path = dl.download_model("bench-download", "Q8_0", _verify=verify)
                elapsed = time.perf_counter() - t0
                if path.stat().st_size != size:
                    print(f"bench_download: pulled {path.stat().st_size} bytes, expected {size}", file=sys.stderr)
                    return 1
                if verify:
                    rec = dl.records.get("bench-download", "Q8_0")
                    assert rec is not None and rec.files[0].source == "hub" and len(rec.files[0].sha256) == 64
                times[verify].append(elapsed)
                print(f"  pull {i + 1}: verify={'on ' if verify else 'off'} {elapsed:.2f} s "
                      f"({size / elapsed / (1 << 20):.0f} MiB/s)", flush=True)
                dl.delete_model("bench-download")
    on, off = min(times[True]), min(times[False])
    med = statistics.median(times[True]) / statistics.median(times[False])
    sys.path.insert(0, str(Path(__file__).parent))
    from _harness import Report

    report = Report()
    report.ratio("download_verify_overhead", on, off, f"<= {TARGET}x", on / off <= TARGET,
                 f"[{args.size_mib} MiB at {args.rate_mib:.0f} MiB/s, fastest of {args.rounds}, seconds: verified vs "
                 f"unverified; ratio of medians {med:.3f}]")
    report.finish()
    return 0

if __name__ == "__main__":
    sys.exit(main())
