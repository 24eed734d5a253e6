"""Turning fmgguf objects (cards, plans, manager records) into JSON-ready dicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def jsonable(obj: Any, depth: int = 0) -> Any:
    """Plain JSON data from dataclasses, pydantic models, Paths and objects with ``as_dict``."""
    if depth > 8:
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in obj]
    if hasattr(obj, "as_dict") and callable(obj.as_dict):
        return jsonable(obj.as_dict(), depth + 1)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)
                if not f.name.startswith("_")}
    return str(obj)


def card_summary(card: Any) -> dict:
    """The specs of a card the page and the compare view show."""
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
        "fim": card.fim_supported,
        "fim_order": card.fim.order if card.fim else None,
        "specialization": card.specialization,
        "capabilities": list(card.capabilities),
        "builtin": card.builtin,
        "recommended_gpu_memory": card.recommended_gpu_memory,
        "source_repo": card.source_repo,
        "notes": list(card.notes),
    }


def downloaded_pairs(downloader: Any) -> set[tuple[str, str]]:
    """(model_id, quant) of everything in the local store, from ``downloader.list_downloaded()``."""
    out: set[tuple[str, str]] = set()
    for item in downloader.list_downloaded() or []:
        if isinstance(item, dict):
            model_id, quant = item.get("model_id") or item.get("id"), item.get("quant")
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            model_id, quant = item[0], item[1]
        else:
            model_id = getattr(item, "model_id", None) or getattr(item, "id", None)
            quant = getattr(item, "quant", None)
        if model_id and quant:
            out.add((str(model_id), str(quant)))
    return out
