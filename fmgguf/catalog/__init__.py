"""The model catalog: the 20 built-in code models, merged with the user's own entries."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.catalog.loader import builtin_catalog_path, load_cards, parse_card, raw_entries, read_yaml
from fmgguf.catalog.schema import (
    BUILTIN_QUANTS,
    FIM,
    LLAMA_CPP_QUANTS,
    Architecture,
    GGUFFile,
    ModelCard,
    Variant,
    normalize_quant,
)
from fmgguf.catalog.seed import ModelConfig, ModelProvider
from fmgguf.catalog.sizing import estimate_card, kv_cache_bytes
from fmgguf.errors import CatalogError, UnknownModelError

if TYPE_CHECKING:
    from fmgguf.settings import Settings

__all__ = [
    "BUILTIN_QUANTS", "LLAMA_CPP_QUANTS", "FIM", "Architecture", "Catalog", "GGUFFile", "ModelCard",
    "ModelConfig", "ModelProvider", "Variant", "estimate_card", "kv_cache_bytes", "normalize_quant",
]


class Catalog:
    """All models fmgguf knows: built-in cards, then the user catalog merged over them by id."""

    def __init__(self, cards: Iterable[ModelCard], sources: dict[str, Path] | None = None) -> None:
        self._cards: dict[str, ModelCard] = {}
        for card in cards:
            self._cards[card.id] = card
        self.sources = sources or {}

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: "Settings | None" = None, user_path: Path | str | None = None,
             builtin_path: Path | str | None = None) -> "Catalog":
        """The built-in catalog with the user catalog (``FMGGUF_CATALOG`` or ``catalog.yaml`` in the
        config dir) merged over it. The seed ``config.yaml`` format is accepted for both."""
        if user_path is None:
            if settings is None:
                from fmgguf.settings import load_settings

                settings = load_settings()
            user_path = settings.catalog_file
        bpath = Path(builtin_path) if builtin_path else builtin_catalog_path()
        builtin = load_cards(bpath, builtin=True)
        sources = {c.id: bpath for c in builtin}
        catalog = cls(builtin, sources)
        upath = Path(user_path)
        if upath.is_file():
            catalog._merge_user(upath)
        if settings is not None and settings.raw_config.get("models") and isinstance(settings.raw_config["models"], dict) \
                and "available_models" in settings.raw_config["models"]:
            catalog._merge_raw(raw_entries({"models": settings.raw_config["models"]}, settings.config_file),
                               settings.config_file)
        return catalog

    def _merge_user(self, path: Path) -> None:
        self._merge_raw(raw_entries(read_yaml(path), path), path)

    def _merge_raw(self, entries: list[JsonObject], path: Path) -> None:
        seen: set[str] = set()
        for i, raw in enumerate(entries):
            model_id = str(raw.get("id", f"#{i + 1}"))
            if model_id in seen:
                raise CatalogError(f"{path}: model {model_id}: field id: duplicate id", fix="give every entry its own id",
                                   file=str(path), model_id=model_id, field="id")
            seen.add(model_id)
            if raw.get("_seed"):
                self._apply_seed(raw, path)
                continue
            card = parse_card(raw, path, i, builtin=False)
            self._cards[card.id] = card
            self.sources[card.id] = path

    def _apply_seed(self, overlay: JsonObject, path: Path) -> None:
        model_id = overlay["id"]
        base = self._cards.get(model_id)
        if base is None:
            near = difflib.get_close_matches(model_id, list(self._cards), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise CatalogError(
                f"{path}: model {model_id}: not in the built-in catalog, so there is no GGUF repo for it{hint}",
                fix=f"add one with: fmgguf catalog add {model_id} --repo OWNER/NAME-GGUF --file FILE.gguf --quant Q4_K_M",
                file=str(path), model_id=model_id, field="id",
            )
        changes = {k: v for k, v in overlay.items() if not k.startswith("_")}
        changes.pop("id", None)
        if changes:
            self._cards[model_id] = base.model_copy(update=changes)

    # --- queries ---------------------------------------------------------------------------------
    def models(self) -> list[ModelCard]:
        return list(self._cards.values())

    def ids(self) -> list[str]:
        return list(self._cards)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._cards

    def __len__(self) -> int:
        return len(self._cards)

    def get(self, model_id: str) -> ModelCard:
        """The card for ``model_id``; an unknown id raises with the closest ids suggested."""
        key = str(model_id).strip()
        if key in self._cards:
            return self._cards[key]
        if key.lower() in self._cards:
            return self._cards[key.lower()]
        # the seed named models by their transformers repo ("Qwen/Qwen2.5-Coder-7B-Instruct")
        tail = key.rsplit("/", 1)[-1].lower()
        if tail in self._cards:
            return self._cards[tail]
        for card in self._cards.values():
            if card.source_repo and card.source_repo.lower() == key.lower():
                return card
        words = [w for w in key.lower().replace("_", "-").split("-") if w]
        near = [i for i in self._cards if words and all(w in i for w in words)][:3]
        if not near:
            near = difflib.get_close_matches(key.lower(), list(self._cards), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}?" if near else "run `fmgguf list` to see every id"
        raise UnknownModelError(f"unknown model id {key!r}", fix=hint, model_id=key)

    def resolve(self, spec: "str | ModelConfig") -> tuple[ModelCard, str]:
        """``id``, ``id:QUANT`` or a seed ``ModelConfig`` -> (card, quant)."""
        if isinstance(spec, ModelConfig):
            card = self.get(spec.name)
            quant = spec.quant
        else:
            text = str(spec)
            model_id, _, quant = text.partition(":")
            card = self.get(model_id)
            quant = normalize_quant(quant) if quant else None  # type: ignore[assignment]
        quant = quant or (BUILTIN_QUANTS[0] if BUILTIN_QUANTS[0] in card.variants else card.quants[0])
        card.variant(quant)  # raises for a quant the card lacks
        return card, quant

    def search(self, text: str | None = None, family: str | None = None, max_params: float | None = None,
               max_vram_gb: float | None = None, quant: str | None = None, fim: bool | None = None,
               min_context: int | None = None, capability: str | None = None, n_ctx: int = 4096) -> list[ModelCard]:
        """Cards matching every given filter. ``max_params`` in billions (or a raw count);
        ``max_vram_gb`` keeps models whose ``quant`` (default: smallest) fits at ``n_ctx``."""
        out = []
        limit_params = None if max_params is None else (max_params * 1e9 if max_params < 1e5 else max_params)
        q = normalize_quant(quant) if quant else None
        for card in self._cards.values():
            if text:
                hay = " ".join([card.id, card.display_name, card.family, card.specialization, *card.capabilities]).lower()
                if not all(word in hay for word in text.lower().split()):
                    continue
            if family and family.lower() not in card.family.lower():
                continue
            if limit_params is not None and (card.parameters is None or card.parameters.total > limit_params):
                continue
            if q and q not in card.variants:
                continue
            if fim is not None and card.fim_supported != fim:
                continue
            if min_context and (card.context_length or 0) < min_context:
                continue
            if capability and capability.lower() not in [c.lower() for c in card.capabilities]:
                continue
            if max_vram_gb is not None:
                quants = [q] if q else card.quants
                totals = [estimate_card(card, x, n_ctx).total for x in quants]
                if not any(t is not None and t <= max_vram_gb * 1e9 for t in totals):
                    continue
            out.append(card)
        return out

    def families(self) -> list[str]:
        return sorted({c.family for c in self._cards.values()})
