"""JSON views the server answers with: a card's specs, the store's (model, quant) pairs.

The generic converter of dataclasses and models to JSON is ``fmgguf._util.jsonable``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fmgguf._util import JsonObject

if TYPE_CHECKING:
    from fmgguf.catalog.schema import ModelCard


class Store(Protocol):
    """What the views need of the downloader: its list of downloaded models."""

    def list_downloaded(self) -> list[JsonObject]: ...


def card_summary(card: ModelCard, fim: bool) -> dict:
    """The specs of a card the page and the compare view show (``fim``: the one FIM rule's answer)."""
    params = card.parameters
    arch = card.arch
    return {
        "id": card.id,
        "display_name": card.title,
        "family": card.family,
        "parameters": params.total if params else None,
        "active_parameters": params.active if params else None,
        "context_length": card.context_length,
        "architecture": arch.name if arch else None,
        "layers": arch.n_layer if arch else None,
        "moe": bool(arch and arch.moe),
        "license": card.license,
        "chat": card.chat_template not in (None, "none"),
        "chat_template": card.chat_template,
        "fim": fim,
        "fim_order": card.fim.order if card.fim else None,
        "specialization": card.specialization,
        "capabilities": list(card.capabilities),
        "builtin": card.builtin,
        "recommended_gpu_memory": card.recommended_gpu_memory,
        "source_repo": card.source_repo,
        "notes": list(card.notes),
    }


def downloaded_pairs(downloader: Store) -> set[tuple[str, str]]:
    """(model_id, quant) of everything in the local store, from ``downloader.list_downloaded()``."""
    out: set[tuple[str, str]] = set()
    for item in downloader.list_downloaded() or []:
        model_id, quant = item.get("model_id") or item.get("id"), item.get("quant")
        if model_id and quant:
            out.add((str(model_id), str(quant)))
    return out
