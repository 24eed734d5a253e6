"""Benchmarks: a task suite (data files), sandboxed executors, metrics, the runner and reports.

Importing this package is cheap; the parts load on first use.
"""

from __future__ import annotations

from fmgguf._util import lazy_exports

_LAZY = {
    "ModelBenchmarker": "fmgguf.bench.runner:ModelBenchmarker",
    "get_model_benchmarker": "fmgguf.bench.runner:get_model_benchmarker",
    "Task": "fmgguf.bench.tasks:Task",
    "load_suite": "fmgguf.bench.tasks:load_suite",
    "Executor": "fmgguf.bench.executors:Executor",
    "ExecResult": "fmgguf.bench.executors:ExecResult",
    "Sandbox": "fmgguf.bench.sandbox:Sandbox",
    "Limits": "fmgguf.bench.sandbox:Limits",
    "pass_at_k": "fmgguf.bench.metrics:pass_at_k",
    "summarize": "fmgguf.bench.metrics:summarize",
}

__all__ = list(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY)
