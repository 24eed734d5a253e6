from __future__ import annotations

import hashlib

import pytest

from fmgguf.catalog.schema import ModelCard
from fmgguf.testing import tiny_card, tiny_repo_files
from fmgguf.tiny.tiny_specs import ARCHES, tiny_spec


@pytest.mark.parametrize("arch", ARCHES)
def test_card_is_valid_and_matches_the_built_files(arch: str) -> None:
    card_dict = tiny_card(f"tiny-{arch}", arch=arch)
    card = ModelCard.model_validate(card_dict)
    assert card.family == "tiny" and not card.builtin and card.capabilities == ["test"]
    assert set(card.variants) == {"Q4_K_M", "Q8_0"}
    files = tiny_repo_files(f"tiny-{arch}", arch=arch)
    assert set(files) == {f"tiny-{arch}-Q4_K_M.gguf", f"tiny-{arch}-Q8_0.gguf"}
    for quant, variant in card.variants.items():
        assert variant.repo == f"fmgguf-test/tiny-{arch}-GGUF" and variant.revision is None
        (f,) = variant.files
        assert f.name == f"tiny-{arch}-{quant}.gguf"
        local = files[f.name]
        assert f.size == local.stat().st_size
        assert f.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    spec = tiny_spec(arch)
    assert card.arch is not None and card.arch.name == arch
    assert (card.arch.n_layer, card.arch.n_embd, card.arch.n_head_kv) == (spec.n_layer, spec.n_embd, spec.n_head_kv)
    assert card.chat_template == spec.chat_template
    assert card.parameters is not None and card.parameters.active <= card.parameters.total
    assert card.fim_supported == (arch in ("qwen2", "starcoder2", "deepseek2"))


def test_card_options() -> None:
    card = tiny_card("my-tiny", arch="llama", repo="someone/else", quants=("F16",))
    assert list(card["variants"]) == ["F16"]
    assert card["variants"]["F16"]["repo"] == "someone/else"
    assert card["variants"]["F16"]["files"][0]["name"] == "my-tiny-F16.gguf"
    assert card["arch"]["vocab"] == 32000 and card["arch"]["tied_embeddings"] is False


def test_mla_and_moe_numbers() -> None:
    card = ModelCard.model_validate(tiny_card("tiny-ds", arch="deepseek2"))
    assert card.arch is not None and card.arch.moe is not None and card.parameters is not None
    assert (card.arch.kv_lora_rank, card.arch.head_dim, card.arch.head_dim_v) == (256, 192, 128)
    assert (card.arch.moe.n_expert, card.arch.moe.n_expert_used) == (4, 2)
    assert card.parameters.active < card.parameters.total


def test_sliding_window_number() -> None:
    card = ModelCard.model_validate(tiny_card("tiny-g", arch="gemma3", quants=("Q8_0",)))
    assert card.arch is not None and card.arch.sliding_window == 256


def test_the_card_can_be_written_as_yaml(tmp_path) -> None:
    import yaml

    card = tiny_card("tiny-qwen2")
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [card]}, allow_unicode=True))
    loaded = yaml.safe_load(path.read_text())["models"][0]
    assert ModelCard.model_validate(loaded) == ModelCard.model_validate(card)
