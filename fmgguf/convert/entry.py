"""The catalog entry for converted files: names, sizes, sha256, and the numbers read back from the GGUF.

Everything architectural comes from the GGUF header (with the ``gguf`` package), not from config.json,
so the entry describes what llama.cpp will actually load.
"""

from __future__ import annotations

import re
from pathlib import Path

from fmgguf._util import JsonObject
from fmgguf.download.hashing import sha256_file
from fmgguf.errors import ConvertError


def read_arch(path: Path) -> tuple[JsonObject, dict[str, int]]:
    """(architecture dict for the schema, parameters dict) from a GGUF's header and tensor table."""
    from fmgguf.errors import GGUFError
    from fmgguf.runtime.gguf.card_arch import card_numbers
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    try:
        arch, params = card_numbers(read_gguf(path))
    except GGUFError as exc:
        raise ConvertError(f"{path.name} cannot be read back as GGUF ({exc.message})", fix="delete it and run again") from None
    missing = [key for key, v in arch.items() if v is None and key not in ("n_ff",)]
    if missing:
        raise ConvertError(f"{path.name} lacks {', '.join(missing)} in its header", fix="delete it and run again")
    return arch, params


def model_id_for(name: str) -> str:
    """A catalog id from a file-name stem: lower-case, only [a-z0-9._-]."""
    mid = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not mid:
        raise ConvertError(f"cannot make a catalog id from {name!r}", fix="pass --model-id, e.g. my-model")
    return mid


def build_entry(model_id: str, name: str, files: dict[str, Path], repo: str | None = None,
                source: str | None = None, license: str = "unknown", notes: list[str] | None = None) -> JsonObject:
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
    entry: JsonObject = {
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
    from pydantic import ValidationError

    try:
        ModelCard.model_validate({**entry, "builtin": False})
    except ValidationError as exc:
        first_err = str(exc).splitlines()
        raise ConvertError(f"the catalog entry for {model_id} does not validate: {' '.join(first_err[:3])}",
                           fix="report this as a bug with the GGUF header (`fmgguf inspect FILE`)") from None
    return entry
