"""Fit plans: labels for no GPU, a tiny GPU, a partial fit and an ample GPU; RAM too small; several GPUs;
context shrinking and KV quantization; the plan before download from a header read over HTTP Range."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.hw.devices import Device, SystemMemory
from fmgguf.runtime.plan.estimate import GPU_RUNTIME_OVERHEAD, estimate_file
from fmgguf.runtime.plan.fit import choose, plan_for_card, plan_for_file
from fmgguf.settings import load_settings

GiB = 1024**3


def gpu(free: int, name: str = "CUDA0", index: int = 0) -> Device:
    return Device(index, name, "test GPU", "GPU", free, free, "CUDA")


def mem(*gpus: Device, ram: int = 16 * GiB) -> SystemMemory:
    return SystemMemory(list(gpus), ram, ram, ["CPU", "CUDA"])


@pytest.fixture(scope="module")
def setup(tiny: dict) -> tuple:
    settings = load_settings()
    path = tiny[("llama", "F16")]
    est = estimate_file(read_gguf(path), n_ctx=2048)
    return settings, path, est


def _vram_for(settings, est, k: int) -> int:
    """Free VRAM that holds exactly k layers (+ margin and runtime overhead)."""
    return est.device_bytes(k) + settings.vram_margin + GPU_RUNTIME_OVERHEAD


def test_labels_for_vram_0_tiny_partial_ample(setup: tuple) -> None:
    settings, path, est = setup
    n = est.n_layers
    cases = {0: ("CPU only", 0), 64 * 1024**2: ("CPU only", 0), _vram_for(settings, est, n) - 1: (None, n - 1),
             _vram_for(settings, est, 1): (f"Partial (1 of {n} layers)", 1), 80 * GiB: ("Full GPU", n),
             _vram_for(settings, est, n): ("Full GPU", n)}
    for vram, (label, k) in cases.items():
        plan = plan_for_file(path, n_ctx=2048, settings=settings, vram=vram, measure=False)
        assert plan.n_gpu_layers == k, (vram, plan.as_dict())
        assert plan.label == (label or f"Partial ({k} of {n} layers)")
        assert plan.fits and plan.n_layers == n
        assert plan.vram_needed <= max(vram - settings.vram_margin, 0)


def test_output_layer_goes_first(setup: tuple) -> None:
    settings, _, est = setup
    assert est.device_bytes(1) == est.output_weights + est.compute
    assert est.device_bytes(2) - est.device_bytes(1) == est.layer_weights[-1] + est.kv_layers[-1]
    assert est.host_bytes(0) == est.total


def test_wont_fit_when_ram_is_short(setup: tuple) -> None:
    settings, path, est = setup
    plan = plan_for_file(path, n_ctx=2048, settings=settings, mem=mem(ram=settings.ram_margin + 1024), measure=False)
    assert plan.label == "Won't fit" and not plan.fits
    # the same machine with an ample GPU: everything goes there and little RAM is needed
    plan = plan_for_file(path, n_ctx=2048, settings=settings, measure=False,
                         mem=mem(gpu(40 * GiB), ram=settings.ram_margin + est.host_bytes(est.n_layers) + 1))
    assert plan.label == "Full GPU" and plan.fits



def test_ram_exactly_equal_to_the_need_fits_and_one_byte_less_does_not(setup: tuple) -> None:
    settings, path, est = setup
    need = est.host_bytes(0)  # no GPU: everything in RAM
    exact = plan_for_file(path, n_ctx=2048, settings=settings, measure=False, mem=mem(ram=settings.ram_margin + need))
    assert exact.ram_needed == need
    assert exact.fits and exact.label == "CPU only", exact.as_dict()
    short = plan_for_file(path, n_ctx=2048, settings=settings, measure=False,
                          mem=mem(ram=settings.ram_margin + need - 1))
    assert not short.fits and short.label == "Won't fit", short.as_dict()

def test_two_gpus_share_the_layers(setup: tuple) -> None:
    settings, path, est = setup
    n = est.n_layers
    last = _vram_for(settings, est, 2)  # output layer + the top block
    first = settings.vram_margin + GPU_RUNTIME_OVERHEAD + est.compute + est.layer_weights[0] + est.kv_layers[0]
    plan = plan_for_file(path, n_ctx=2048, settings=settings, measure=False,
                         mem=mem(gpu(first, "CUDA0", 0), gpu(last, "CUDA1", 1)))
    assert plan.label == "Full GPU"
    assert [d.layers for d in plan.devices] == [n - 2, 2]
    assert plan.devices[1].output_layer and not plan.devices[0].output_layer
    assert plan.tensor_split == [float(n - 2), 2.0]
    assert plan.llama_kwargs()["tensor_split"] == plan.tensor_split


def test_auto_context_shrinks_until_full_gpu(setup: tuple) -> None:
    settings, path, _ = setup
    info = read_gguf(path)

    def make(ctx, tk, tv, fa):
        return estimate_file(info, n_ctx=ctx, type_k=tk, type_v=tv, flash_attn=fa)

    small = make(1024, "f16", "f16", False)
    vram = _vram_for(settings, small, small.n_layers)
    plan = choose(make, mem(gpu(vram)), settings, n_ctx="auto", n_ctx_train=info.n_ctx_train, type_k="f16",
                  type_v="f16", flash_attn=False, n_ctx_min=512)
    assert plan.label == "Full GPU"
    assert 1024 <= plan.n_ctx < info.n_ctx_train
    bigger = make(plan.n_ctx + 256, "f16", "f16", False)
    assert bigger.device_bytes(bigger.n_layers) + settings.vram_margin + GPU_RUNTIME_OVERHEAD > vram


def test_kv_quantization_before_dropping_layers(setup: tuple) -> None:
    settings, path, _ = setup
    info = read_gguf(path)
    f16 = estimate_file(info, n_ctx=16384)
    q8 = estimate_file(info, n_ctx=16384, type_k="q8_0", type_v="q8_0", flash_attn=True)
    assert q8.device_bytes(q8.n_layers) < f16.device_bytes(f16.n_layers)
    vram = _vram_for(settings, q8, q8.n_layers)
    plain = plan_for_file(path, n_ctx=16384, settings=settings, vram=vram, measure=False)
    assert plain.label.startswith("Partial") or plain.label == "CPU only"
    plan = plan_for_file(path, n_ctx=16384, settings=settings, vram=vram, kv_quant=True, measure=False)
    assert plan.label == "Full GPU" and plan.type_k == "q8_0" and plan.flash_attn


def test_measured_plan_uses_llama_cpp_compute(setup: tuple) -> None:
    settings, path, _ = setup
    plan = plan_for_file(path, n_ctx=2048, settings=settings, vram=0, measure=True)
    assert plan.estimate.compute_source == "dry-run"
    assert plan.label == "CPU only"


def test_plan_before_download_reads_the_header_over_http(tiny: dict) -> None:
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.testing import HubServer, tiny_card, tiny_repo_files

    files = tiny_repo_files("tiny-q", arch="qwen2", quants=("Q4_K_M",))
    card = ModelCard.model_validate(tiny_card("tiny-q", arch="qwen2", quants=("Q4_K_M",)))
    repo = card.variant("Q4_K_M").repo
    with HubServer({repo: files}) as hub:
        settings = load_settings().replace(hf_endpoint=hub.endpoint)
        plan = plan_for_card(card, "Q4_K_M", n_ctx=2048, settings=settings, vram=0)
        sent = sum(r.get("sent") or 0 for r in hub.requests)
    local = plan_for_file(next(iter(files.values())), n_ctx=2048, settings=settings, vram=0, measure=False)
    assert plan.source == "header"
    assert plan.estimate.weights_total == local.estimate.weights_total
    assert plan.estimate.kv_total == local.estimate.kv_total
    file_size = next(iter(files.values())).stat().st_size
    assert 0 < sent < file_size / 2  # the header only, never the weights
    # offline: catalog numbers
    off = plan_for_card(card, "Q4_K_M", n_ctx=2048, settings=settings.replace(offline=True), vram=0)
    assert off.source == "catalog" and off.label == "CPU only"
    # hub unreachable: catalog numbers, with the reason
    dead = plan_for_card(card, "Q4_K_M", n_ctx=2048, settings=settings.replace(hf_endpoint="http://127.0.0.1:9"),
                         vram=0)
    assert dead.source == "catalog" and "header not read" in dead.notes[0]


def test_remote_header_corruption_is_an_error(tmp_path: Path, tiny: dict) -> None:
    from fmgguf.errors import GGUFError
    from fmgguf.runtime.gguf.remote_header import read_remote_gguf
    from fmgguf.testing import HubServer

    src = tiny[("llama", "F16")]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(src.read_bytes()[:20000])
    with HubServer({"o/r": {"bad.gguf": bad}}) as hub:
        with pytest.raises(GGUFError, match="not a valid GGUF"):
            read_remote_gguf(load_settings().replace(hf_endpoint=hub.endpoint), "o/r", "bad.gguf")


def test_plan_for_file_uses_a_header_already_read(tmp_path: Path, setup: tuple) -> None:
    """plan_for_file(info=...) plans from the parsed header the caller has: the file is not read again."""
    settings, path, _ = setup
    copy = tmp_path / "m.gguf"
    copy.write_bytes(path.read_bytes())
    info = read_gguf(copy)
    expected = plan_for_file(copy, n_ctx=2048, settings=settings, mem=mem(gpu(8 * GiB)), measure=False).as_dict()
    copy.unlink()  # a second read would now fail
    plan = plan_for_file(copy, n_ctx=2048, settings=settings, mem=mem(gpu(8 * GiB)), measure=False, info=info)
    assert plan.as_dict() == expected and plan.label == "Full GPU"
