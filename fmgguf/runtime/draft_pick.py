"""Which draft model a load brings (speculative decoding's ``draft`` modes), from the ``speculative``
setting: ``draft`` takes the catalog's pair for the model (its card's ``draft``), ``draft:<ref>`` the
model named (a catalog "id" or "id:QUANT" downloaded here, or a .gguf path). The draft must be a
local file: the load does not download it (``fmgguf pull`` says how)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import NotDownloadedError
from fmgguf.runtime.engine.drafting import check_mode
from fmgguf.runtime.plan.fit import DraftSource

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.download import ModelDownloader


def pick_draft(setting: str | None, target: Path, card: "ModelCard | None", catalog: "Catalog",
               downloader: "ModelDownloader") -> DraftSource | None:
    """The draft model for ``target`` under the ``speculative`` setting (None: no draft)."""
    mode = check_mode(setting)
    if not mode.startswith("draft"):
        return None
    ref = mode[6:] or (card.draft if card is not None else None)
    if not ref:  # bare "draft" and no catalog pair: this model loads without one
        return None
    p = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        if not p.is_file():
            raise NotDownloadedError(f"the draft model file {ref} does not exist",
                                     fix="give the path of a GGUF file, or a catalog id (--speculative draft:<id>)")
        draft = DraftSource(name=p.stem, path=p)
    else:
        dcard, quant = catalog.resolve(ref)
        if card is not None and dcard.id == card.id:
            return None  # the pair's small model itself: nothing smaller to draft with
        try:
            path = Path(downloader.model_path(dcard.id, quant))
        except NotDownloadedError as exc:
            if not mode[6:]:  # the catalog's pair, not one the user named: load without it, and say so
                log.warning("%s loads without its draft model: %s is not downloaded (fmgguf pull %s)",
                            card.id if card else target.name, dcard.id, dcard.id)
                return None
            raise NotDownloadedError(f"the draft model {dcard.id}:{quant} is not downloaded",
                                     fix=f"{exc.fix}; or load with --speculative ngram (or off)",
                                     model_id=dcard.id) from None
        draft = DraftSource(name=f"{dcard.id}:{quant}", path=path)
    if draft.path is not None and draft.path.resolve() == target.resolve():
        return None
    return draft


def fit_draft(setting: str | None, card: "ModelCard | None", catalog: "Catalog",
              downloader: "ModelDownloader") -> DraftSource | None:
    """The draft ``fmgguf fit`` counts for catalog model ``card``: the local file when downloaded,
    else the catalog variant (planned from catalog numbers); None without one."""
    mode = check_mode(setting)
    ref = mode[6:] if mode.startswith("draft:") else (card.draft if mode == "draft" and card is not None else None)
    if not ref:
        return None
    if ref.endswith(".gguf"):
        p = Path(ref).expanduser()
        return DraftSource(name=p.stem, path=p) if p.is_file() else None
    dcard, quant = catalog.resolve(ref)
    if card is not None and dcard.id == card.id:
        return None
    try:
        return DraftSource(name=f"{dcard.id}:{quant}", path=Path(downloader.model_path(dcard.id, quant)))
    except NotDownloadedError:
        return DraftSource(name=f"{dcard.id}:{quant}", card=dcard, quant=quant)
