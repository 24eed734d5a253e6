"""Child-process entry points that drive llama.cpp directly: the no-alloc dry run and quantization.

Both can abort the whole process on misuse or a bad file, so callers run them as
``python -m fmgguf.runtime.engine.engine_child --dry-run JSON`` or ``--quantize SRC DST FTYPE NTHREAD``.
llama.cpp itself is reached through :func:`fmgguf.runtime.engine.llama_lib.lib` (the one llama_cpp import).

The dry run measures llama.cpp's own allocations with no_alloc=True (nothing is allocated); with
"alloc": true it really loads the model (to check estimates). It prints one JSON line prefixed
with DRYRUN_RESULT: the captured llama.cpp log and a few numbers.
"""

from __future__ import annotations

import ctypes
import json
import sys

from fmgguf.runtime.engine.llama_lib import lib

# llama.cpp measures its own allocations with no_alloc=True (nothing is allocated; a misuse aborts
# the process, hence the child). With "alloc": true it really loads the model (to check estimates).
# Prints one JSON line prefixed with DRYRUN_RESULT: the captured llama.cpp log and a few numbers.

_DRY_RUN_MARK = "DRYRUN_RESULT:"


_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30, "iq4_nl": 20}


def _model_params(lc, request: dict):  # noqa: ANN001, ANN202 - the llama_cpp module and its ctypes struct
    mp = lc.llama_model_default_params()
    mp.n_gpu_layers = int(request.get("n_gpu_layers", 0))
    mp.split_mode = int(request.get("split_mode", lc.LLAMA_SPLIT_MODE_LAYER))
    mp.main_gpu = int(request.get("main_gpu", 0))
    split = request.get("tensor_split")
    if split:  # ctypes keeps the array alive with the struct
        mp.tensor_split = (ctypes.c_float * lc.llama_max_devices())(*[float(x) for x in split])
    if "use_extra_bufts" in request:
        mp.use_extra_bufts = bool(request["use_extra_bufts"])
    if request.get("alloc"):
        mp.load_mode = lc.LLAMA_LOAD_MODE_MMAP if request.get("use_mmap", True) else lc.LLAMA_LOAD_MODE_NONE
    else:
        mp.no_alloc = True
        mp.load_mode = lc.LLAMA_LOAD_MODE_NONE  # mmap + no_alloc trips GGML_ASSERT(!ml.no_alloc)
    return mp


def _context_params(lc, request: dict):  # noqa: ANN001, ANN202 - the llama_cpp module and its ctypes struct
    cp = lc.llama_context_default_params()
    cp.n_ctx = int(request.get("n_ctx", 4096))
    cp.n_batch = int(request.get("n_batch", 512))
    cp.n_ubatch = int(request.get("n_ubatch", 512))
    cp.n_seq_max = int(request.get("n_seq_max", 1))
    fa = request.get("flash_attn")
    cp.flash_attn_type = (lc.LLAMA_FLASH_ATTN_TYPE_AUTO if fa is None
                          else lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if fa else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    cp.type_k = _GGML_TYPES[request.get("type_k", "f16")]
    cp.type_v = _GGML_TYPES[request.get("type_v", "f16")]
    cp.swa_full = bool(request.get("swa_full", True))
    cp.offload_kqv = bool(request.get("offload_kqv", True))
    if request.get("n_threads"):
        cp.n_threads = cp.n_threads_batch = int(request["n_threads"])
    return cp


def _device_memory() -> list:
    from fmgguf.runtime.hw.devices import ggml_devices  # ctypes on the same ggml libraries

    return [[d.name, d.free, d.total] for d in ggml_devices()]


def _dry_run_child(request: dict) -> dict:
    lc = lib()
    lines: list[str] = []

    @lc.llama_log_callback
    def _on_log(level, text, user_data):  # noqa: ANN001 - ctypes callback
        lines.append(text.decode("utf-8", "replace") if text else "")

    lc.llama_log_set(_on_log, ctypes.c_void_p(0))
    lc.llama_backend_init()
    out: dict = {"ok": False}
    if request.get("devices"):
        out["devices_before"] = _device_memory()
    model = lc.llama_model_load_from_file(str(request["path"]).encode(), _model_params(lc, request))
    if not model:
        out["error"] = "model load failed"
        out["log"] = "".join(lines)
        return out
    ctx = lc.llama_init_from_model(model, _context_params(lc, request))
    out["model_size"] = int(lc.llama_model_size(model))
    out["n_params"] = int(lc.llama_model_n_params(model))
    if ctx:
        out["ok"] = True
        out["n_ctx"] = int(lc.llama_n_ctx(ctx))
        if request.get("devices"):
            out["devices_loaded"] = _device_memory()
        lc.llama_free(ctx)
    else:
        out["error"] = "context creation failed"
    lc.llama_model_free(model)
    out["log"] = "".join(lines)
    return out


def _dry_run_main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    result = _dry_run_child(request)
    sys.stdout.write(_DRY_RUN_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result.get("ok") else 3


def quantize(src: str, dst: str, ftype: int, nthread: int = 0, requantize: bool = False) -> int:
    """llama_model_quantize with default parameters (``requantize``: a quantized source may be converted,
    e.g. Q4_K_M to F16); returns llama.cpp's status (0 = ok)."""
    lc = lib()
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    params.allow_requantize = bool(requantize)
    return int(lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--dry-run":
        return _dry_run_main(argv[1:])
    if len(argv) in (5, 6) and argv[0] == "--quantize" and argv[5:] in ([], ["--requantize"]):
        return quantize(argv[1], argv[2], int(argv[3]), int(argv[4]), requantize=len(argv) == 6)
    sys.stderr.write("usage: python -m fmgguf.runtime.engine.engine_child --dry-run JSON | "
                     "--quantize SRC DST FTYPE NTHREAD [--requantize]\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
