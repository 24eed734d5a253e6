"""``fmgguf import-gguf``: register a GGUF file from this machine as a local model, no copy.

The file is hard-linked into ``store/local/<id>/<quant>/`` (or referenced where it lies when a hard
link is impossible), hashed once, and given a user-catalog entry whose sha256 pins it. Whether
llama.cpp can load the file is for the caller to check first (the CLI runs
``fmgguf.runtime.plan.dryrun.check_loadable``: download never imports the runtime).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.download.records import ModelRecord, file_record
from fmgguf.errors import GGUFError, InvalidRequestError, UnknownQuantError

if TYPE_CHECKING:
    from fmgguf.download.downloader import ModelDownloader


def guess_quant(name: str) -> str | None:
    """The llama.cpp quantization a file name spells (``…-Q4_K_M.gguf``), or None."""
    from fmgguf.catalog.schema import LLAMA_CPP_QUANTS

    upper = name.upper()
    for q in sorted(LLAMA_CPP_QUANTS, key=len, reverse=True):
        if re.search(rf"(^|[^A-Z0-9]){re.escape(q)}([^A-Z0-9]|$)", upper):
            return q
    return None


def check_new_id(dl: "ModelDownloader", model_id: str, force: bool = False, flag: str = "--as") -> str:
    """A valid id for a new local model that does not shadow a built-in catalog entry (unless ``force``)."""
    from fmgguf.catalog.schema import _ID

    if not _ID.match(model_id) or ".." in model_id:
        better = re.sub(r"[^a-z0-9._-]+", "-", model_id.lower()).strip("-._") or "my-model"
        raise InvalidRequestError(f"{flag} {model_id!r}: ids are lower-case letters, digits, '.', '_' or '-'",
                                  fix=f"e.g. {flag} {better}")
    if model_id in dl.catalog and dl.catalog.get(model_id).builtin and not force:
        raise InvalidRequestError(f"{model_id} is already a built-in catalog model; importing would replace its entry",
                                  fix=f"pick another {flag}, or pass --force to replace it")
    return model_id


def import_gguf(dl: "ModelDownloader", file: Path, model_id: str, quant: str | None = None,
                force: bool = False, fim: JsonObject | None = None) -> JsonObject:
    """Register one local GGUF as ``model_id``: a hard link in the store (or a reference), no copy.
    A built-in catalog id is refused unless ``force``. ``fim``: the card's ``fim`` block (the caller
    reads it from the vocabulary, fmgguf.runtime.prompt.fim_rule), so every command answers alike."""
    from fmgguf.catalog import normalize_quant
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.download.hashing import sha256_file

    check_new_id(dl, model_id, force)
    file = Path(file).expanduser()
    if not file.is_file():
        raise GGUFError(f"{file} is not a file", fix="give the path of a .gguf file")
    with open(file, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFError(f"{file} is not a GGUF file (no GGUF magic)", fix="convert it with llama.cpp first")
    q = normalize_quant(quant) if quant else guess_quant(file.name)
    if q is None:
        raise UnknownQuantError(f"cannot tell the quantization of {file.name} from its name or its header",
                                fix="pass --quant Q4_K_M (or the right one)")
    name = file.name if file.name.endswith(".gguf") else f"{file.name}.gguf"
    sha = sha256_file(file)
    size = file.stat().st_size
    entry: JsonObject = {"id": model_id, "family": "custom", "display_name": model_id,
                             "variants": {q: {"repo": f"local/{model_id}",
                                              "files": [{"name": name, "size": size, "sha256": sha}]}}}
    if fim is not None:
        entry["fim"] = fim
    card = add_user_entry(dl.settings, entry)
    local = dl.settings.store_dir / "local" / card.id / q / name
    local.parent.mkdir(parents=True, exist_ok=True)
    mode = "hardlink"
    try:
        local.unlink(missing_ok=True)
        os.link(file, local)
        path = local
    except OSError:  # another filesystem (or no hard links): reference the original file
        mode, path = "reference", file.resolve()
    rec = ModelRecord(id=card.id, quant=q, repo=f"local/{card.id}", commit=None, revision=None, origin="local",
                      files=[file_record(name, path, sha, "local", None)])
    old = dl.records.get(card.id, q)
    dl.records.put(rec)
    if old is not None:  # a re-import replaces the old record: drop what it owned (a blob, another hard link)
        dl.release_files(old)
    dl.reload_catalog()
    return {"id": card.id, "quant": q, "path": str(path), "mode": mode, "sha256": sha, "bytes": size}

