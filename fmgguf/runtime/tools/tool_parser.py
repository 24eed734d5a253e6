"""Reading tool calls back out of a model's streamed text, for every format the runtime prompts in.

One parser understands all of them, since models stray from their template's format:

- Hermes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen2.5), one or more;
- Mistral ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``;
- the generic envelope ``{"tool_calls": [...]}`` (:func:`fmgguf.runtime.tools.tools.envelope_instructions`);
- a bare JSON object whose ``name`` is a declared tool, also inside a ```json fence (Qwen2.5-Coder's
  habit, which Ollama hands back as text: ollama/ollama#12174).

Text is passed on as it comes, except a tail that may still become the start of a call: that is held
back until it is decided, so visible text never carries call markup. A call is reported once complete.
A call of an undeclared function, or JSON that never completes, is plain text.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence

from fmgguf.runtime.tools.tools import ToolCall, ToolSpec

Event = tuple[str, "str | ToolCall"]

_FENCE = r"(?:```(?:json)?[ \t]*\n?\s*)?"
_START = re.compile(_FENCE + r'(?:<tool_call>|\[TOOL_CALLS\]|\{\s*"(?:name|tool_calls|function)"\s*:)')
_FENCE_AT = re.compile(r"```(?:json)?\s*")
_CLOSE_FENCE = re.compile(r"\s*```")
_PARTIAL_FENCE = re.compile(r"`{1,3}(?:j|js|jso|json)?[ \t]*\n?\s*")
_TAGS = ("<tool_call>", "[TOOL_CALLS]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_KEYS = ('name"', 'tool_calls"', 'function"')
#: how far back a possible call start is looked for when deciding what to hold
_LOOKBACK = 48


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ToolCallParser:
    """Feed text pieces, get ``("piece", text)`` and ``("tool_call", ToolCall)`` events back."""

    def __init__(self, tools: Sequence[ToolSpec], parallel: bool = True) -> None:
        self.names = {t.name for t in tools}
        self.parallel = parallel
        self.calls: list[ToolCall] = []
        self.visible: list[str] = []
        self._pending = ""
        self._in_call = False
        self._after_call = False

    @property
    def text(self) -> str:
        return "".join(self.visible)

    def feed(self, piece: str) -> list[Event]:
        self._pending += piece
        return self._drain(final=False)

    def finish(self) -> list[Event]:
        return self._drain(final=True)

    # --- the two modes -----------------------------------------------------------------------------
    def _drain(self, final: bool) -> list[Event]:
        out: list[Event] = []
        while self._pending:
            if self._after_call:  # whitespace between calls (and after the last) is not text
                if not self._pending.strip() and not final:
                    break
                self._pending, self._after_call = self._pending.lstrip(), False
                continue
            if not self._in_call:
                m = _START.search(self._pending)
                if m is None:
                    keep = 0 if final else _hold_len(self._pending)
                    self._emit(out, self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep:]
                    break
                self._emit(out, self._pending[: m.start()])
                self._pending, self._in_call = self._pending[m.start():], True
            taken = self._take_calls(final)
            if taken is None:  # not complete yet
                break
            calls, rest, ok = taken
            if not ok:  # not a call after all: the text goes out as it is, up to the next candidate
                cut = _next_start(self._pending)
                self._emit(out, self._pending[:cut])
                self._pending, self._in_call = self._pending[cut:], False
                continue
            for call in calls:
                if self.parallel or not self.calls:
                    self.calls.append(call)
                    out.append(("tool_call", call))
            self._pending, self._in_call, self._after_call = rest, False, bool(calls)
        return out

    def _emit(self, out: list[Event], text: str) -> None:
        if text:
            self.visible.append(text)
            out.append(("piece", text))

    def _take_calls(self, final: bool) -> tuple[list[ToolCall], str, bool] | None:
        """The calls at the start of the pending text and what follows them; None: wait for more;
        ok False: this is not a call."""
        text = self._pending
        fence = _FENCE_AT.match(text)
        body = text[fence.end():] if fence else text
        if body.startswith("<tool_call>"):
            inner = body[len("<tool_call>"):]
            end = inner.find("</tool_call>")
            if end < 0:  # the closing tag is still to come (or, at the end, never came)
                return self._decode(inner, fence is not None, final) if final else None
            return self._finish_calls(inner[:end], inner[end + len("</tool_call>"):], fence is not None)
        if body.startswith("[TOOL_CALLS]"):
            return self._decode(body[len("[TOOL_CALLS]"):], fence is not None, final)
        return self._decode(body, fence is not None, final)

    def _finish_calls(self, inner: str, rest: str, fenced: bool) -> tuple[list[ToolCall], str, bool]:
        try:
            value = json.loads(inner, strict=False)
        except ValueError:
            return [], "", False
        calls = self._calls_of(value)
        return (calls, _after(rest, fenced), bool(calls))

    def _decode(self, body: str, fenced: bool, final: bool) -> tuple[list[ToolCall], str, bool] | None:
        stripped = body.lstrip()
        try:
            value, end = json.JSONDecoder(strict=False).raw_decode(stripped)
        except ValueError:
            return ([], "", False) if final else None
        calls = self._calls_of(value)
        rest = stripped[end:]
        if rest.lstrip().startswith("</tool_call>"):
            rest = rest.lstrip()[len("</tool_call>"):]
        elif calls and fenced and not final and not _CLOSE_FENCE.match(rest) and "```".startswith(rest.strip()):
            return None  # the closing fence may still come: it is part of the call, not text
        return (calls, _after(rest, fenced), bool(calls))

    def _calls_of(self, value: object) -> list[ToolCall]:
        """The declared-tool calls in a decoded value (one object, a list, or the envelope)."""
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
            value = value["tool_calls"]
        items = value if isinstance(value, list) else [value]
        calls = []
        for item in items:
            call = self._call_of(item)
            if call is None:
                return []
            calls.append(call)
        return calls

    def _call_of(self, item: object) -> ToolCall | None:
        if not isinstance(item, dict):
            return None
        fn = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if not isinstance(name, str) or name not in self.names:
            return None
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args, strict=False) if args.strip() else {}
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        return ToolCall(id=new_call_id(), name=name, arguments=_utf8(json.dumps(args, ensure_ascii=False)))


def _utf8(text: str) -> str:
    """``text`` with lone surrogates (a model's ``"\\udaab"`` escape decodes to one) as U+FFFD: a string
    that cannot be encoded as UTF-8 cannot be sent back in any dialect."""
    return _SURROGATE.sub("\ufffd", text)


def _after(rest: str, fenced: bool) -> str:
    """What follows a call, its closing fence dropped."""
    if fenced:
        m = _CLOSE_FENCE.match(rest)
        if m:
            rest = rest[m.end():]
    return rest


def _next_start(text: str) -> int:
    """Where the text that turned out not to be a call ends: at the next possible call start, else its end."""
    m = _START.search(text, 1)
    return m.start() if m else len(text)


def _hold_len(text: str) -> int:
    """How many trailing characters may still become the start of a call."""
    for i in range(max(0, len(text) - _LOOKBACK), len(text)):
        if text[i] in "`<[{" and could_start(text[i:]):
            return len(text) - i
    return 0


def could_start(tail: str) -> bool:
    """Whether more text after ``tail`` could make it the start of a tool call."""
    if any(tag.startswith(tail) for tag in _TAGS):
        return True
    fence = _PARTIAL_FENCE.fullmatch(tail)
    if fence:
        return True
    m = _FENCE_AT.match(tail)
    rest = tail[m.end():] if m else tail
    if not rest.startswith("{"):
        return any(tag.startswith(rest) for tag in _TAGS) if m else False
    rest = rest[1:].lstrip()
    if not rest:
        return True
    if rest[0] != '"':
        return False
    word = rest[1:]
    return any(k.startswith(word) or (word.startswith(k) and not word[len(k):].strip()) for k in _KEYS)
