"""A bad catalog fails with one line naming the file, the model id and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmgguf.catalog import Catalog
from fmgguf.catalog.loader import builtin_catalog_path
from fmgguf.errors import CatalogError, UnknownModelError

SHA = "a" * 64


def card(model_id: str = "m-1", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": model_id, "family": "test", "display_name": "M", "license": "mit",
        "parameters": {"total": 1000, "active": 1000},
        "arch": {"name": "llama", "n_layer": 2, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "head_dim": 64,
                 "vocab": 32000, "context_length": 4096},
        "variants": {
            "Q4_K_M": {"repo": "o/r", "files": [{"name": "m-Q4_K_M.gguf", "size": 10, "sha256": SHA}]},
            "Q8_0": {"repo": "o/r", "files": [{"name": "m-Q8_0.gguf", "size": 20, "sha256": None}]},
        },
    }
    base.update(over)
    return base


def write(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def load(tmp_path: Path, entries: list[dict[str, Any]]) -> Catalog:
    p = write(tmp_path / "builtin.yaml", entries)
    return Catalog.load(builtin_path=p, user_path=tmp_path / "none.yaml")


def test_valid_minimal_catalog(tmp_path: Path) -> None:
    cat = load(tmp_path, [card()])
    assert cat.get("m-1").variant("4bit").files[0].sha256 == SHA


def mutate(path: str, value: Any) -> dict[str, Any]:
    c = card()
    node: Any = c
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return c


BAD = [
    ("variants.Q4_K_M.files.0.sha256", "xyz", "sha256"),
    ("variants.Q4_K_M.files.0.sha256", "A" * 64, "sha256"),
    ("variants.Q4_K_M.files.0.sha256", "a" * 63, "sha256"),  # valid digits, one short
    ("variants.Q4_K_M.files.0.sha256", "a" * 65, "sha256"),  # one too many
    ("variants.Q4_K_M.files.0.name", "../evil.gguf", "name"),
    ("variants.Q4_K_M.files.0.name", "/abs.gguf", "name"),
    ("variants.Q4_K_M.files.0.name", "dir\\x.gguf", "name"),
    ("variants.Q4_K_M.repo", "not a repo", "repo"),
    ("arch.name", "gpt-9", "arch.name"),
    ("arch.n_head_kv", 3, "arch"),
    ("parameters.active", 10**9, "parameters"),
    ("chat_template", "weird", "chat_template"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD)
def test_bad_field_names_file_id_and_field(tmp_path: Path, path: str, value: Any, field: str) -> None:
    with pytest.raises(CatalogError) as info:
        load(tmp_path, [mutate(path, value)])
    msg = str(info.value)
    assert "builtin.yaml" in msg and "model m-1" in msg, msg
    named = msg.split(": field ", 1)[1].split(":")[0]
    assert field in named, msg
    assert "\n" not in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="duplicate id"):
        load(tmp_path, [card(), card()])


def test_builtin_needs_both_quants(tmp_path: Path) -> None:
    c = card()
    del c["variants"]["Q8_0"]
    with pytest.raises(CatalogError, match="Q8_0"):
        load(tmp_path, [c])


def test_unknown_quant_name(tmp_path: Path) -> None:
    c = card()
    c["variants"]["Q4_K_XL"] = copy.deepcopy(c["variants"]["Q8_0"])
    with pytest.raises(CatalogError, match="not a llama.cpp quantization"):
        load(tmp_path, [c])


def test_split_parts_must_be_complete(tmp_path: Path) -> None:
    c = card()
    c["variants"]["Q8_0"]["files"] = [{"name": "m-00001-of-00003.gguf"}, {"name": "m-00002-of-00003.gguf"}]
    with pytest.raises(CatalogError, match="split"):
        load(tmp_path, [c])
    c["variants"]["Q8_0"]["files"].append({"name": "m-00003-of-00003.gguf"})
    assert load(tmp_path, [c]).get("m-1").variants["Q8_0"].files[2].split_index == (3, 3)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "builtin.yaml"
    p.write_text("models:\n  - id: x\n    family: [oops\n")
    with pytest.raises(CatalogError, match=r"builtin.yaml line \d+"):
        Catalog.load(builtin_path=p, user_path=tmp_path / "none.yaml")


def test_user_catalog_merges_and_may_carry_one_quant(tmp_path: Path) -> None:
    builtin = write(tmp_path / "b.yaml", [card("m-1")])
    user_card = {"id": "mine", "variants": {"Q6_K": {"repo": "me/x", "files": [{"name": "x.gguf"}]}}}
    user = write(tmp_path / "u.yaml", [user_card, card("m-1", display_name="Renamed")])
    cat = Catalog.load(builtin_path=builtin, user_path=user)
    assert cat.ids() == ["m-1", "mine"]
    assert cat.get("m-1").display_name == "Renamed" and not cat.get("m-1").builtin
    assert cat.get("mine").quants == ["Q6_K"]


def test_unknown_id_suggests_closest(tmp_path: Path) -> None:
    cat = load(tmp_path, [card("qwen-7b"), card("qwen-14b")])
    with pytest.raises(UnknownModelError, match="did you mean qwen-7b"):
        cat.get("qwen-7")


def test_seed_config_format(tmp_path: Path) -> None:
    seed = tmp_path / "config.yaml"
    seed.write_text("""
models:
  default_provider: "qwen"
  default_model: "m-1"
  available_models:
    m-1:
      provider: "qwen"
      name: "Org/M-1"
      display_name: "Seed name"
      parameters: "7B"
      context_length: 128000
      specialization: "High-quality code generation"
      quantization_support: ["4bit", "8bit"]
      recommended_gpu_memory: "14GB"
providers:
  qwen: {backend: "transformers", auto_tokenizer: true}
""")
    cat = Catalog.load(builtin_path=write(tmp_path / "b.yaml", [card()]), user_path=seed)
    got = cat.get("m-1")
    assert got.display_name == "Seed name" and got.recommended_gpu_memory == "14GB"
    assert got.variant("8bit").files[0].name == "m-Q8_0.gguf"


def test_seed_unknown_model_says_what_to_add(tmp_path: Path) -> None:
    seed = tmp_path / "config.yaml"
    seed.write_text("models:\n  available_models:\n    other-model:\n      name: Org/Other\n")
    with pytest.raises(CatalogError, match="fmgguf catalog add other-model"):
        Catalog.load(builtin_path=write(tmp_path / "b.yaml", [card()]), user_path=seed)


def test_seed_model_config_maps_quant(tmp_path: Path) -> None:
    from fmgguf.catalog import ModelConfig, ModelProvider

    cat = load(tmp_path, [card("qwen2.5-coder-7b-instruct")])
    c, q = cat.resolve(ModelConfig(provider=ModelProvider.QWEN, name="Qwen/Qwen2.5-Coder-7B-Instruct", quantization="8bit"))
    assert (c.id, q) == ("qwen2.5-coder-7b-instruct", "Q8_0")
    assert cat.resolve("qwen2.5-coder-7b-instruct")[1] == "Q4_K_M"


def test_search_filters(tmp_path: Path) -> None:
    small = card("small", parameters={"total": 5 * 10**8, "active": 5 * 10**8},
                 fim={"prefix": "<a>", "suffix": "<b>", "middle": "<c>", "supported": True})
    big = card("big", parameters={"total": 3 * 10**10, "active": 3 * 10**10}, capabilities=["chat"])
    cat = load(tmp_path, [small, big])
    assert [c.id for c in cat.search(max_params=1)] == ["small"]
    assert [c.id for c in cat.search(fim=True)] == ["small"]
    assert [c.id for c in cat.search(capability="chat")] == ["big"]
    assert [c.id for c in cat.search(text="BIG")] == ["big"]
    assert cat.search(min_context=10**6) == []


def test_shipped_catalog_is_found() -> None:
    assert builtin_catalog_path().name == "models.yaml"
