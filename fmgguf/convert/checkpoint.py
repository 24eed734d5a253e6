"""What is in a Hugging Face checkpoint directory, checked before anything slow starts.

Reads ``config.json`` (architecture), finds the tokenizer and weight files, and estimates the F16
GGUF size from the safetensors headers (no tensor data is read), so the disk check can say numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fmgguf._util import human_bytes
from fmgguf.errors import ConvertError, DiskSpaceError

#: files any one of which gives the converter a tokenizer
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "vocab.json", "tokenizer.jsonl")
#: disk needed = F16 size × this (F16 + Q8_0 ≈ 0.53 + Q4_K_M ≈ 0.30, plus slack for temp files)
DISK_FACTOR = 2.5

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict
    architecture: str
    weights: list[Path]
    tokenizer_files: list[Path]
    n_params: int | None
    #: estimated bytes of the F16 GGUF
    f16_bytes: int
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Identifies this checkpoint's content cheaply: config, tokenizer files, weight names/sizes/mtimes."""
        h = hashlib.sha256()
        h.update(json.dumps(self.config, sort_keys=True).encode())
        for p in sorted(self.tokenizer_files + self.weights):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _safetensors_numel(path: Path) -> tuple[int, int]:
    """(parameters, bytes as stored) from a .safetensors header."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n <= 0 or n > 100 * 1024 * 1024:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path.name} is not a readable safetensors file ({exc})",
                           fix="re-download the checkpoint's weights") from None
    params = stored = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        numel = math.prod(int(d) for d in info.get("shape", []))
        params += numel
        stored += numel * _DTYPE_BYTES.get(str(info.get("dtype")), 4)
    return params, stored


def read_checkpoint(path: str | Path, supported: dict[str, str] | None = None) -> Checkpoint:
    """Validate a local checkpoint directory; ``supported`` maps HF architecture names the converter knows."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConvertError(f"{root} is not a directory",
                           fix="give a local checkpoint directory (download it first, e.g. `hf download REPO --local-dir DIR`)")
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise ConvertError(f"{root} has no config.json", fix="copy the model's config.json into the checkpoint directory")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{cfg_file} is not valid JSON ({exc})", fix="re-download config.json") from None
    if not isinstance(config, dict):
        raise ConvertError(f"{cfg_file} does not hold a JSON object", fix="re-download config.json")
    arches = config.get("architectures")
    text_cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    if isinstance(text_cfg.get("architectures"), list) and text_cfg["architectures"]:
        arches = text_cfg["architectures"]
    if not isinstance(arches, list) or not arches or not isinstance(arches[0], str):
        raise ConvertError(f"{cfg_file} names no `architectures`",
                           fix='add e.g. "architectures": ["LlamaForCausalLM"] to config.json')
    arch = arches[0]
    if supported is not None:
        check_architecture(arch, supported)
    tokenizer = [root / f for f in TOKENIZER_FILES if (root / f).is_file()]
    if not tokenizer:
        raise ConvertError(f"{root} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
                           fix="copy the model's tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json) into it")
    weights = sorted(root.glob("*.safetensors"))
    if not weights:
        weights = sorted(p for p in root.glob("*.bin") if p.name.startswith("pytorch_model"))
    if not weights:
        raise ConvertError(f"{root} has no weights (*.safetensors or pytorch_model*.bin)",
                           fix="download the model's weight files into the checkpoint directory")
    notes: list[str] = []
    if weights[0].suffix == ".safetensors":
        params = 0
        for w in weights:
            params += _safetensors_numel(w)[0]
        f16 = params * 2
    else:
        params = None
        stored = sum(w.stat().st_size for w in weights)
        f16 = stored  # pytorch .bin of unknown dtype: assume 16-bit
        notes.append("F16 size estimated from .bin file sizes")
    return Checkpoint(root, config, arch, weights, tokenizer, params or None, max(f16, 1), notes)


def check_architecture(arch: str, supported: dict[str, str]) -> None:
    """ConvertError unless the converter registers ``arch`` (an HF ``architectures`` name)."""
    if arch in supported:
        return
    import difflib

    near = difflib.get_close_matches(arch, list(supported), n=4, cutoff=0.75)
    hint = f" (similar: {', '.join(near)})" if near else ""
    raise ConvertError(f"architecture {arch} is not supported by llama.cpp's converter{hint}",
                       fix="use a checkpoint of a supported architecture (e.g. LlamaForCausalLM, Qwen2ForCausalLM)")


def check_disk(out_dir: Path, f16_bytes: int, already: int = 0, factor: float = DISK_FACTOR) -> int:
    """Raise DiskSpaceError unless ``out_dir`` has room for F16 × factor (less what is already done)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    need = max(int(f16_bytes * factor) - already, 0)
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise DiskSpaceError(
            f"converting needs about {human_bytes(need)} free in {out_dir} "
            f"(F16 {human_bytes(f16_bytes)} × {factor}), only {human_bytes(free)} is free",
            fix="free some disk or pick another --out directory",
            need=need, free=free)
    return need
