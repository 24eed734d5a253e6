"""Other quantizations of the real demo model, made here: its weights back to F16, then llama.cpp's
own quantizer. They let tests and benchmarks check what this CPU repacks (Q4_0, IQ4_NL, Q4_K) on a
file with real shapes and real weights. Cached beside the real model; rebuilt only when missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fmgguf.errors import ConvertError

#: quant name -> llama_ftype (llama.h)
FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "IQ4_NL": 25}


def derived_quant(real: Path, quant: str) -> Path:
    """``real`` (a GGUF) requantized to ``quant`` through F16, in the folder ``real`` lives in."""
    out = real.with_name(f"{real.stem}.derived-{quant}.gguf")
    if out.is_file():
        return out
    f16 = real.with_name(f"{real.stem}.derived-F16.gguf")
    if not f16.is_file():
        _to_f16(real, f16)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    nthread = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.run([sys.executable, "-m", "fmgguf.runtime.engine.engine_child", "--quantize", str(f16), str(tmp),
                           str(FTYPES[quant]), nthread], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ConvertError(f"llama.cpp could not quantize {f16.name} to {quant} (rc {proc.returncode})",
                           fix="check the llama-cpp-python build")
    os.replace(tmp, out)
    return out


def _to_f16(src: Path, dst: Path) -> None:
    """Copy every key of ``src`` and its tensors, the quantized ones dequantized to F16."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        if name == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_F16)
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    keep = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    for t in reader.tensors:
        if t.tensor_type in keep:
            writer.add_tensor(t.name, np.array(t.data))
        else:
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float16)
            writer.add_tensor(t.name, data.reshape(tuple(reversed([int(x) for x in t.shape]))))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
