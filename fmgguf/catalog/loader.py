"""Reading catalog files: the built-in one shipped in the wheel, and the user's merged over it.

A catalog file is YAML with a top-level ``models:`` list of cards (see ``schema.ModelCard``).
The seed's ``config.yaml`` form (``models: {available_models: {...}}``) is accepted too and
translated by :mod:`fmgguf.catalog.seed`. Every problem is reported as one line naming the
file, the model id and the field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from fmgguf._util import JsonObject
from fmgguf.catalog.schema import ModelCard
from fmgguf.errors import CatalogError

try:  # libyaml is several times faster than the pure-Python parser (cold start matters)
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


def builtin_catalog_path() -> Path:
    """The shipped ``models.yaml``: inside the wheel, or ``catalog/`` of a source checkout."""
    packaged = resources.files("fmgguf").joinpath("_data", "models.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "catalog" / "models.yaml"
    if checkout.is_file():
        return checkout
    raise CatalogError("the built-in catalog models.yaml is missing from this install", fix="reinstall fmgguf")


def read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read ({exc.strerror})", fix="check the path and permissions") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text", fix="save the catalog as UTF-8 YAML") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        where = f" line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise CatalogError(f"{path}{where}: {exc.problem or 'invalid YAML'}", fix="fix the YAML syntax") from None
    except yaml.YAMLError:
        problem = "invalid YAML"
        where = ""
        raise CatalogError(f"{path}{where}: {problem}", fix="fix the YAML syntax") from None


def raw_entries(data: object, path: Path) -> list[JsonObject]:
    """The list of raw card mappings in a parsed catalog file (either format)."""
    if data is None:
        return []
    if not isinstance(data, dict) or "models" not in data:
        raise CatalogError(f"{path}: no top-level 'models:' key", fix="start the file with 'models:' and a list of entries")
    models = data["models"]
    if isinstance(models, dict) and "available_models" in models:
        from fmgguf.catalog.seed import seed_entries

        return seed_entries(models, path)
    if models is None:
        return []
    if not isinstance(models, list):
        raise CatalogError(f"{path}: 'models:' must be a list of entries", fix="write each model as '- id: ...'")
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: entry #{i + 1} is not a mapping", fix="write each model as '- id: ...'")
    return models


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(entry)"


def parse_card(raw: JsonObject, path: Path, index: int, builtin: bool) -> ModelCard:
    model_id = raw.get("id") if isinstance(raw.get("id"), str) else f"#{index + 1}"
    try:
        return ModelCard.model_validate({**raw, "builtin": builtin})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise CatalogError(
            f"{path}: model {model_id}: field {_loc(err['loc'])}: {msg}{more}",
            fix="correct that field of the entry",
            file=str(path), model_id=str(model_id), field=_loc(err["loc"]),
        ) from None


def load_cards(path: Path, builtin: bool) -> list[ModelCard]:
    entries = raw_entries(read_yaml(path), path)
    seen: set[str] = set()
    cards = []
    for i, raw in enumerate(entries):
        card = parse_card(raw, path, i, builtin)
        if card.id in seen:
            raise CatalogError(f"{path}: model {card.id}: field id: duplicate id", fix="give every entry its own id",
                               file=str(path), model_id=card.id, field="id")
        seen.add(card.id)
        cards.append(card)
    return cards
