"""Memory: switching gives it back; running out of it is an error with the fix, never a crash.

Both run in a child process: RSS is then the engine's alone, and a llama.cpp abort can't take
pytest down.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_SWITCH = r"""
import json, sys
from fmgguf.runtime import ModelManager
from fmgguf.settings import load_settings

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = ModelManager(load_settings(), keep_alive=0, isolation="inprocess")
m.load_file(a, n_ctx=256)
m.generate_text("def f(x):", max_tokens=8, temperature=0)
one = rss()
for i in range(n):
    m.load_file(b if i % 2 == 0 else a, n_ctx=256)
    m.generate_text("def f(x):", max_tokens=8, temperature=0)
after = rss()
m.unload()
print(json.dumps({"one": one, "after": after, "unloaded": rss()}))
"""


@pytest.mark.slow
def test_twenty_switches_give_memory_back(starcoder_path: Path, llama_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SWITCH, str(starcoder_path), str(llama_path), "20"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    # 20 switches end on the first model again: resident memory within 5% of the one-model level
    assert r["after"] <= r["one"] * 1.05, r
    assert r["unloaded"] < r["one"], r


_OOM = r"""
import resource, sys
from fmgguf.errors import InsufficientMemoryError
from fmgguf.runtime import ModelManager
from fmgguf.settings import load_settings

m = ModelManager(load_settings(), keep_alive=0, isolation="inprocess")
import fmgguf.runtime.engine.llama_lib as llama_lib
llama_lib.lib()  # import llama.cpp before the cap
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + 1536 * 1024 * 1024, hard))
try:
    # a 262144-token context needs several GiB of KV cache: more than the 1.5 GiB cap allows
    m.load_file(sys.argv[1], n_ctx=262144, n_gpu_layers=0)
except InsufficientMemoryError as exc:
    print("OOM:", exc)
    sys.exit(0)
print("loaded?!")
sys.exit(3)
"""


def test_out_of_memory_at_load_is_an_error_with_the_fix(llama_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _OOM, str(llama_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("OOM: out of memory while loading")
    assert "smaller quant" in line and "--ctx" in line and "fmgguf fit" in line
