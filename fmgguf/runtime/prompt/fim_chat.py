"""Fill in the middle through an instruct model's chat (a card's ``fim.prompt: chat``).

Some instruct checkpoints keep their FIM tokens but use them poorly: they continue the prefix as if
the suffix were not there (Qwen2.5-Coder-0.5B-Instruct, measured by benchmarks/bench_fim_quality.py).
For those, the file goes into a user turn with the gap marked, and the assistant's reply is opened
with a code fence and the code before the gap, so the model writes on from the cursor having read
the code after it. What it writes is then cut like every other middle
(:mod:`fmgguf.runtime.prompt.fim_stop`: at the suffix's first line, a dedent...), and the closing
fence is a stop string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fmgguf.runtime.prompt.prompts import render_chat

MARK = "<MISSING>"
FENCE = "```"
SYSTEM = f"You are a code completion engine. Output only the code that goes in place of {MARK}, nothing else."
ASK = f"Fill in the code at {MARK}. Reply with the complete code."
#: the last characters of a line after which the next may be indented deeper (a block or an expression goes on)
_OPENS = ":{([,\\=+-*/%|&<>.?"
#: file extensions to code-fence language names (the fence tells the model what it is writing)
_LANGS = {"py": "python", "js": "javascript", "ts": "typescript", "tsx": "tsx", "jsx": "jsx", "rs": "rust",
          "go": "go", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp", "hpp": "cpp", "java": "java", "kt": "kotlin",
          "rb": "ruby", "php": "php", "cs": "csharp", "swift": "swift", "sh": "bash", "lua": "lua", "sql": "sql"}


def fence_language(filename: str | None) -> str:
    """The code-fence language for ``filename`` (empty when unknown)."""
    if not filename or "." not in filename:
        return ""
    return _LANGS.get(filename.rsplit(".", 1)[1].lower(), "")


def fence_for(*texts: str) -> str:
    """A code fence longer than any run of backticks in ``texts`` (CommonMark's rule), at least three: a
    fence inside the file neither closes the block the model reads nor stops the middle early."""
    longest = max((len(run) for text in texts for run in re.findall("`+", text)), default=0)
    return "`" * max(len(FENCE), longest + 1)


def chat_fill_text(prefix: str, suffix: str, *, template: str | None, family: str | None,
                   extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
                   bos_text: str = "", eos_text: str = "", own_line: bool = False, fence: str | None = None) -> str:
    """The prompt text: the chat (system, user with the marked file) rendered with the model's template,
    then the opened assistant reply (a fence and ``prefix``). The mark sits where the cursor is, before
    the suffix's first line when the cursor is at a line start (on a line of its own it passed no more
    gaps and overran more); ``own_line`` (the second ask after a skipped gap, :mod:`fim_again`): on a
    line of its own before the line of code after the cursor, indented as :func:`gap_indent` guesses."""
    lang, fence = fence_language(filename), fence or fence_for(prefix, suffix, *(text for _, text in extra))
    files = "".join(f"{name}:\n{fence}{fence_language(name)}\n{text.rstrip()}\n{fence}\n\n" for name, text in extra)
    head = f"{filename}:\n" if filename and extra else ""
    marked = f"{prefix}{MARK}{suffix}"
    if own_line:
        line = cursor_line(prefix)
        marked = f"{prefix}{'' if line else gap_indent(prefix, suffix)}{MARK}\n{line}{suffix}"
    user = f"{files}{ASK}\n\n{head}{fence}{lang}\n{marked}{'' if marked.endswith(chr(10)) else chr(10)}{fence}"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    chat = render_chat(messages, template=template, family=family, bos_text=bos_text, eos_text=eos_text)
    return f"{chat.text}{fence}{lang}\n{prefix}"


def chat_fill_stops(family_stops: Sequence[str], fence: str = FENCE) -> list[str]:
    """The stop strings of a chat fill: the closing fence, then the template's own turn ends."""
    return [fence, *family_stops]


def cursor_line(prefix: str) -> str:
    """What the cursor's line holds before the cursor."""
    return prefix[prefix.rfind("\n") + 1:]


def at_line_start(prefix: str) -> bool:
    """The cursor is at a line's start (after its indentation at most)."""
    return not cursor_line(prefix).strip()


def before_code(prefix: str, suffix: str) -> bool:
    """The cursor is at the start of a line of code (or in its indentation): a gap there can be marked
    on a line of its own (:func:`chat_fill_text`'s ``own_line``)."""
    return at_line_start(prefix) and bool(suffix.split("\n", 1)[0].strip())


def gap_indent(prefix: str, suffix: str) -> str:
    """The indentation a line inserted at a line start most likely has: the next line's, unless that line
    is indented deeper than the last line before it and that line opens no block (ends with no ``:``,
    bracket, operator...): then the missing line must open that block, at the earlier line's indentation."""
    after = suffix.split("\n", 1)[0]
    before = next((ln for ln in reversed(prefix.split("\n")) if ln.strip()), "")
    indent_after, indent_before = after[: len(after) - len(after.lstrip())], before[: len(before) - len(before.lstrip())]
    if len(indent_after) > len(indent_before) and before and before.rstrip()[-1] not in _OPENS:
        return indent_before
    return indent_after
