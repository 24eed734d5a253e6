"""Chat formatting (GGUF template, family fallbacks) and fill-in-the-middle layouts and gating."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.errors import FIMNotSupportedError, InvalidRequestError
from fmgguf.runtime.prompt.prompts import (
    FAMILIES,
    FimTokens,
    build_fim_tokens,
    render_chat,
    resolve_fim_tokens,
)

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Sum 1+1"}]
CHATML_JINJA = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_gguf_template_is_used_first() -> None:
    p = render_chat(MSGS, template=CHATML_JINJA, family="llama2")
    assert p.source == "gguf"
    assert p.text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in p.text


def test_template_bos_is_not_doubled_and_broken_template_falls_back() -> None:
    p = render_chat(MSGS[1:2], template="{{ bos_token }}[U]{{ messages[0]['content'] }}", family=None, bos_text="<s>")
    assert p.text == "[U]Hi"
    q = render_chat(MSGS, template="{% if %}broken", family="chatml")
    assert q.source == "family:chatml" and q.text.endswith("<|im_start|>assistant\n")
    r = render_chat(MSGS, template="{{ raise_exception('no system role') }}", family="gemma")
    assert r.source == "family:gemma"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_renders_all_turns(family: str) -> None:
    p = render_chat(MSGS, template=None, family=family)
    assert p.source == f"family:{family}"
    for text in ("Be brief.", "Hi", "Hello.", "Sum 1+1"):
        assert text in p.text
    assert p.text.index("Hi") < p.text.index("Hello.") < p.text.index("Sum 1+1")


def test_family_specifics() -> None:
    assert render_chat(MSGS, template=None, family="gemma").text.endswith("<start_of_turn>model\n")
    assert "<start_of_turn>model\nHello.<end_of_turn>" in render_chat(MSGS, template=None, family="gemma").text
    llama2 = render_chat(MSGS, template=None, family="llama2").text
    assert llama2.startswith("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]") and llama2.endswith("[/INST]")
    assert render_chat(MSGS, template=None, family="mistral-instruct").text.endswith("[INST] Sum 1+1 [/INST]")
    alpaca = render_chat(MSGS, template=None, family="alpaca-instruction")
    assert alpaca.text.endswith("### Response:\n") and "### Instruction:" in alpaca.stop
    assert render_chat(MSGS, template=None, family="deepseek-v2").text.endswith("Assistant:")


def test_completion_models_and_bad_messages_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        render_chat(MSGS, template=None, family="none")
    with pytest.raises(InvalidRequestError):
        render_chat([], template=CHATML_JINJA, family=None)
    with pytest.raises(InvalidRequestError):
        render_chat([{"role": "wizard", "content": "x"}], template=CHATML_JINJA, family=None)


class _Fim:
    def __init__(self, prefix: str, suffix: str, middle: str | None, order: str = "PSM", supported: bool = True):
        self.prefix, self.suffix, self.middle, self.order, self.supported, self.note = (
            prefix, suffix, middle, order, supported, None)


VOCAB = {"<|fim_prefix|>": 10, "<|fim_suffix|>": 11, "<|fim_middle|>": 12, "[PREFIX]": 20, "[SUFFIX]": 21}


def test_fim_token_sources_in_order() -> None:
    # 1. GGUF keys win
    t = resolve_fim_tokens(gguf_ids={"pre": 1, "suf": 2, "mid": 3}, lookup=VOCAB.get)
    assert (t.prefix, t.suffix, t.middle, t.source) == (1, 2, 3, "gguf")
    # 2. then known token strings
    t = resolve_fim_tokens(gguf_ids={}, lookup=VOCAB.get)
    assert (t.prefix, t.suffix, t.middle, t.order, t.source) == (10, 11, 12, "PSM", "strings")
    # Codestral's tokens alone mean suffix-first
    t = resolve_fim_tokens(gguf_ids={}, lookup={"[PREFIX]": 20, "[SUFFIX]": 21}.get)
    assert (t.prefix, t.suffix, t.middle, t.order) == (20, 21, None, "SPM")
    # 3. then llama.cpp's own guess
    t = resolve_fim_tokens(gguf_ids={}, lookup=lambda _s: None, vocab_ids={"prefix": 7, "suffix": 8})
    assert t.source == "llama.cpp" and (t.prefix, t.suffix, t.middle) == (7, 8, None)
    with pytest.raises(FIMNotSupportedError):
        resolve_fim_tokens(gguf_ids={}, lookup=lambda _s: None)


def test_fim_layouts() -> None:
    psm = FimTokens(10, 11, 12, "PSM")
    assert build_fim_tokens([1, 2], [3], psm, bos=0) == [0, 10, 1, 2, 11, 3, 12]
    spm = FimTokens(20, 21, None, "SPM")
    assert build_fim_tokens([1, 2], [3], spm) == [21, 3, 20, 1, 2]


def test_card_says_no_fim_is_refused_even_with_tokens() -> None:
    with pytest.raises(FIMNotSupportedError, match="not trained"):
        resolve_fim_tokens(gguf_ids={"pre": 1, "suf": 2}, lookup=VOCAB.get,
                           card_fim=_Fim("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", supported=False))
    t = resolve_fim_tokens(gguf_ids={}, lookup=VOCAB.get, card_fim=_Fim("[PREFIX]", "[SUFFIX]", None, "SPM"))
    assert (t.prefix, t.suffix, t.order) == (20, 21, "SPM")


# --- through the manager, on the tiny model --------------------------------------------------------
def test_chat_uses_the_models_template(manager) -> None:
    res = manager.chat([{"role": "user", "content": "write a haiku"}], max_tokens=8, temperature=0, seed=1)
    assert res.completion_tokens >= 1 and res.finish_reason in ("length", "stop")
    # the GGUF's chat template wraps the message: far more prompt tokens than the text alone
    plain = manager.generate_text("write a haiku", max_tokens=1)
    assert res.prompt_tokens > plain.prompt_tokens + 4


def test_fim_on_the_tiny_model(manager) -> None:
    res = manager.fill_in_middle("def square(x):\n    return ", "\n\nprint(square(3))\n", max_tokens=8, temperature=0)
    assert res.completion_tokens >= 1
    plain = manager.generate_text("def square(x):\n    return ", max_tokens=1)
    assert res.prompt_tokens > plain.prompt_tokens  # the suffix and FIM tokens are in the prompt


def test_fim_refused_where_the_catalog_says_so(fresh_manager, starcoder_path: Path) -> None:
    from fmgguf.catalog.schema import FIM, ModelCard
    from fmgguf.testing import tiny_card

    card = ModelCard.model_validate(tiny_card("tiny-nofim", arch="starcoder2", quants=("F16",)))
    card = card.model_copy(update={"fim": FIM(prefix="<fim_prefix>", suffix="<fim_suffix>",
                                              middle="<fim_middle>", supported=False, note="no FIM training")})
    m = fresh_manager()
    m.load_file(starcoder_path, card=card, n_ctx=128)
    with pytest.raises(FIMNotSupportedError, match="no FIM training"):
        m.fill_in_middle("a", "b")
    assert not m.busy
    assert m.current_model().fim is False


def test_fim_with_starcoder_tokens(fresh_manager, starcoder_path: Path) -> None:
    m = fresh_manager()
    m.load_file(starcoder_path, n_ctx=256)
    prefix, suffix = "def f(x):\n    return ", "\n\nprint(f(2))\n"
    res = m.fill_in_middle(prefix, suffix, max_tokens=6, temperature=0, seed=1)
    # the same tokens written out: StarCoder's prefix-suffix-middle layout with its three special tokens
    raw = m.generate_text(f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>", max_tokens=6, temperature=0, seed=1)
    assert res.prompt_tokens == raw.prompt_tokens and res.text == raw.text, (res, raw)
    plain = m.generate_text(prefix + suffix, max_tokens=1)
    assert res.prompt_tokens >= plain.prompt_tokens + 3  # the three FIM tokens are single tokens in the prompt
    swapped = m.generate_text(f"<fim_suffix>{suffix}<fim_prefix>{prefix}<fim_middle>", max_tokens=6, temperature=0,
                              seed=1)
    assert swapped.prompt_tokens == res.prompt_tokens and swapped.text != res.text  # the order matters too
