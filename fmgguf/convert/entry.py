"""The catalog entry for converted files: names, sizes, sha256, and the numbers read back from the GGUF.

Everything architectural comes from the GGUF header (with the ``gguf`` package), not from config.json,
so the entry describes what llama.cpp will actually load.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from fmgguf.errors import ConvertError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _scalar(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.contents()
    return value


def read_arch(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """(architecture dict for the schema, parameters dict) from a GGUF's header and tensor table."""
    from gguf import GGUFReader

    try:
        r = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises assorted errors on bad files
        raise ConvertError(f"{path.name} cannot be read back as GGUF ({exc})", fix="delete it and run again") from None
    arch = _scalar(r, "general.architecture")
    if not isinstance(arch, str):
        raise ConvertError(f"{path.name} has no general.architecture", fix="delete it and run again")

    def k(name: str) -> Any:
        return _scalar(r, f"{arch}.{name}")

    n_embd, n_head = k("embedding_length"), k("attention.head_count")
    if isinstance(n_head, list):  # per-layer head counts: take the largest
        n_head = max(n_head)
    n_head_kv = k("attention.head_count_kv")
    if isinstance(n_head_kv, list):
        n_head_kv = max(n_head_kv)
    n_head_kv = n_head_kv or n_head
    head_dim = k("attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    head_dim_v = k("attention.value_length")
    tokens = r.fields.get("tokenizer.ggml.tokens")
    vocab = k("vocab_size") or (len(tokens.data) if tokens is not None else None)
    names = {t.name for t in r.tensors}
    n_ff = k("feed_forward_length")
    if isinstance(n_ff, list):
        n_ff = max(n_ff)
    out: dict[str, Any] = {
        "name": arch,
        "n_layer": k("block_count"),
        "n_embd": n_embd,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "head_dim": head_dim,
        "n_ff": n_ff or None,
        "vocab": vocab,
        "context_length": k("context_length"),
        "tied_embeddings": "output.weight" not in names,
    }
    if head_dim_v and head_dim_v != head_dim:
        out["head_dim_v"] = head_dim_v
    if k("rope.dimension_count") and k("rope.dimension_count") != head_dim:
        out["rope_dim"] = k("rope.dimension_count")
    if k("attention.sliding_window"):
        out["sliding_window"] = k("attention.sliding_window")
    if k("attention.kv_lora_rank"):
        out["kv_lora_rank"] = k("attention.kv_lora_rank")
    total = sum(int(t.n_elements) for t in r.tensors)
    active = total
    n_expert, n_used = k("expert_count"), k("expert_used_count")
    if n_expert and n_used:
        out["moe"] = {"n_expert": n_expert, "n_expert_used": n_used,
                      "n_expert_shared": k("expert_shared_count") or 0}
        if k("expert_feed_forward_length"):
            out["moe"]["expert_ff"] = k("expert_feed_forward_length")
        expert = sum(int(t.n_elements) for t in r.tensors if "_exps" in t.name)
        active = total - expert + expert * n_used // n_expert
    missing = [key for key, v in out.items() if v is None and key not in ("n_ff",)]
    if missing:
        raise ConvertError(f"{path.name} lacks {', '.join(missing)} in its header", fix="delete it and run again")
    return out, {"total": total, "active": max(active, 1)}


def model_id_for(name: str) -> str:
    """A catalog id from a file-name stem: lower-case, only [a-z0-9._-]."""
    mid = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not mid:
        raise ConvertError(f"cannot make a catalog id from {name!r}", fix="pass --model-id, e.g. my-model")
    return mid


def build_entry(model_id: str, name: str, files: dict[str, Path], repo: str | None = None,
                source: str | None = None, license: str = "unknown", notes: list[str] | None = None) -> dict[str, Any]:
    """A user-catalog card (raw dict) for ``files`` (quant → local GGUF), validated against ModelCard."""
    from fmgguf.catalog.schema import KNOWN_ARCHES, ModelCard

    if not files:
        raise ConvertError("no GGUF files to describe", fix="run the conversion first")
    first = files.get("Q4_K_M") or next(iter(files.values()))
    arch, params = read_arch(first)
    repo = repo or f"local/{model_id}"
    variants = {}
    for quant, path in files.items():
        size = path.stat().st_size
        variants[quant] = {"repo": repo, "files": [{"name": path.name, "size": size, "sha256": sha256_file(path)}],
                           "total_size": size}
    entry: dict[str, Any] = {
        "id": model_id,
        "family": "custom",
        "display_name": name,
        "parameters": params,
        "arch": arch,
        "license": license,
        "capabilities": ["converted"],
        "variants": variants,
        "notes": list(notes or []),
    }
    if source:
        entry["source_repo"] = source
        entry["notes"].append(f"converted from {source}")
    if arch["name"] not in KNOWN_ARCHES:  # fmgguf cannot size it; the files still load in llama.cpp
        entry["notes"].append(f"architecture {arch['name']} is not one fmgguf sizes; arch numbers left out")
        del entry["arch"]
    entry = {k: v for k, v in entry.items() if v is not None}
    try:
        ModelCard.model_validate({**entry, "builtin": False})
    except Exception as exc:  # pydantic.ValidationError
        first_err = str(exc).splitlines()
        raise ConvertError(f"the catalog entry for {model_id} does not validate: {' '.join(first_err[:3])}",
                           fix="report this as a bug with the GGUF header (`fmgguf inspect FILE`)") from None
    return entry
