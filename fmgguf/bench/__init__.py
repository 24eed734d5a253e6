"""Benchmarks: a task suite (data files), sandboxed executors, metrics, the runner and reports.

Importing this package is cheap; the parts load on first use.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    import importlib

    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fmgguf.bench' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
