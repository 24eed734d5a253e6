"""On a CUDA machine (scripts/gpu_check.sh): a CUDA worker serves GPU memory and holds a model's layers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fmgguf.runtime.rpc.rpc import WorkerSpec, probe

from .conftest import child_env, start_worker

pytestmark = pytest.mark.gpu

_GENERATE = r"""
import json, sys
from fmgguf.runtime import ModelManager
from fmgguf.settings import load_settings
m = ModelManager(load_settings(vram_override=0), keep_alive=0)  # plan no local GPU: the layers go to the worker
r = m.load_file(sys.argv[1], n_ctx=512, rpc=sys.argv[2])
res = m.generate_text("def f(x):", max_tokens=8, temperature=0)
print(json.dumps({"tokens": res.completion_tokens, "plan": r.plan.as_dict(),
                  "buffers": [n for n, b in m.current_model().buffers["by_device"].items() if b.get("model")]}))
m.close()
"""


def test_cuda_worker_serves_gpu_memory_and_holds_layers() -> None:
    from fmgguf.runtime.hw.devices import ggml_devices
    from fmgguf.testing import build_tiny_model

    cuda = next(d for d in ggml_devices() if d.backend == "CUDA")
    w = start_worker("--device", "CUDA0")
    try:
        info = probe(WorkerSpec("127.0.0.1", w.port))
        assert info.devices[0].total == cuda.total  # the GPU's memory, not the machine's RAM
        path = build_tiny_model("llama", quant="Q4_K_M")
        out = subprocess.run([sys.executable, "-c", _GENERATE, str(path), w.endpoint], capture_output=True, text=True,
                             timeout=240, env=child_env())
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["tokens"] == 8
        rpc_rows = [d for d in got["plan"]["devices"] if d["kind"] == "RPC"]
        assert rpc_rows and rpc_rows[0]["layers"] > 0, got["plan"]
        assert any(w.endpoint in b for b in got["buffers"]), got["buffers"]
    finally:
        w.kill()
