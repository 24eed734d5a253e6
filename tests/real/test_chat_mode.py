"""The chat-or-raw rule of `fmgguf run` (fmgguf.runtime.prompt.chat_mode) on the built-in catalog's cards."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.runtime.prompt.chat_mode import gguf_names, is_instruct, wants_chat


@pytest.fixture(scope="module")
def catalog():  # noqa: ANN201
    from fmgguf.catalog import Catalog

    return Catalog.load(user_path=Path("/nonexistent/catalog.yaml"))


@pytest.mark.parametrize(("model_id", "chat"), [
    ("smollm2-135m-instruct", True), ("qwen2.5-coder-7b-instruct", True), ("codegemma-7b-it", True),
    ("starcoder2-3b", False), ("codegemma-2b", False),
])
def test_instruct_cards_chat_and_base_cards_complete(catalog, model_id: str, chat: bool) -> None:  # noqa: ANN001
    card = catalog.get(model_id)
    assert wants_chat(has_template=True, card=card) is chat
    assert wants_chat(has_template=True, card=card, raw=True) is False
    assert wants_chat(has_template=False, card=card) is False  # no template: nothing to chat with


def test_files_and_bare_cards_go_by_their_names() -> None:
    names = gguf_names("SmolLM2-135M-Instruct.Q4_1.gguf", {"general.name": "Smollm2 135M 8k Lc100K Mix1 Ep2"})
    assert is_instruct(None, names)
    assert is_instruct(None, ["codegemma-7b-it-Q4_K_M"]) and is_instruct(None, ["Mistral-7B-Chat"])
    assert not is_instruct(None, ["qwen2.5-coder-1.5b-q4_k_m", "Qwen2.5 Coder 1.5B"])
    assert not is_instruct(None, ["tiny-qwen2-unit-s0-532be4d56b1abf25-F16", "tiny unit"])  # "unit" is no "-it"

    class Imported:  # `fmgguf import-gguf` makes a card without capabilities: the names decide
        capabilities: list[str] = []

    assert wants_chat(has_template=True, card=Imported(), names=["my-model-instruct"])
    assert not wants_chat(has_template=True, card=Imported(), names=["my-base-model"])
