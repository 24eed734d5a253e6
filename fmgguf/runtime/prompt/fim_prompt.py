"""The fill-in-the-middle prompt of a loaded model, as :meth:`ModelManager.fill_in_middle` sends it.

A catalog model whose card says it does FIM gets its family's text layout (:func:`render_fim`: the
other files of the project as repo-level context, the whole cut to a character budget); a bare file
(or a card without a FIM block) gets its FIM token ids from the GGUF keys, the known token strings or
llama.cpp's own guess (:func:`resolve_fim_tokens`). Where the middle ends is :mod:`fim_stop`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from fmgguf.runtime.engine.generation import PromptText
from fmgguf.runtime.prompt.fim_chat import at_line_start, before_code, chat_fill_stops, chat_fill_text, fence_for
from fmgguf.runtime.prompt.prompts import (
    FimFormat,
    build_fim_tokens,
    fim_format,
    fit_fim_text,
    render_fim,
    resolve_fim_tokens,
)

if TYPE_CHECKING:
    from fmgguf.catalog.schema import FIM


class FimEngine(Protocol):
    """What the prompt builder needs of an engine (in this process, or its runner's proxy)."""

    add_bos: bool
    bos_id: int
    bos_text: str
    eos_text: str
    metadata: Mapping[str, object]

    @property
    def chat_template(self) -> str | None: ...

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]: ...
    def special_token_id(self, text: str) -> int | None: ...
    def fim_token_ids(self) -> dict[str, int]: ...


def fim_prompt(engine: FimEngine, card_fim: FIM | None, fim_ids: Mapping[str, int], model_name: str,
               prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
               max_chars: int | None = None, in_stream: bool = False,
               family: str | None = None) -> tuple[list[int] | PromptText, list[str]]:
    """(prompt tokens, or the text for a runner to tokenize when ``in_stream``; the layout's stop strings).

    ``card_fim``: the FIM block the one rule (:func:`fmgguf.runtime.prompt.fim_rule.fim_verdict`) settled on, which
    has already refused a model that cannot fill in the middle; ``family``: the card's chat family (a chat
    fill on a file without a chat template). A ``prompt: chat`` card fills through the chat where the cursor
    is at a line's start (after its indentation at most: the gaps it was measured better on); inside a line
    of code its FIM tokens continue the line (through the chat, ``return `` before ``assert add(2, 3) == 5``
    became ``2 + 3``: the model copied the test)."""
    if card_fim is not None and card_fim.supported:
        fmt = fim_format(card_fim, model_name)
        if _chat_fill_at(card_fim, prefix):
            text, stops = _chat_fill(engine, fmt, prefix, suffix, extra, filename, max_chars, family)
        else:
            text, stops = render_fim(fmt, prefix, suffix, extra, filename=filename, max_chars=max_chars), list(fmt.stop)
        return _prompt_of(engine, text, in_stream), stops
    fim = resolve_fim_tokens(gguf_ids=dict(fim_ids) or gguf_fim_ids(engine), lookup=engine.special_token_id,
                             card_fim=card_fim, vocab_ids=engine.fim_token_ids(),
                             model_name=model_name)
    pre = engine.tokenize(prefix, add_bos=False, special=False) if prefix else []
    suf = engine.tokenize(suffix, add_bos=False, special=False) if suffix else []
    return build_fim_tokens(pre, suf, fim, engine.bos_id if engine.add_bos else None), []


def fim_prompt_cut(card_fim: FIM | None, model_name: str, prefix: str, suffix: str,
                   extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
                   max_chars: int | None = None) -> bool:
    """Whether :func:`fim_prompt` cuts the request to fit ``max_chars`` (llama.cpp's ``truncated``): for a
    chat fill, its prefix and suffix cut to half the budget; else the text layout shorter than uncut."""
    if max_chars is None or card_fim is None or not card_fim.supported:
        return False
    if _chat_fill_at(card_fim, prefix):
        return fit_fim_text(prefix, suffix, max(max_chars // 2, 0)) != (prefix, suffix)
    fmt = fim_format(card_fim, model_name)
    return len(render_fim(fmt, prefix, suffix, extra, filename=filename, max_chars=max_chars)) < \
        len(render_fim(fmt, prefix, suffix, extra, filename=filename))


def _chat_fill_at(card_fim: FIM, prefix: str) -> bool:
    """A ``prompt: chat`` card fills through the chat where the cursor is at a line's start (after its
    indentation at most)."""
    return card_fim.prompt == "chat" and at_line_start(prefix)


def fim_again_prompt(engine: FimEngine, card_fim: FIM | None, model_name: str, prefix: str, suffix: str,
                     extra: Sequence[tuple[str, str]] = (), filename: str | None = None, max_chars: int | None = None,
                     in_stream: bool = False, family: str | None = None) -> tuple[list[int] | PromptText, list[str]] | None:
    """The second ask of a chat fill whose first middle skipped the gap (:mod:`fmgguf.runtime.prompt.fim_again`):
    the same chat with the mark on a line of its own; None where the first ask was no chat fill or the cursor
    is not before a line of code (nothing to skip)."""
    if card_fim is None or not card_fim.supported or card_fim.prompt != "chat" or not before_code(prefix, suffix):
        return None
    text, stops = _chat_fill(engine, fim_format(card_fim, model_name), prefix, suffix, extra, filename, max_chars,
                             family, own_line=True)
    return _prompt_of(engine, text, in_stream), stops


def _prompt_of(engine: FimEngine, text: str, in_stream: bool) -> list[int] | PromptText:
    """A prompt text as the engine takes it: the text itself for a runner that tokenizes it (``in_stream``),
    else its tokens."""
    if in_stream:
        return PromptText(text, engine.add_bos)
    return engine.tokenize(text, add_bos=engine.add_bos, special=True)


def _chat_fill(engine: FimEngine, fmt: FimFormat, prefix: str, suffix: str, extra: Sequence[tuple[str, str]],
               filename: str | None, max_chars: int | None, family: str | None,
               own_line: bool = False) -> tuple[str, list[str]]:
    """A ``prompt: chat`` card's prompt text and stops (:mod:`fmgguf.runtime.prompt.fim_chat`); the prefix is
    written twice (in the marked file and in the opened reply), so it gets half the character budget."""
    if max_chars is not None:
        prefix, suffix = fit_fim_text(prefix, suffix, max(max_chars // 2, 0))
    fence = fence_for(prefix, suffix, *(text for _, text in extra))
    text = chat_fill_text(prefix, suffix, template=engine.chat_template, family=family, extra=extra,
                          filename=filename, bos_text=engine.bos_text, eos_text=engine.eos_text, own_line=own_line,
                          fence=fence)
    return text, chat_fill_stops(fmt.stop, fence)


def gguf_fim_ids(engine: FimEngine) -> dict[str, int]:
    """The FIM token ids the GGUF header declares (``tokenizer.ggml.fim_*_token_id`` and older names)."""
    out = {}
    for role, keys in (("pre", ("fim_pre", "prefix")), ("suf", ("fim_suf", "suffix")), ("mid", ("fim_mid", "middle"))):
        for k in keys:
            v = engine.metadata.get(f"tokenizer.ggml.{k}_token_id")
            if v is not None and str(v).lstrip("-").isdigit() and int(str(v)) >= 0:
                out[role] = int(str(v))
                break
    return out
