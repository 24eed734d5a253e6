"""The fit plan across workers and a local GPU, on a real tiny model's estimate: llama.cpp's device order
(workers first), contiguous layer ranges, budgets used as given and reported memory less the margin."""

from __future__ import annotations

from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.hw.devices import Device, SystemMemory
from fmgguf.runtime.plan.estimate import GPU_RUNTIME_OVERHEAD, estimate_file
from fmgguf.runtime.plan.fit import _plan_from
from fmgguf.settings import load_settings

GiB = 1024**3


def worker(name: str, free: int, source: str) -> Device:
    return Device(0, name, "RPC worker", "RPC", free, free, "RPC", memory_source=source)


def test_workers_then_gpu_in_llama_cpp_order_with_contiguous_ranges() -> None:
    from fmgguf.testing import build_tiny_model

    settings = load_settings()
    est = estimate_file(read_gguf(build_tiny_model("qwen2", "bench", "F16")), n_ctx=1024)
    per_layer = est.layer_weights[0] + est.kv_layers[0]
    fixed = GPU_RUNTIME_OVERHEAD + est.compute
    gpu = Device(0, "CUDA0", "GPU", "GPU", fixed + est.output_weights + 2 * per_layer + settings.vram_margin + 1,
                 24 * GiB, "CUDA")
    w_budget = worker("a:50052", fixed + 3 * per_layer + 1, "budget")  # a budget is used as given
    w_reported = worker("b:50052", fixed + 3 * per_layer + settings.vram_margin + 1, "rpc")  # less the margin
    mem = SystemMemory([gpu], 64 * GiB, 64 * GiB, ["CPU", "CUDA", "RPC"], workers=[w_budget, w_reported])
    plan = _plan_from(est, mem, settings, "file")
    devs = plan.devices
    assert [d.name for d in devs] == ["a:50052", "b:50052", "CUDA0", "CPU (this machine)"]
    assert [d.layers for d in devs[:3]] == [3, 3, 3]  # the GPU: the output layer and 2 blocks
    assert plan.tensor_split == [3.0, 3.0, 3.0] and plan.n_gpu_layers == 9
    n = est.n_layer
    assert (devs[2].first_layer, devs[2].last_layer, devs[2].output_layer) == (n - 2, n - 1, True)
    assert (devs[1].first_layer, devs[1].last_layer) == (n - 5, n - 3)
    assert (devs[0].first_layer, devs[0].last_layer) == (n - 8, n - 6)
    cpu = devs[3]
    assert cpu.layers == n + 1 - 9 and (cpu.first_layer, cpu.last_layer) == ((0, n - 9) if n > 8 else (None, None))
    assert plan.label.startswith("Split: 2 workers + GPU")
