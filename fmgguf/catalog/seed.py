"""The original system's configuration, kept working.

Its ``config.yaml`` listed models under ``models.available_models`` with a transformers repo
name and ``quantization_support: ["4bit", "8bit"]``; its Python API took
``ModelConfig(provider=ModelProvider.QWEN, name=..., quantization="4bit")``. Both map onto
catalog cards: an id that the built-in catalog knows takes its GGUF repos from there; an unknown
one is an error saying what to add.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from fmgguf._util import JsonObject
from fmgguf.catalog.schema import normalize_quant
from fmgguf.errors import CatalogError


class ModelProvider(str, enum.Enum):
    """The seed's provider names."""

    DEEPSEEK = "deepseek"
    QWEN = "qwen"
    STARCODER = "starcoder"
    CODELLAMA = "codellama"
    CODESTRAL = "codestral"
    OPENCODER = "opencoder"
    CODEGEMMA = "codegemma"


@dataclass
class ModelConfig:
    """The seed's per-model configuration; ``quantization`` "4bit" -> Q4_K_M, "8bit" -> Q8_0."""

    provider: ModelProvider | str = ModelProvider.QWEN
    name: str = ""
    quantization: str | None = "4bit"
    context_length: int | None = None
    display_name: str | None = None

    @property
    def quant(self) -> str:
        return normalize_quant(self.quantization or "4bit")

    def model_id(self) -> str:
        """The catalog id this config names: the last part of the repo name, lower-cased."""
        return self.name.rsplit("/", 1)[-1].lower()


_OVERLAY_KEYS = {"display_name", "specialization", "recommended_gpu_memory"}


def seed_entries(models_block: JsonObject, path: Path) -> list[JsonObject]:
    """Translate ``models.available_models`` into raw card overlays (``_seed: True`` marks them).

    Each overlay names a built-in id and the quants it asked for; the catalog merges it over
    the built-in card (see ``Catalog``). Ids the built-in catalog does not know cannot be
    turned into GGUF downloads and are reported by the merge step.
    """
    available = models_block.get("available_models") or {}
    if not isinstance(available, dict):
        raise CatalogError(f"{path}: models.available_models must be a mapping", fix="list models as 'id: {...}'")
    out = []
    for model_id, spec in available.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise CatalogError(f"{path}: model {model_id}: must be a mapping", fix="see the seed config format in the README")
        quants = []
        for word in spec.get("quantization_support") or ["4bit", "8bit"]:
            q = normalize_quant(str(word))
            if q not in ("Q4_K_M", "Q8_0"):
                raise CatalogError(f"{path}: model {model_id}: field quantization_support: {word!r} is not 4bit or 8bit",
                                   fix="use 4bit and/or 8bit")
            quants.append(q)
        overlay: JsonObject = {"id": str(model_id).lower(), "_seed": True, "_quants": quants,
                                   "_source_repo": spec.get("name")}
        for key in _OVERLAY_KEYS:
            if spec.get(key) is not None:
                overlay[key] = str(spec[key])
        if spec.get("context_length") is not None:
            overlay["_context_length"] = int(spec["context_length"])
        out.append(overlay)
    return out

