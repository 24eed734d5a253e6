#!/usr/bin/env bash
# The GPU check, in two halves.
#
#   scripts/gpu_check.sh prepare     # HERE (internet to PyPI): fills build/gpu-carry/ (~35 MB):
#                                    #   the llama-cpp-python sdist without .git, models, docs, tools/ui (~11 MB),
#                                    #   wheels the CUDA image lacks (pydantic, gguf, platformdirs, diskcache, ...),
#                                    #   the tiny llama + gemma3 Q4_K_M models the gpu tests use.
#   scripts/gpu_check.sh run         # ON THE CUDA MACHINE (no internet; carry build/gpu-carry):
#                                    #   installs the wheels, builds llama-cpp-python with CUDA for this GPU's
#                                    #   architecture only, then runs `pytest -m gpu` (runtime tests).
#
# Device-tool call:  run(command="bash scripts/gpu_check.sh run", carry=["build/gpu-carry"], timeout_s=590)
# A rerun on the same warm machine reuses build/gpu-llama-build (incremental build).
# GPU_CHECK_FA=1 also compiles the CUDA flash-attention kernels (slower build); GPU_CHECK_TESTS overrides the
# test paths (default: tests/runtime_fit tests/runtime_engine tests/rpc: one CUDA worker, a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=build/gpu-carry
PY_TAG=3.12

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    mkdir -p "$CARRY/wheels" "$CARRY/cache/tiny"
    local sdist
    sdist=$("$py" -c 'from fmgguf.testing import ensure_sdist; print(ensure_sdist())')
    local tmp
    tmp=$(mktemp -d)
    tar xzf "$sdist" -C "$tmp"
    local top
    top=$(ls "$tmp")
    rm -rf "$tmp/$top/.git" "$tmp/$top/vendor/llama.cpp/.git" "$tmp/$top/vendor/llama.cpp/models" \
        "$tmp/$top/vendor/llama.cpp/docs" "$tmp/$top/vendor/llama.cpp/tools/ui" "$tmp/$top/docs"
    tar czf "$CARRY/llama-cpp-python.tar.gz" -C "$tmp" "$top"
    rm -rf "$tmp"
    # packages fmgguf needs that the CUDA image does not hold (its python3 is 3.12)
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        platformdirs==4.14.8 gguf==0.19.0 diskcache==5.6.3
    # the tiny models, under their content-addressed names (build_tiny_model finds them there)
    FMGGUF_CACHE_OUT="$CARRY/cache/tiny" "$py" - <<'EOF'
import os, shutil
from fmgguf.testing import build_tiny_model
for arch in ("llama", "gemma3"):
    p = build_tiny_model(arch, quant="Q4_K_M")
    shutil.copy2(p, os.path.join(os.environ["FMGGUF_CACHE_OUT"], p.name))
EOF
    du -sh "$CARRY"
}

run() {
    local py=python3
    test -d "$CARRY" || { echo "no $CARRY: run 'scripts/gpu_check.sh prepare' here first and carry it" >&2; exit 2; }
    nvidia-smi --query-gpu=name,compute_cap,memory.total,memory.free --format=csv,noheader
    local cap
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    local site=/tmp/fmgguf-site
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$CARRY"/wheels/*.whl
    local fa=OFF
    [ "${GPU_CHECK_FA:-0}" = "1" ] && fa=ON
    local t0=$SECONDS
    export CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$cap -DGGML_CUDA_FA=$fa -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON \
-DGGML_RPC=ON -DGGML_RPC_RDMA=OFF"
    export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
    PYTHONPATH="$site" "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
        --target "$site" -Cbuild-dir=build/gpu-llama-build "$CARRY/llama-cpp-python.tar.gz"
    echo "llama-cpp-python with CUDA (sm_$cap, FA kernels $fa) built in $((SECONDS - t0)) s"
    ls "$site/llama_cpp/lib"
    export PYTHONPATH="$site:$PWD" FMGGUF_CACHE="$PWD/$CARRY/cache" PYTHONUNBUFFERED=1
    "$py" -m fmgguf doctor
    # shellcheck disable=SC2086
    "$py" -m pytest -m gpu -p no:cacheprovider -q -rs --timeout 300 ${GPU_CHECK_TESTS:-tests/runtime_fit tests/runtime_engine tests/rpc}
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
