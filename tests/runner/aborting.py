"""GGUF files that lie in ways that kill llama.cpp (abort, segfault, division by zero) at load or at
the first decode, built with the ``gguf`` package from the tiny-model writer.

Test support only: they are loaded *around* validation (straight into a runner), to prove that a
runner's death takes nothing else down. Each lie was checked against llama-cpp-python 0.3.36:
:func:`kills_llama_cpp` loads and decodes a file in a throw-away child and reports how it died.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DROP = object()


@dataclass(frozen=True)
class Lie:
    """One way to lie: metadata overrides (``{arch}`` is replaced; ``DROP`` leaves a key out) and an
    optional change to the tensors (name, array) -> array or None (left out)."""

    name: str
    arch: str
    overrides: dict[str, Any] = field(default_factory=dict)
    tensors: Callable[[str, Any], Any] | None = None


class _LyingWriter:
    """Wraps a GGUFWriter: the metadata calls of the tiny writer go through ``overrides``."""

    def __init__(self, writer: Any, overrides: dict[str, Any]) -> None:
        self._writer = writer
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._writer, name)
        if name not in ("add_uint32", "add_float32", "add_string", "add_bool", "add_int32"):
            return fn

        def add(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
            if key in self._overrides:
                value = self._overrides[key]
                if value is DROP:
                    return None
            return fn(key, value, *args, **kwargs)
        return add


def write_lying_model(lie: Lie, out: Path, seed: int = 0) -> Path:
    """The tiny ``lie.arch`` model, written with ``lie``'s overrides."""
    import gguf

    from fmgguf.tiny.tiny_specs import tiny_spec
    from fmgguf.tiny.tiny_writer import _copy_tokenizer, _metadata, _values, tensor_shapes
    from fmgguf.tiny.vocab import ensure_vocab

    spec = tiny_spec(lie.arch, "unit")
    overrides = {k.replace("{arch}", spec.arch): v for k, v in lie.overrides.items()}
    writer = gguf.GGUFWriter(str(out), spec.arch)
    n_vocab = _copy_tokenizer(writer, spec, ensure_vocab(spec.vocab))
    _metadata(_LyingWriter(writer, overrides), spec, n_vocab)  # type: ignore[arg-type]
    for name, shape in tensor_shapes(spec, n_vocab):
        data = _values(name, shape, seed)
        if lie.tensors is not None:
            data = lie.tensors(name, data)
        if data is not None:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


_EPS = "{arch}.attention.layer_norm_rms_epsilon"

#: lies that kill llama-cpp-python 0.3.36 (GGML_ASSERT -> SIGABRT), at load or at the first decode.
#: (A block_count far above the tensors present, head counts or widths that disagree with the
#: tensors, and odd rope dims are refused cleanly by this llama.cpp: an error, not an abort.)
LIES: tuple[Lie, ...] = (
    Lie("nan-rms-eps", "llama", {_EPS: math.nan}),  # decode: GGML_ASSERT(eps >= 0.0f)
    Lie("neg-rms-eps", "llama", {_EPS: -1.0}),
    Lie("neginf-rms-eps", "llama", {_EPS: -math.inf}),
    Lie("nan-rms-eps-qwen2", "qwen2", {_EPS: math.nan}),
    Lie("tiny-neg-rms-eps-qwen2", "qwen2", {_EPS: -1e-5}),
    Lie("nan-rms-eps-gemma3", "gemma3", {_EPS: math.nan}),
    Lie("nan-rms-eps-deepseek2", "deepseek2", {_EPS: math.nan}),
    Lie("neg-norm-eps-starcoder2", "starcoder2", {"{arch}.attention.layer_norm_epsilon": -1.0}),
    Lie("moe-used-above-count", "deepseek2", {"{arch}.expert_used_count": 99}),  # load
    Lie("moe-used-zero", "deepseek2", {"{arch}.expert_used_count": 0}),  # load
    Lie("moe-gating-unknown", "deepseek2", {"{arch}.expert_gating_func": 7}),  # decode: fatal error
)

_PROBE = r"""
import sys
from fmgguf.runtime.engine.engine import Engine, LoadOptions, GenerationStats
with Engine(sys.argv[1], LoadOptions(n_ctx=128)) as e:
    toks = e.tokenize("def f(x):", add_bos=e.add_bos)
    text = "".join(e.stream(toks, GenerationStats(), max_tokens=4, temperature=0))
print("survived")
"""


def kills_llama_cpp(path: Path, timeout: float = 120) -> tuple[bool, int, str]:
    """(killed, return code, last stderr line) of loading and decoding ``path`` in a throw-away child."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode < 0, proc.returncode, tail
