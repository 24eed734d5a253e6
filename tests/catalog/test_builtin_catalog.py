"""The shipped catalog (catalog/models.yaml): it loads, holds the 20 code models and the demo model, and is
internally consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fmgguf.catalog import Catalog, estimate_card
from fmgguf.catalog.schema import BUILTIN_QUANTS

MODELS_YAML = Path(__file__).resolve().parents[2] / "catalog" / "models.yaml"

EXPECTED_IDS = {
    "deepseek-coder-v2-lite-instruct", "deepseek-coder-v2-instruct",
    "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-3b-instruct",
    "qwen2.5-coder-7b-instruct", "qwen2.5-coder-14b-instruct", "qwen2.5-coder-32b-instruct",
    "starcoder2-3b", "starcoder2-7b", "starcoder2-15b", "starcoder2-15b-instruct-v0.1",
    "codellama-7b-instruct", "codellama-13b-instruct", "codellama-34b-instruct",
    "codestral-22b-v0.1", "opencoder-1.5b-instruct", "opencoder-8b-instruct",
    "codegemma-2b", "codegemma-7b-it",
}
#: the real model `make run` and the real test tier use (one quant: the file the PyPI wheel embeds)
DEMO_ID = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    missing_user = tmp_path_factory.mktemp("no-user-catalog") / "catalog.yaml"
    return Catalog.load(builtin_path=MODELS_YAML, user_path=missing_user)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))


def _variants(catalog: Catalog):
    for card in catalog.models():
        for quant, variant in card.variants.items():
            yield card, quant, variant


def test_exactly_the_twenty_models_and_the_demo(catalog: Catalog, raw: dict) -> None:
    assert set(catalog.ids()) == EXPECTED_IDS | {DEMO_ID}
    assert len(raw["models"]) == 21


def test_every_entry_is_builtin_with_both_quants_arch_and_parameters(catalog: Catalog) -> None:
    for card in catalog.models():
        assert card.builtin, card.id
        if card.id == DEMO_ID:
            assert "demo" in card.capabilities and card.license == "apache-2.0" and card.fim is None
        else:
            assert set(BUILTIN_QUANTS) <= set(card.variants), card.id
        assert card.arch is not None and card.parameters is not None, card.id
        assert card.display_name and card.family and card.license != "unknown" and card.specialization, card.id
        if card.arch.moe is None:
            assert card.parameters.active == card.parameters.total, card.id
        else:
            assert card.parameters.active < card.parameters.total, card.id


def test_every_sha256_in_the_file_is_64_lower_hex(raw: dict) -> None:
    seen = 0
    for entry in raw["models"]:
        for quant, variant in entry["variants"].items():
            for f in variant["files"]:
                assert "sha256" in f, (entry["id"], quant, f["name"])  # unknown is written as null, not left out
                if f["sha256"] is not None:
                    assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]), (entry["id"], quant, f["sha256"])
                    seen += 1
    assert seen >= 30  # most files carry a checksum


def test_no_checksum_is_shared_by_two_different_files(catalog: Catalog) -> None:
    owner: dict[str, tuple[str, str, str]] = {}
    for card, _quant, variant in _variants(catalog):
        for f in variant.files:
            if f.sha256:
                where = (variant.repo, f.name, card.id)
                assert owner.setdefault(f.sha256, where) == where, f"{f.sha256} on {owner[f.sha256]} and {where}"


def test_total_size_is_the_sum_and_present_exactly_when_every_size_is_known(catalog: Catalog) -> None:
    for card, quant, variant in _variants(catalog):
        sizes = [f.size for f in variant.files]
        if None in sizes:
            assert variant.total_size is None, (card.id, quant)
            assert variant.size is None
        else:
            assert variant.total_size == sum(sizes), (card.id, quant)  # type: ignore[arg-type]
            assert variant.size == variant.total_size


def test_an_unknown_size_keeps_the_hubs_rounded_figure(catalog: Catalog) -> None:
    for card, quant, variant in _variants(catalog):
        for f in variant.files:
            if f.size is None and not (card.id == "deepseek-coder-v2-instruct" and quant == "Q8_0"):
                # legraphista's 236B Q8_0 page did not show a figure for every shard; all others have one
                assert f.approx_bytes() is not None, (card.id, quant, f.name)
            if f.size is not None:
                assert f.size_approx is None, (card.id, quant, f.name)


def test_split_variants_list_every_part_in_order_in_one_folder(catalog: Catalog) -> None:
    split_variants = 0
    for card, quant, variant in _variants(catalog):
        if len(variant.files) == 1:
            assert variant.files[0].split_index in (None, (1, 1)), (card.id, quant)
            continue
        split_variants += 1
        n = len(variant.files)
        assert [f.split_index for f in variant.files] == [(i, n) for i in range(1, n + 1)], (card.id, quant)
        stems = {re.sub(r"-\d{5}-of-\d{5}\.gguf$", "", f.name) for f in variant.files}
        assert len(stems) == 1, (card.id, quant, stems)
    assert split_variants == 2  # the 236B DeepSeek, both quants


def test_qwen_7b_q4_k_m_is_the_official_single_file_at_its_revision(catalog: Catalog) -> None:
    v = catalog.get("qwen2.5-coder-7b-instruct").variant("Q4_K_M")
    assert v.repo == "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"
    assert v.revision == "13fb94bfda8c8cf22497dc57b78f391a9acb426a"
    assert [f.name for f in v.files] == ["qwen2.5-coder-7b-instruct-q4_k_m.gguf"]
    assert v.files[0].sha256 == "509287f78cb4d4cf6b3843734733b914b2c158e43e22a7f4bf5e963800894d3c"
    assert v.size == 4683073536
    assert v.note and "gguf-split" in v.note


def test_fim_gating_follows_the_checkpoints_training(catalog: Catalog) -> None:
    codestral = catalog.get("codestral-22b-v0.1").fim
    assert codestral is not None and codestral.supported
    assert (codestral.order, codestral.prefix, codestral.suffix, codestral.middle) == ("SPM", "[PREFIX]", "[SUFFIX]", None)
    for model_id in ("opencoder-1.5b-instruct", "opencoder-8b-instruct", "deepseek-coder-v2-instruct",
                     "codegemma-7b-it", "starcoder2-15b-instruct-v0.1"):
        assert not catalog.get(model_id).fim_supported, model_id
    assert catalog.get("codellama-34b-instruct").fim is None
    for model_id in ("starcoder2-3b", "codegemma-2b", "codellama-7b-instruct", "qwen2.5-coder-7b-instruct"):
        assert catalog.get(model_id).fim_supported, model_id
    assert catalog.search(fim=True) == [c for c in catalog.models() if c.fim and c.fim.supported]


def test_capability_tags_agree_with_the_card(catalog: Catalog) -> None:
    for card in catalog.models():
        caps = set(card.capabilities)
        assert ("fim" in caps) == card.fim_supported, card.id
        assert ("moe" in caps) == (card.arch.moe is not None), card.id  # type: ignore[union-attr]
        assert ("chat" in caps or "instruct" in caps) == (card.chat_template is not None), card.id
        assert caps <= {"code-completion", "chat", "fim", "instruct", "multilingual", "long-context", "moe",
                        "lightweight", "demo"}, card.id
        assert ("demo" in caps) == (card.id == DEMO_ID), card.id


def test_architecture_numbers_are_self_consistent(catalog: Catalog) -> None:
    for card in catalog.models():
        arch = card.arch
        assert arch is not None
        if arch.kv_lora_rank:  # DeepSeek-V2 MLA: K = 128 nope + 64 rope, V = 128
            assert (arch.name, arch.head_dim, arch.head_dim_v, arch.rope_dim) == ("deepseek2", 192, 128, 64)
        elif card.id != "codegemma-7b-it":  # Gemma-7B is the known exception: 16 heads x 256 = 4096 != 3072
            assert arch.n_head * arch.head_dim == arch.n_embd, card.id
        assert arch.sliding_window is None, card.id  # none of these runs SWA in llama.cpp


def test_file_sizes_are_plausible_for_the_parameter_count(catalog: Catalog) -> None:
    demo = catalog.get(DEMO_ID)
    assert 3.0 <= demo.variant("Q4_1").size * 8 / demo.parameters.total <= 12.0  # type: ignore[operator,union-attr]
    for card in catalog.models():
        if card.id == DEMO_ID:
            continue
        q4, q8 = card.variant("Q4_K_M").approx_size, card.variant("Q8_0").approx_size
        params = card.parameters.total  # type: ignore[union-attr]
        for quant, size in (("Q4_K_M", q4), ("Q8_0", q8)):
            if size is not None:
                assert 3.0 <= size * 8 / params <= 12.0, (card.id, quant, size)
        if q4 is not None and q8 is not None:
            assert q8 > q4, card.id


def test_memory_estimate_works_for_every_card(catalog: Catalog) -> None:
    for card in catalog.models():
        est = estimate_card(card, "Q4_K_M" if "Q4_K_M" in card.variants else card.quants[0], n_ctx=4096)
        assert est.kv_cache > 0 and est.compute > 0, card.id
        assert est.total is not None and est.total > est.weights, card.id  # type: ignore[operator]


def test_seed_style_lookups_resolve(catalog: Catalog) -> None:
    card, quant = catalog.resolve("qwen2.5-coder-7b-instruct:8bit")
    assert (card.id, quant) == ("qwen2.5-coder-7b-instruct", "Q8_0")
    assert catalog.get("Qwen/Qwen2.5-Coder-7B-Instruct").id == "qwen2.5-coder-7b-instruct"
    assert catalog.get("deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct").id == "deepseek-coder-v2-lite-instruct"


def test_draft_pairs_name_a_smaller_model_of_the_same_family_and_vocabulary(catalog: Catalog) -> None:
    pairs = {c.id: c.draft for c in catalog.models() if c.draft}
    # the pairs: Qwen2.5-Coder 0.5B drafts for 1.5B-32B
    assert all(pairs.get(f"qwen2.5-coder-{s}-instruct") == "qwen2.5-coder-0.5b-instruct"
               for s in ("1.5b", "3b", "7b", "14b", "32b"))
    for target, draft in pairs.items():
        t, d = catalog.get(target), catalog.get(draft)
        assert d.family == t.family and d.id != t.id and not d.draft, target
        assert d.parameters.total < t.parameters.total / 2, target
        # llama.cpp refuses vocabularies that differ by more than 128 (padding) entries
        assert abs(d.arch.vocab - t.arch.vocab) <= 128, target
