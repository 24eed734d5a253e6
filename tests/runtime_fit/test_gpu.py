"""On a CUDA machine (run by scripts/gpu_check.sh): full offload, partial offload under an artificial
VRAM cap, the estimate against the VRAM really used, and VRAM given back after switching models.

Only the llama and gemma3 Q4_K_M tiny models are used: the script carries them (no vocab download there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.hw.devices import ggml_devices, system_memory
from fmgguf.runtime.plan.dryrun import MIB, measure
from fmgguf.runtime.plan.estimate import GPU_RUNTIME_OVERHEAD, estimate_file
from fmgguf.runtime.plan.fit import plan_for_file
from fmgguf.settings import load_settings

pytestmark = pytest.mark.gpu

N_CTX = 4096


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    from fmgguf.testing import build_tiny_model

    return {arch: build_tiny_model(arch, quant="Q4_K_M") for arch in ("llama", "gemma3")}


def _gpu_buffers(buffers: dict[str, int]) -> int:
    return sum(v for k, v in buffers.items() if k.startswith("CUDA") and not k.endswith("_Host"))


def _cuda_free() -> int:
    return next(d.free for d in ggml_devices() if d.backend == "CUDA")


def test_the_gpu_is_seen() -> None:
    mem = system_memory()
    assert "CUDA" in mem.backends
    assert mem.gpus and mem.gpus[0].free > 2 * 1024**3
    assert mem.gpus[0].memory_source in ("ggml", "nvml")


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_full_offload_and_estimate_vs_real_vram(models: dict, arch: str) -> None:
    path = models[arch]
    plan = plan_for_file(path, n_ctx=N_CTX)  # the real device, llama.cpp's dry run at the chosen layers
    assert plan.label == "Full GPU", plan.as_dict()
    est = plan.estimate
    real = measure(path, n_ctx=N_CTX, n_gpu_layers=plan.n_gpu_layers, alloc=True, devices=True)
    assert real.ok, real.error
    assert real.offloaded == (plan.n_layers, plan.n_layers)
    gpu_weights = _gpu_buffers(real.model_buffers)
    planned_weights = est.output_weights + sum(est.layer_weights)
    assert abs(gpu_weights - planned_weights) <= 0.02 * planned_weights + 0.01 * MIB * len(real.model_buffers)
    assert abs(_gpu_buffers(real.kv_buffers) - est.kv_total) <= 0.0051 * MIB * len(real.kv_buffers)
    gpu_total = gpu_weights + _gpu_buffers(real.kv_buffers) + _gpu_buffers(real.compute_buffers)
    assert abs(gpu_total - est.device_bytes(plan.n_gpu_layers)) <= 0.05 * gpu_total
    # VRAM the load really took (ggml's free memory in the loading process, before vs loaded)
    before = next(d for d in real.devices_before if d[0].startswith("CUDA"))
    loaded = next(d for d in real.devices_loaded if d[0] == before[0])
    used = before[1] - loaded[1]
    assert 0.9 * est.device_bytes(plan.n_gpu_layers) <= used <= est.device_bytes(plan.n_gpu_layers) \
        + GPU_RUNTIME_OVERHEAD, (used, est.device_bytes(plan.n_gpu_layers))


def test_partial_offload_under_a_vram_cap(models: dict) -> None:
    path = models["llama"]
    settings = load_settings()
    est = estimate_file(read_gguf(path), n_ctx=N_CTX, measure=True, n_gpu_layers=2)
    cap = est.device_bytes(2) + settings.vram_margin + GPU_RUNTIME_OVERHEAD
    plan = plan_for_file(path, n_ctx=N_CTX, settings=settings.replace(vram_override=cap), measure=False)
    assert plan.n_gpu_layers in (1, 2) and plan.label.startswith("Partial"), plan.as_dict()
    real = measure(path, n_ctx=N_CTX, n_gpu_layers=plan.n_gpu_layers, alloc=True)
    assert real.ok and real.offloaded == (plan.n_gpu_layers, plan.n_layers)
    on_gpu = _gpu_buffers(real.model_buffers) + _gpu_buffers(real.kv_buffers) + _gpu_buffers(real.compute_buffers)
    assert on_gpu <= cap - settings.vram_margin


def test_vram_is_given_back_after_switching(models: dict) -> None:
    from fmgguf.runtime import ModelManager

    free0 = _cuda_free()
    manager = ModelManager(settings=load_settings(), keep_alive=0)
    manager.load_file(models["llama"], n_ctx=N_CTX, n_gpu_layers="auto")
    free_one = _cuda_free()
    assert free_one < free0
    for i in range(10):
        manager.load_file(models["gemma3" if i % 2 == 0 else "llama"], n_ctx=N_CTX, n_gpu_layers="auto")
    manager.load_file(models["llama"], n_ctx=N_CTX, n_gpu_layers="auto")
    free_again = _cuda_free()
    one_model = free0 - free_one
    assert abs(free_one - free_again) <= 0.05 * one_model + 16 * MIB, (free0, free_one, free_again)
    manager.unload()
    assert free0 - _cuda_free() <= 0.05 * one_model + 64 * MIB


def test_switch_plans_with_the_old_models_vram_given_back(models: dict) -> None:
    """The plan of a switch sees the VRAM the old model held: with a margin that leaves room for the
    new model only once the old one is gone, the new one still comes out "Full GPU"."""
    from fmgguf.runtime import ModelManager

    settings = load_settings()
    manager = ModelManager(settings=settings, keep_alive=0)
    try:
        manager.load_file(models["gemma3"], n_ctx=N_CTX)  # the CUDA context exists from here on
        manager.unload()
        free0 = _cuda_free()
        need = plan_for_file(models["gemma3"], n_ctx=N_CTX, settings=settings)  # what the switch will plan
        assert need.label == "Full GPU", need.as_dict()
        needed = sum(d.needed for d in need.devices)
        manager.load_file(models["llama"], n_ctx=1 << 18, n_gpu_layers=-1)  # a 256 MiB KV cache on the GPU
        held = free0 - _cuda_free()
        assert held > 200 * MIB, held
        manager.settings = settings.replace(vram_margin=free0 - needed - held // 2)
        result = manager.load_file(models["gemma3"], n_ctx=N_CTX)
        assert result.plan.label == "Full GPU", (held, result.plan.as_dict())
    finally:
        manager.close()


def test_a_draft_model_on_the_gpu_beside_the_model(models: dict, tmp_path: Path) -> None:
    """Speculative decoding's draft model (here the tiny llama drafting for a copy of itself) goes on the
    GPU beside a fully offloaded model: the plan counts it, its buffers are CUDA ones, greedy text holds."""
    from fmgguf.runtime.engine.engine import Engine, GenerationStats, LoadOptions
    from fmgguf.runtime.plan.fit import DraftSource

    path = models["llama"]
    own = tmp_path / "draft.gguf"
    own.write_bytes(path.read_bytes())
    plan = plan_for_file(path, n_ctx=N_CTX, draft=DraftSource(name="draft", path=own))
    assert plan.label == "Full GPU" and plan.draft_gpu_layers > 0 and plan.draft_bytes > 0, plan.as_dict()

    def run(e: Engine, **kw) -> tuple[str, GenerationStats]:
        stats = GenerationStats()
        return "".join(e.stream(e.tokenize("def f(x):", add_bos=e.add_bos), stats, max_tokens=32,
                                temperature=0, **kw)), stats

    opts = LoadOptions(n_ctx=N_CTX, n_gpu_layers=-1, parallel=2, draft_path=str(own),
                       draft_gpu_layers=plan.draft_gpu_layers, draft_p_min=0.0)
    with Engine(path, opts) as e:
        assert any(k.startswith("CUDA") for k in e.draft.buffers.get("by_device", {})), e.draft.buffers
        plain, _ = run(e)
        text, stats = run(e, speculative="draft")
        assert text == plain and stats.accepted_tokens > 0
