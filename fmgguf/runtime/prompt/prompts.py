"""Prompt formats: chat messages -> the model's prompt text, and fill-in-the-middle token layouts.

Chat uses the GGUF's own ``tokenizer.chat_template`` (Jinja, rendered in a sandbox the way
transformers does), and falls back to the catalog's family (chatml, llama2, mistral-instruct,
gemma, deepseek-v2, alpaca-instruction) when the file has none or it fails to render.

FIM tokens come from the GGUF keys ``tokenizer.ggml.fim_{pre,suf,mid}_token_id``, then from the
known token strings (the catalog card's first), in the card's order: PSM, or SPM (suffix first,
as Codestral wants). A card that says ``fim.supported: false`` refuses FIM: token presence is not
capability. This module never imports llama_cpp; the engine is passed in as a token lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.errors import FIMNotSupportedError, InvalidRequestError
from fmgguf.runtime.tools.tools import ToolFormat, ToolRequest, template_format, template_messages

if TYPE_CHECKING:
    from fmgguf.catalog.schema import FIM

log = logging.getLogger(__name__)

FAMILIES = ("chatml", "llama2", "mistral-instruct", "gemma", "deepseek-v2", "alpaca-instruction")
_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    #: plain-text stops the format needs besides the model's end-of-generation tokens
    stop: tuple[str, ...] = ()
    #: "gguf" (the file's own template) or "family:<name>"
    source: str = "gguf"
    #: how this prompt asked for tool calls: the template's own format, or the generic envelope
    tool_format: ToolFormat = "generic"


def normalize_messages(messages: Sequence[Mapping[str, object]]) -> list[JsonObject]:
    """Check and copy chat messages: each a mapping with a known role and string content; an assistant's
    ``tool_calls`` and a tool result's ``tool_call_id`` / ``name`` are kept."""
    if not messages:
        raise InvalidRequestError("chat needs at least one message", fix='pass [{"role": "user", "content": "..."}]')
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise InvalidRequestError(f"message {i} has no role", fix='each message is {"role": ..., "content": ...}')
        role = str(msg["role"])
        if role not in _ROLES:
            raise InvalidRequestError(f"message {i} has unknown role {role!r}",
                                      fix="use system, user, assistant or tool")
        content = msg.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        item: JsonObject = {"role": role, "content": "" if content is None else str(content)}
        calls = msg.get("tool_calls")
        if role == "assistant" and isinstance(calls, Sequence) and not isinstance(calls, str) and calls:
            item["tool_calls"] = [dict(c) for c in calls if isinstance(c, Mapping)]
        for key in ("tool_call_id", "name"):
            if role == "tool" and msg.get(key):
                item[key] = str(msg[key])
        out.append(item)
    return out


def render_chat(messages: Sequence[Mapping[str, object]], *, template: str | None, family: str | None,
                bos_text: str = "", eos_text: str = "", tools: ToolRequest | None = None) -> ChatPrompt:
    """The prompt for ``messages``: GGUF template first, then the catalog family. ``tools``: rendered by
    the template where it carries tools (``ChatPrompt.tool_format`` says how), else described in the
    system prompt as the generic JSON envelope."""
    msgs = normalize_messages(messages)
    if template:
        fmt = template_format(template)
        # every declared tool, whatever tool_choice names (the grammar holds a call to it): the rendered
        # tools stay the same from turn to turn, and so does the KV prefix they are part of
        spec = [t.openai() for t in tools.tools] if tools and tools.calls_allowed and fmt != "generic" else None
        try:
            text = _render_jinja(template, template_messages(msgs, fmt, tools), bos_text, eos_text, spec)
            return ChatPrompt(_strip_bos(text, bos_text), (), "gguf", fmt)
        except Exception as exc:  # noqa: BLE001 - any template failure falls back to the family
            log.warning("the GGUF chat template failed to render (%s); using the catalog family", exc)
    if family and family in FAMILIES:
        text, stop = _FORMATTERS[family](template_messages(msgs, "generic", tools))
        return ChatPrompt(text, stop, f"family:{family}", "generic")
    why = ", so it cannot take tools either" if tools is not None and tools.tools else ""
    raise InvalidRequestError(
        f"this model has no chat template (it is a completion model){why}",
        fix="use `fmgguf run` / generate_text, or set chat_template in its catalog entry")


def _strip_bos(text: str, bos_text: str) -> str:
    # The engine adds BOS itself where the vocab wants it; a template's literal BOS would double it.
    if bos_text and text.startswith(bos_text):
        return text[len(bos_text):]
    return text


def _render_jinja(template: str, messages: list[JsonObject], bos_text: str, eos_text: str,
                  tools: list[JsonObject] | None = None) -> str:
    import jinja2  # noqa: PLC0415
    import jinja2.ext  # noqa: PLC0415
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    import json  # noqa: PLC0415

    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, bos_token=bos_text, eos_token=eos_text,
                                            add_generation_prompt=True, tools=tools)


# --- family formats (used when the GGUF carries no template) -------------------------------------
def _system_and_rest(msgs: list[JsonObject]) -> tuple[str, list[JsonObject]]:
    if msgs and msgs[0]["role"] == "system":
        return msgs[0]["content"], msgs[1:]
    return "", msgs


def _chatml(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs]
    return "".join(parts) + "<|im_start|>assistant\n", ("<|im_end|>",)


def _llama2(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    system, rest = _system_and_rest(msgs)
    out, first = "", True
    for m in rest:
        if m["role"] == "assistant":
            out += f" {m['content'].strip()} </s>"
            continue
        content = m["content"].strip()
        if first and system:
            content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
        out += ("" if first else "<s>") + f"[INST] {content} [/INST]"
        first = False
    return out, ()


def _mistral(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    system, rest = _system_and_rest(msgs)
    out, first = "", True
    for m in rest:
        if m["role"] == "assistant":
            out += f"{m['content'].strip()}</s>"
            continue
        content = m["content"].strip()
        if first and system:
            content = f"{system}\n\n{content}"
        out += f"[INST] {content} [/INST]"
        first = False
    return out, ()


def _gemma(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    system, rest = _system_and_rest(msgs)
    out, first = "", True
    for m in rest:
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"].strip()
        if first and system and role == "user":
            content = f"{system}\n\n{content}"
        first = False
        out += f"<start_of_turn>{role}\n{content}<end_of_turn>\n"
    return out + "<start_of_turn>model\n", ("<end_of_turn>",)


def _deepseek_v2(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    system, rest = _system_and_rest(msgs)
    out = f"{system}\n\n" if system else ""
    for m in rest:
        if m["role"] == "assistant":
            out += f"Assistant: {m['content']}<｜end▁of▁sentence｜>"
        else:
            out += f"User: {m['content']}\n\n"
    return out + "Assistant:", ("\nUser:",)


def _alpaca(msgs: list[JsonObject]) -> tuple[str, tuple[str, ...]]:
    system, rest = _system_and_rest(msgs)
    out = f"{system}\n" if system else ""
    for m in rest:
        if m["role"] == "assistant":
            out += f"{m['content']}\n<|EOT|>\n"
        else:
            out += f"### Instruction:\n{m['content']}\n### Response:\n"
    return out, ("### Instruction:", "<|EOT|>")


_FORMATTERS: dict[str, Callable[[list[JsonObject]], tuple[str, tuple[str, ...]]]] = {
    "chatml": _chatml, "llama2": _llama2, "mistral-instruct": _mistral, "gemma": _gemma,
    "deepseek-v2": _deepseek_v2, "alpaca-instruction": _alpaca,
}


# --- fill in the middle ----------------------------------------------------------------------------
#: known (prefix, suffix, middle) token strings, most common first
KNOWN_FIM_TOKENS: tuple[tuple[str, str, str | None], ...] = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),   # Qwen2.5-Coder, OpenCoder
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),         # StarCoder / StarCoder2
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),   # DeepSeek-Coder
    ("<|fim_begin|>", "<|fim_hole|>", "<|fim_end|>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),                          # CodeLlama
    ("<PRE>", "<SUF>", "<MID>"),
    ("[PREFIX]", "[SUFFIX]", None),                           # Codestral (SPM)
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
)


@dataclass(frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int | None
    order: str = "PSM"
    #: where the ids came from: "gguf", "strings" or "llama.cpp"
    source: str = "gguf"
    names: tuple[str, ...] = field(default=())


def resolve_fim_tokens(*, gguf_ids: Mapping[str, int], lookup: Callable[[str], int | None],
                       card_fim: FIM | None = None, vocab_ids: Mapping[str, int] | None = None,
                       model_name: str = "this model") -> FimTokens:
    """The FIM token ids for a loaded model, or :class:`FIMNotSupportedError`.

    ``gguf_ids``: ids the GGUF declares (``pre``/``suf``/``mid``, as ``GGUFInfo.fim_tokens``); ``lookup(text)``: the id if ``text`` is one token;
    ``card_fim``: the catalog card's ``fim`` (or None); ``vocab_ids``: llama.cpp's own guess.
    """
    if card_fim is not None and not card_fim.supported:
        note = card_fim.note
        raise FIMNotSupportedError(
            f"{model_name} was not trained for fill-in-the-middle" + (f" ({note})" if note else ""),
            fix="pick a model whose `fmgguf info ID` says FIM: yes, or use plain completion (`fmgguf run`)")
    order: str = card_fim.order if card_fim is not None else "PSM"
    pre, suf, mid = (_int(gguf_ids.get(k)) for k in ("pre", "suf", "mid"))
    if pre is not None and suf is not None:
        return FimTokens(pre, suf, mid, order, "gguf")
    candidates: list[tuple[str, str, str | None]] = []
    if card_fim is not None and card_fim.prefix:
        candidates.append((card_fim.prefix, card_fim.suffix, card_fim.middle))
    candidates.extend(KNOWN_FIM_TOKENS)
    for pre, suf, mid in candidates:
        p, s = lookup(pre), lookup(suf)
        if p is None or s is None:
            continue
        m = lookup(mid) if mid else None
        if mid and m is None:
            continue
        spm = card_fim is None and pre == "[PREFIX]"
        return FimTokens(p, s, m, "SPM" if spm else order, "strings", (pre, suf, mid or ""))
    if vocab_ids and "prefix" in vocab_ids and "suffix" in vocab_ids:
        return FimTokens(vocab_ids["prefix"], vocab_ids["suffix"], vocab_ids.get("middle"), order, "llama.cpp")
    raise FIMNotSupportedError(f"{model_name} has no fill-in-the-middle tokens",
                               fix="pick a model whose `fmgguf info ID` says FIM: yes, or use plain completion (`fmgguf run`)")


def build_fim_tokens(prefix_ids: Sequence[int], suffix_ids: Sequence[int], fim: FimTokens,
                     bos: int | None = None) -> list[int]:
    """PSM: <pre> prefix <suf> suffix <mid>;  SPM: <suf> suffix <pre> prefix (<mid>)."""
    head = [bos] if bos is not None and bos >= 0 else []
    if fim.order == "SPM":
        body = [fim.suffix, *suffix_ids, fim.prefix, *prefix_ids]
    else:
        body = [fim.prefix, *prefix_ids, fim.suffix, *suffix_ids]
    tail = [fim.middle] if fim.middle is not None else []
    return head + body + tail


def _int(value: int | str | None) -> int | None:
    """A token id the GGUF declares, or None (none given, not a number, or below 0)."""
    try:
        out = int(value) if value is not None else -1
    except ValueError:
        return None
    return out if out >= 0 else None


# --- fill in the middle as prompt text: one layout per family, used by every API dialect -----------
#: the repo-level tokens (repo name, file separator) of the families trained with them, by FIM prefix token
_REPO_TOKENS: dict[str, tuple[str, str]] = {
    "<|fim_prefix|>": ("<|repo_name|>", "<|file_sep|>"),   # Qwen2.5-Coder
    "<fim_prefix>": ("<repo_name>", "<file_sep>"),         # StarCoder2
}
#: plain-text stops that end a completion in every family (the model starting a new file or turn)
_FIM_STOPS: dict[str, tuple[str, ...]] = {
    "<|fim_prefix|>": ("<|endoftext|>", "<|fim_pad|>", "<|im_start|>", "<|im_end|>"),
    "<fim_prefix>": ("<|endoftext|>", "<fim_pad>"),
    "<｜fim▁begin｜>": ("<｜end▁of▁sentence｜>",),
    "▁<PRE>": ("<EOT>",), "<PRE>": ("<EOT>",),
    "[PREFIX]": ("[INST]", "</s>"),
}
#: what goes between extra files for families without a file-separator token
_SNIPPET_HEAD = "--- {name} ---\n"


@dataclass(frozen=True)
class FimFormat:
    """How one family writes a fill-in-the-middle prompt as text (its special tokens spelled out).

    ``order`` PSM: ``<pre>prefix<suf>suffix<mid>``; SPM (Codestral): ``<suf>suffix<pre>prefix``.
    ``file_sep``/``repo_name``: the repo-level layout (other files of the project before the FIM
    part, each after a file separator), where the family was trained with one.
    """

    prefix: str
    suffix: str
    middle: str | None = None
    order: str = "PSM"
    file_sep: str | None = None
    repo_name: str | None = None
    stop: tuple[str, ...] = ()


def fim_format(card_fim: FIM | None, model_name: str = "this model") -> FimFormat:
    """The layout for a card's ``fim`` block; :class:`FIMNotSupportedError` where the card says no."""
    if card_fim is None or not card_fim.supported:
        note = card_fim.note if card_fim is not None else None
        raise FIMNotSupportedError(
            f"{model_name} was not trained for fill-in-the-middle" + (f" ({note})" if note else ""),
            fix="pick a model whose `fmgguf info ID` says FIM: yes")
    pre, suf, mid = card_fim.prefix, card_fim.suffix, card_fim.middle
    repo, sep = _REPO_TOKENS.get(pre, (None, None))
    own = tuple(t for t in (pre, suf, mid, repo, sep) if t)
    return FimFormat(pre, suf, mid, card_fim.order, sep, repo,
                     own + _FIM_STOPS.get(pre, ()))


def render_fim(fmt: FimFormat, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = (), *,
               filename: str | None = None, repo: str | None = None, max_chars: int | None = None) -> str:
    """The FIM prompt text: extra files (``(name, text)``, oldest first) as repo-level context, then the
    FIM part. ``max_chars`` bounds the whole text: the suffix keeps at most a quarter, the prefix what is
    left (cut at a coarse line boundary so the start stays put while the user types: the KV cache of the
    previous request keeps matching), extra files only what still fits, newest kept."""
    if max_chars is not None:
        prefix, suffix = fit_fim_text(prefix, suffix, max_chars)
    fim = (f"{fmt.suffix}{suffix}{fmt.prefix}{prefix}" if fmt.order == "SPM"
           else f"{fmt.prefix}{prefix}{fmt.suffix}{suffix}") + (fmt.middle or "")
    room = None if max_chars is None else max_chars - len(prefix) - len(suffix)
    context = _repo_context(fmt, extra, filename, repo, room)
    return context + fim


def fit_fim_text(prefix: str, suffix: str, max_chars: int) -> tuple[str, str]:
    """``prefix`` and ``suffix`` cut to ``max_chars`` together: the suffix keeps at most a quarter, the
    prefix what is left (its start moving in coarse steps, :func:`_stable_tail`)."""
    suffix = _head(suffix, max(max_chars // 4, 0))
    return _stable_tail(prefix, max(max_chars - len(suffix), 0)), suffix


def _repo_context(fmt: FimFormat, extra: Sequence[tuple[str, str]], filename: str | None, repo: str | None,
                  room: int | None) -> str:
    # Without other files or a file name, no repo-level header: llama.cpp's /infill always sends one
    # (``myproject``/``filename``), but on Qwen2.5-Coder-0.5B-Instruct a made-up header lowers the pass
    # rate of single-line HumanEval infilling from 17/41 to 14/41 (benchmarks/bench_fim_quality.py's gaps).
    if not extra and not (fmt.file_sep and filename):
        return ""
    parts: list[str] = []
    used = 0
    for name, text in reversed(list(extra)):  # newest last in the input; keep the newest that fit
        block = (f"{fmt.file_sep}{name}\n{text}" if fmt.file_sep else _SNIPPET_HEAD.format(name=name) + text)
        if not block.endswith("\n"):
            block += "\n"
        if room is not None and used + len(block) > room:
            break
        parts.insert(0, block)
        used += len(block)
    head = f"{fmt.repo_name}{repo or 'project'}\n" if fmt.repo_name and fmt.file_sep else ""
    tail = f"{fmt.file_sep}{filename or 'current'}\n" if fmt.file_sep else ""
    return head + "".join(parts) + tail


def _head(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    cut = text.rfind("\n", 0, n)
    return text[: cut + 1 if cut > 0 else n]


def _stable_tail(text: str, n: int) -> str:
    """The last ``n`` characters at most, starting after a line break at a position that only moves in
    steps of n/8 (so typing at the end does not shift the start on every keystroke)."""
    if len(text) <= n:
        return text
    step = max(n // 8, 1)
    start = -(-(len(text) - n) // step) * step  # round the cut up to a step boundary
    nl = text.find("\n", start)
    return text[nl + 1:] if 0 <= nl < start + step else text[start:]
