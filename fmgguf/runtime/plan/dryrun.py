"""llama.cpp's own measurement of a model's memory, taken in a child process.

llama.cpp can load a model and create a context with ``no_alloc=True``: nothing is allocated, but
its log then states the exact KV-cache size and every compute/output buffer it would create
(offload.md §1.4). Misused, that path aborts the process (GGML_ASSERT), so it always runs in a
child: ``python -m fmgguf.runtime.engine.engine_child --dry-run JSON`` (which reaches llama.cpp
through llama_lib.lib(), the only llama_cpp import). The same child with ``alloc=True`` really
loads the model, which is how tests check our estimates against what llama.cpp allocates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from fmgguf._util import JsonObject
from fmgguf.errors import EngineError, GGUFError
from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.gguf.gguf_info import GGUFInfo

MIB = 1024 * 1024
_MARK = "DRYRUN_RESULT:"
#: `<func>:  <buffer> <kind> buffer size = X MiB` (the same lines Ollama parses)
BUFFER_RE = re.compile(r"(\w+):\s+(\S+)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB")
#: `llama_kv_cache: size = X MiB (N cells, L layers, s/S seqs), K (f16): a MiB, V (f16): b MiB`
KV_SIZE_RE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*(\d+)/(\d+) seqs\),"
                        r" K \((\w+)\):\s*([\d.]+) MiB, V \((\w+)\):\s*([\d.]+) MiB")
OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
#: one ``llama_kv_cache: size`` line: bytes, cells, layers, and the K and V types and bytes
KvCacheLine = dict[str, int | str]
DEVICE_FREE_RE = re.compile(r"using device (\S+) \((.*?)\).* - (\d+) MiB free")


@dataclass
class Measurement:
    """What llama.cpp reported (sizes in bytes; from MiB with two decimals, so ±5 KiB each)."""

    ok: bool
    n_ctx: int | None
    model_size: int | None  # llama_model_size(): exact weight bytes
    model_buffers: dict[str, int] = field(default_factory=dict)  # buffer name -> bytes (0 in no_alloc)
    kv_buffers: dict[str, int] = field(default_factory=dict)
    compute_buffers: dict[str, int] = field(default_factory=dict)
    output_buffers: dict[str, int] = field(default_factory=dict)
    kv_caches: list[KvCacheLine] = field(default_factory=list)  # one per `llama_kv_cache: size` line
    offloaded: tuple[int, int] | None = None
    #: with devices=True: [name, free, total] per ggml device before loading and once loaded
    devices_before: list[list[str | int]] = field(default_factory=list)
    devices_loaded: list[list[str | int]] = field(default_factory=list)
    error: str | None = None
    log: str = field(default="", repr=False)

    @property
    def kv_total(self) -> int:
        return sum(c["bytes"] for c in self.kv_caches)

    @property
    def compute_total(self) -> int:
        return sum(self.compute_buffers.values())

    @property
    def output_total(self) -> int:
        return sum(self.output_buffers.values())

    @property
    def model_total(self) -> int:
        return sum(self.model_buffers.values())

    @property
    def allocated_total(self) -> int:
        """Everything the buffers hold (a real load): model + KV + compute + output."""
        return self.model_total + sum(self.kv_buffers.values()) + self.compute_total + self.output_total

    def as_dict(self) -> JsonObject:
        return {"ok": self.ok, "n_ctx": self.n_ctx, "model_size": self.model_size, "model_buffers": self.model_buffers,
                "kv_buffers": self.kv_buffers, "compute_buffers": self.compute_buffers,
                "output_buffers": self.output_buffers, "kv_caches": self.kv_caches, "kv_total": self.kv_total,
                "compute_total": self.compute_total, "offloaded": self.offloaded, "error": self.error}


def _mib(text: str) -> int:
    return round(float(text) * MIB)


class ParsedLog(TypedDict):
    """What a llama.cpp load log states: buffer bytes by kind (BUFFER_RE's) and buffer name, the KV
    cache lines, and (offloaded layers, layers)."""

    model: dict[str, int]
    KV: dict[str, int]
    compute: dict[str, int]
    output: dict[str, int]
    RS: dict[str, int]
    kv_caches: list[KvCacheLine]
    offloaded: tuple[int, int] | None


def parse_log(log: str) -> ParsedLog:
    """The buffer sizes, KV caches and offload count stated in a llama.cpp load log."""
    buffers: dict[str, dict[str, int]] = {"model": {}, "KV": {}, "compute": {}, "output": {}, "RS": {}}
    for m in BUFFER_RE.finditer(log):
        _, buf, kind, size = m.groups()
        buffers[kind][buf] = buffers[kind].get(buf, 0) + _mib(size)
    kv_caches: list[KvCacheLine] = []
    for m in KV_SIZE_RE.finditer(log):
        kv_caches.append({"bytes": _mib(m.group(1)), "cells": int(m.group(2)), "layers": int(m.group(3)),
                          "type_k": m.group(6), "k_bytes": _mib(m.group(7)),
                          "type_v": m.group(8), "v_bytes": _mib(m.group(9))})
    m = OFFLOADED_RE.search(log)
    return ParsedLog(model=buffers["model"], KV=buffers["KV"], compute=buffers["compute"], output=buffers["output"],
                     RS=buffers["RS"], kv_caches=kv_caches,
                     offloaded=(int(m.group(1)), int(m.group(2))) if m else None)


def measure(path: str | Path, *, n_ctx: int = 4096, n_batch: int = 512, n_ubatch: int = 512, n_gpu_layers: int = 0,
            type_k: str = "f16", type_v: str = "f16", flash_attn: bool | None = False, swa_full: bool = True,
            n_seq_max: int = 1, offload_kqv: bool = True, tensor_split: list[float] | None = None,
            main_gpu: int = 0, alloc: bool = False, use_mmap: bool = True,
            use_extra_bufts: bool | None = None, devices: bool = False, timeout: float = 120.0,
            module: str = "fmgguf.runtime.engine.engine_child") -> Measurement:
    """Ask llama.cpp (in a child process) what loading ``path`` with these parameters takes.

    ``alloc=False`` (default) is the no-alloc dry run: fast, allocates nothing. ``flash_attn=None``
    lets llama.cpp decide (AUTO). Defaults match what the engine passes llama_cpp.Llama.
    """
    n_batch = min(n_batch, n_ctx)
    request = {"path": str(path), "n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": min(n_ubatch, n_batch),
               "n_gpu_layers": n_gpu_layers, "type_k": type_k, "type_v": type_v, "flash_attn": flash_attn,
               "swa_full": swa_full, "n_seq_max": n_seq_max, "offload_kqv": offload_kqv,
               "tensor_split": tensor_split, "main_gpu": main_gpu, "alloc": alloc, "use_mmap": use_mmap,
               "devices": devices}
    if use_extra_bufts is not None:  # False: no CPU repack/AMX buffers (AMX + MoE aborts in this llama.cpp)
        request["use_extra_bufts"] = use_extra_bufts
    cmd = [sys.executable, "-m", module, "--dry-run", json.dumps(request)]
    # GGML_NO_BACKTRACE: on a GGML_ASSERT, ggml_abort would fork to attach gdb, which can hang the
    # child instead of letting it die at once
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise EngineError(f"llama.cpp's dry run of {path} took more than {timeout:.0f}s",
                          fix="check the file with `fmgguf inspect`; plan without measuring (--no-measure)") from None
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(_MARK)), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        why = f"exit code {proc.returncode}" if proc.returncode >= 0 else f"signal {-proc.returncode}"
        raise EngineError(f"llama.cpp's dry run of {path} died ({why}): {' | '.join(tail)[-300:]}",
                          fix="check the file with `fmgguf inspect` and the parameters (type_v needs flash_attn)")
    data = json.loads(line[len(_MARK):])
    _forward_log(data.get("log", ""), failed=not data.get("ok"))
    parsed = parse_log(data.get("log", ""))
    meas = Measurement(ok=bool(data.get("ok")), n_ctx=data.get("n_ctx"), model_size=data.get("model_size"),
                       model_buffers=parsed["model"], kv_buffers={**parsed["KV"], **parsed["RS"]},
                       compute_buffers=parsed["compute"], output_buffers=parsed["output"],
                       kv_caches=parsed["kv_caches"], offloaded=parsed["offloaded"], error=data.get("error"),
                       devices_before=data.get("devices_before", []), devices_loaded=data.get("devices_loaded", []),
                       log=data.get("log", ""))
    if not meas.ok and meas.model_size is None:
        reason = _log_reason(meas.log)
        raise GGUFError(f"llama.cpp could not load {path}: {reason}",
                        fix="check the file with `fmgguf inspect`, or download it again")
    return meas


def _forward_log(text: str, failed: bool) -> None:
    """The child's llama.cpp log into ours (the log file; the terminal with -v): info when it failed, so
    the lines that explain it are kept, else debug."""
    import logging

    from fmgguf.runtime.engine.llama_log import llama_log

    level = logging.INFO if failed else logging.DEBUG
    if not llama_log.isEnabledFor(level):
        return
    for ln in text.splitlines():
        if ln.strip(". "):
            llama_log.log(level, "%s", ln)


def _log_reason(log: str) -> str:
    for ln in log.splitlines():
        if "error" in ln.lower() or "failed" in ln.lower():
            return ln.strip()[:200]
    return "no reason in its log"


# --- can llama.cpp load it -------------------------------------------------------------------------
def check_loadable(path: str | Path, *, dry_run: bool = True, timeout: float = 180.0) -> GGUFInfo:
    """The header of a file llama.cpp can load, or GGUFError naming the first field it would refuse.

    Our checks first (they also catch what llama.cpp only aborts on at the first decode), then, with
    ``dry_run``, llama.cpp's own loader in a child process with nothing allocated (no_alloc), so a
    lie we do not model is refused too, and an abort kills only the child."""
    info = read_gguf(path)
    if dry_run:
        dry_run_check(path, min(512, info.n_ctx_train or 512), timeout)
    return info


def dry_run_check(path: str | Path, n_ctx: int = 512, timeout: float = 180.0) -> None:
    """llama.cpp's own loader on ``path`` in a child process, nothing allocated: GGUFError with its
    reason when it refuses the file, fails to make a context or dies (an abort kills only the child)."""
    fix = "the file is damaged or its metadata lies: get a correct GGUF (`fmgguf inspect FILE` shows its header)"
    try:
        meas = measure(path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_gpu_layers=0, flash_attn=False,
                       use_extra_bufts=False, timeout=timeout)
    except EngineError as exc:  # the child died (GGML_ASSERT, segfault) or hung
        assert_ = re.search(r"[\w.-]+:\d+: GGML_ASSERT\(.*?\) failed", exc.message)
        why = f"llama.cpp aborts loading it: {assert_.group(0)}" if assert_ else exc.message
        raise GGUFError(f"{path} cannot be loaded by llama.cpp: {why}", fix=fix) from None
    except GGUFError as exc:
        raise GGUFError(exc.message, fix=fix) from None
    if not meas.ok:
        raise GGUFError(f"{path} cannot be loaded by llama.cpp: {meas.error or 'context creation failed'}"
                        f" ({_reason(meas.log)})", fix=fix)


def _reason(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if "error" in ln.lower() or "failed" in ln.lower()]
    return lines[0][:200] if lines else "no reason in its log"
