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
GPU_CMAKE := $(CMAKE_ARGS_$(GPU))

.PHONY: install run test test-fast lint bench system-deps clean help

help:
	@echo "make run    - the whole job offline on a tiny model (mirror -> pull -> verify -> fit -> generate -> bench)"
	@echo "make test   - every test (slow and browser ones included); make test-fast skips those"
	@echo "make install [GPU=cpu|cuda|metal|vulkan], make lint, make bench, make clean"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(GPU),cpu)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
else
	CMAKE_ARGS="$(GPU_CMAKE)" FORCE_CMAKE=1 $(BIN)/python -m pip install --quiet --no-cache-dir \
	    --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python>=0.3.36,<0.4"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
endif
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# Debian packages the tests drive: Chromium for the browser tests, node and g++ for the benchmark
# tasks. Installed only where we may (root with apt-get); elsewhere those tests say what is missing.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
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
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check fmgguf tests benchmarks scripts

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache tests/artifacts
