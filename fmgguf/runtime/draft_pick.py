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
    ref, named = _reference(setting, card)
    if not ref:  # no draft mode, or bare "draft" and no catalog pair: this model loads without one
        return None
    if ref.endswith(".gguf"):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise NotDownloadedError(f"the draft model file {ref} does not exist",
                                     fix="give the path of a GGUF file, or a catalog id (--speculative draft:<id>)")
        draft = DraftSource(name=p.stem, path=p)
    else:
        pair = _catalog_draft(ref, card, catalog)
        if pair is None:  # the pair's small model itself: nothing smaller to draft with
            return None
        dcard, quant = pair
        try:
            path = Path(downloader.model_path(dcard.id, quant))
        except NotDownloadedError as exc:
            if not named:  # the catalog's pair, not one the user named: load without it, and say so
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
    ref, _ = _reference(setting, card)
    if not ref:
        return None
    if ref.endswith(".gguf"):
        p = Path(ref).expanduser()
        return DraftSource(name=p.stem, path=p) if p.is_file() else None
    pair = _catalog_draft(ref, card, catalog)
    if pair is None:
        return None
    dcard, quant = pair
    try:
        return DraftSource(name=f"{dcard.id}:{quant}", path=Path(downloader.model_path(dcard.id, quant)))
    except NotDownloadedError:
        return DraftSource(name=f"{dcard.id}:{quant}", card=dcard, quant=quant)


def _reference(setting: str | None, card: "ModelCard | None") -> tuple[str | None, bool]:
    """The draft the setting asks for, and whether the user named it (``draft:<ref>``) rather than
    taking the card's pair (``draft``); (None, False) for no draft."""
    mode = check_mode(setting)
    if mode.startswith("draft:"):
        return mode[6:], True
    return (card.draft if mode == "draft" and card is not None else None), False


def _catalog_draft(ref: str, card: "ModelCard | None", catalog: "Catalog") -> "tuple[ModelCard, str] | None":
    """The catalog card and quant of draft ``ref``; None when it is ``card`` itself."""
    dcard, quant = catalog.resolve(ref)
    return None if card is not None and dcard.id == card.id else (dcard, quant)
