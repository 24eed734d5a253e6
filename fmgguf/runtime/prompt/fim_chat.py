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

from collections.abc import Sequence

from fmgguf.runtime.prompt.prompts import render_chat

MARK = "<MISSING>"
FENCE = "```"
SYSTEM = f"You are a code completion engine. Output only the code that goes in place of {MARK}, nothing else."
ASK = f"Fill in the code at {MARK}. Reply with the complete code."
#: file extensions to code-fence language names (the fence tells the model what it is writing)
_LANGS = {"py": "python", "js": "javascript", "ts": "typescript", "tsx": "tsx", "jsx": "jsx", "rs": "rust",
          "go": "go", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp", "hpp": "cpp", "java": "java", "kt": "kotlin",
          "rb": "ruby", "php": "php", "cs": "csharp", "swift": "swift", "sh": "bash", "lua": "lua", "sql": "sql"}


def fence_language(filename: str | None) -> str:
    """The code-fence language for ``filename`` (empty when unknown)."""
    if not filename or "." not in filename:
        return ""
    return _LANGS.get(filename.rsplit(".", 1)[1].lower(), "")


def chat_fill_text(prefix: str, suffix: str, *, template: str | None, family: str | None,
                   extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
                   bos_text: str = "", eos_text: str = "") -> str:
    """The prompt text: the chat (system, user with the marked file) rendered with the model's template,
    then the opened assistant reply (a fence and ``prefix``). The mark sits where the cursor is, before
    the suffix's first line when the cursor is at a line start (on a line of its own it passed no more
    gaps and overran more)."""
    lang = fence_language(filename)
    files = "".join(f"{name}:\n{FENCE}{fence_language(name)}\n{text.rstrip()}\n{FENCE}\n\n" for name, text in extra)
    head = f"{filename}:\n" if filename and extra else ""
    user = f"{files}{ASK}\n\n{head}{FENCE}{lang}\n{prefix}{MARK}{suffix}{'' if suffix.endswith(chr(10)) else chr(10)}{FENCE}"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    chat = render_chat(messages, template=template, family=family, bos_text=bos_text, eos_text=eos_text)
    return f"{chat.text}{FENCE}{lang}\n{prefix}"


def chat_fill_stops(family_stops: Sequence[str]) -> list[str]:
    """The stop strings of a chat fill: the closing fence, then the template's own turn ends."""
    return [FENCE, *family_stops]
