"""A card's ``fim.prompt: chat``: the gap filled through the instruct model's chat (runtime/prompt/fim_chat.py),
the prompt every FIM dialect then sends (runtime/prompt/fim_prompt.py)."""

from __future__ import annotations

from collections.abc import Mapping

from fmgguf.catalog.schema import FIM
from fmgguf.runtime.prompt.fim_chat import chat_fill_text, fence_language
from fmgguf.runtime.prompt.fim_prompt import fim_prompt
from fmgguf.runtime.prompt.fim_rule import fim_verdict

QWEN_CHAT = FIM(prefix="<|fim_prefix|>", suffix="<|fim_suffix|>", middle="<|fim_middle|>", supported=True,
                prompt="chat")
PRE, SUF = "def f(xs):\n    t = 0\n", "    return t\n"


class FakeEngine:
    add_bos, bos_id, bos_text, eos_text = False, 0, "", ""
    metadata: Mapping[str, object] = {}
    chat_template = None  # no GGUF template: the card's family renders the chat

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def special_token_id(self, text: str) -> int | None:
        return None

    def fim_token_ids(self) -> dict[str, int]:
        return {}


def test_the_file_goes_in_a_user_turn_and_the_reply_opens_with_the_code_before_the_gap() -> None:
    text = chat_fill_text(PRE, SUF, template=None, family="chatml", filename="a.py")
    user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert user.endswith(f"```python\n{PRE}<MISSING>{SUF}```")
    assert text.endswith(f"<|im_start|>assistant\n```python\n{PRE}")  # the model writes on from the cursor
    # an unknown language gets a bare fence
    text = chat_fill_text("x = f(", ")\n", template=None, family="chatml")
    assert "```\nx = f(<MISSING>)\n```" in text and text.endswith("```\nx = f(")
    assert fence_language("src/m.rs") == "rust" and fence_language("Makefile") == ""


def test_a_chat_card_sends_the_chat_prompt_with_the_fence_as_a_stop() -> None:
    verdict = fim_verdict(_card(QWEN_CHAT))
    assert verdict.able and verdict.card_fim() is not None and verdict.card_fim().prompt == "chat"
    tokens, stops = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", PRE, SUF, family="chatml")
    text = "".join(chr(t) for t in tokens)  # type: ignore[union-attr]
    assert "<|fim_prefix|>" not in text and text.endswith(f"```\n{PRE}")
    assert stops[0] == "```" and "<|im_end|>" in stops
    # the character budget holds for the prefix written twice
    tokens, _ = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", "a = 1\n" * 500, SUF, family="chatml",
                           max_chars=1000)
    assert ("a = 1\n" * 200) not in "".join(chr(t) for t in tokens)  # type: ignore[union-attr]
    # inside a line of code the FIM tokens continue it; after the indentation alone the chat fills the line
    tokens, stops = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", "    return ", SUF, family="chatml")
    assert "".join(chr(t) for t in tokens).startswith("<|fim_prefix|>") and "```" not in stops  # type: ignore[union-attr]
    tokens, _ = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", PRE + "    ", SUF, family="chatml")
    assert "".join(chr(t) for t in tokens).endswith(f"```\n{PRE}    ")  # type: ignore[union-attr]
    # the token layout stays the default
    tokens, _ = fim_prompt(FakeEngine(), QWEN_CHAT.model_copy(update={"prompt": "tokens"}), {}, "m", PRE, SUF)
    assert "".join(chr(t) for t in tokens).startswith("<|fim_prefix|>")  # type: ignore[union-attr]


def _card(fim: FIM):  # noqa: ANN202 - a card of the builtin catalog with another fim block
    from fmgguf.catalog import Catalog
    from fmgguf.settings import load_settings

    card = Catalog.load(load_settings()).get("qwen2.5-coder-0.5b-instruct")
    return card.model_copy(update={"fim": fim})


def test_the_cut_flag_follows_the_prompt_the_card_sends() -> None:
    from fmgguf.runtime.prompt.fim_prompt import fim_prompt_cut

    prefix = "a = 1\n" * 100  # 600 characters: the text layout fits 1000, the chat fill's half (500) does not
    assert fim_prompt_cut(QWEN_CHAT, "m", prefix, SUF, max_chars=1000)
    tokens = QWEN_CHAT.model_copy(update={"prompt": "tokens"})
    assert not fim_prompt_cut(tokens, "m", prefix, SUF, max_chars=1000)
    assert fim_prompt_cut(tokens, "m", prefix, SUF, max_chars=300)
    # inside a line of code the chat card sends its FIM tokens: the text layout's length decides
    assert not fim_prompt_cut(QWEN_CHAT, "m", prefix + "b = ", SUF, max_chars=1000)
    assert not fim_prompt_cut(QWEN_CHAT, "m", prefix, SUF) and not fim_prompt_cut(None, "m", prefix, SUF, max_chars=10)


def test_a_fence_in_the_file_neither_closes_the_block_nor_stops_the_middle() -> None:
    from fmgguf.runtime.prompt.fim_chat import fence_for

    doc = 'def f():\n    """Use it so:\n\n    ```python\n    f()\n    ```\n    """\n'
    assert fence_for(doc) == "````" and fence_for("x = 1\n") == "```" and fence_for("a ````` b") == "``````"
    verdict = fim_verdict(_card(QWEN_CHAT))
    tokens, stops = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", doc, SUF, family="chatml")
    text = "".join(chr(t) for t in tokens)  # type: ignore[union-attr]
    assert text.endswith(f"<|im_start|>assistant\n````\n{doc}") and f"````\n{doc}<MISSING>{SUF}````" in text
    assert stops[0] == "````" and "```" not in stops
    # a fence in another file of the request counts too
    _, stops = fim_prompt(FakeEngine(), verdict.card_fim(), {}, "m", PRE, SUF, [("README.md", "```sh\nmake\n```")],
                          family="chatml")
    assert stops[0] == "````"
