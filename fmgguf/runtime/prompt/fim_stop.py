"""Where a fill-in-the-middle completion ends: the one post-processor of every FIM result.

A model asked to fill a gap rarely stops at its end by itself (an instruct model least of all): it
writes the middle, then the code after the cursor again, then a test harness of its own.
:class:`FimCutter` watches the text as it streams and ends the middle at the first of:

- ``suffix``: a line that repeats the suffix's first non-blank line (and the next one too when the
  first says little, such as ``else:`` or ``}``), or one of its first three non-blank lines that say
  something and are not in the prefix already (at any indentation: the model skipped into the suffix),
  or a ``return``/``raise``/``break``/``continue`` at the indentation of the suffix's first line when that line starts with the same word
  (the suffix's line would be dead code after it); a reworded copy of the suffix's first line (a name
  changed) when the next line is the suffix's second; with the cursor inside a line, a first line that
  ends with the rest of the cursor's line;
- ``indent``: a line less indented than the block the cursor is in (outside open brackets and
  triple-quoted strings); a line of closing brackets there is kept (it closes the block) unless the
  suffix starts with it;
- ``n_indent``: llama.cpp's ``n_indent``: a line after the first indented less than asked;
- ``time``: llama.cpp's ``t_max_predict_ms``: the first line end after that much generation time.

End-of-generation tokens (EOT, FIM pad, file separator, repo name) end the generation in the engine:
llama.cpp counts them as end-of-generation, and their texts are stop strings of the family's layout
(:func:`fmgguf.runtime.prompt.prompts.fim_format`).

Streaming: :meth:`FimCutter.feed` returns only text that no later cut can remove. It holds back the
current line while a rule could still cut at its start, and blank lines (or a short suffix-like line)
until the next line decides; a line once released is never cut.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

#: why a FIM completion ended, beyond the engine's own reasons ("eos", "length", "context", "cancelled")
CUT_REASONS = ("suffix", "indent", "n_indent", "time")
_OPEN, _CLOSE = "([{", ")]}"
_WEAK_LEN = 8  # a suffix line shorter than this (stripped) is confirmed by the next line before a cut
_EXITS = ("return", "raise", "break", "continue")
_HEAD_LINES = 3  # how many of the suffix's first non-blank lines a middle line is compared with
_NEAR = 0.8  # similarity (difflib ratio) from which a line is a reworded copy of the suffix's first line


def indent_of(line: str) -> int:
    """Leading blanks of ``line`` in characters (llama.cpp counts a tab as one, so do we)."""
    return len(line) - len(line.lstrip(" \t"))


def _weak(line: str) -> bool:
    body = line.strip()
    return len(body) < _WEAK_LEN or not any(c.isalnum() for c in body)


def _same_exit(line: str, suffix_line: str) -> bool:
    """``line`` leaves the block the way the suffix's first line does (``return``, ``raise``...) at the same
    indentation: the suffix's line would be dead code after it, so the model is writing the suffix again."""
    word = suffix_line.split(None, 1)[0] if suffix_line.strip() else ""
    return (word in _EXITS and indent_of(line) == indent_of(suffix_line)
            and line.split(None, 1)[0] == word)


def _may_exit(part: str, suffix_line: str) -> bool:
    """The unfinished ``part`` may still become a :func:`_same_exit` line."""
    word = suffix_line.split(None, 1)[0] if suffix_line.strip() else ""
    return (word in _EXITS and indent_of(part) == indent_of(suffix_line)
            and word.startswith(part.strip().split(None, 1)[0]) if part.strip() else False)


def _first_word(line: str) -> str:
    return line.split(None, 1)[0] if line.strip() else ""


def _near(line: str, suffix_line: str) -> bool:
    """``line`` is the suffix's first line reworded (a name changed, a term added): same indentation, same
    first word, mostly the same text. A small model that renamed something in the gap writes the suffix's
    line again with its own name; the next line then says whether it is the suffix again."""
    return (line != suffix_line and not _weak(line) and not _weak(suffix_line)
            and indent_of(line) == indent_of(suffix_line) and _first_word(line) == _first_word(suffix_line)
            and SequenceMatcher(None, line.strip(), suffix_line.strip()).ratio() >= _NEAR)


def _may_near(part: str, suffix_line: str) -> bool:
    """The unfinished ``part`` may still become a :func:`_near` line (same indentation, its first word so far
    a prefix of the suffix line's)."""
    word = _first_word(part)
    return bool(word) and indent_of(part) == indent_of(suffix_line) and _first_word(suffix_line).startswith(word)


def _is_closer(line: str) -> bool:
    body = line.strip().rstrip(";,")
    return bool(body) and (all(c in _CLOSE for c in body) or body in ("end", "fi", "done", "esac"))


@dataclass
class _Scan:
    """Bracket depth and triple-quote state of code read line by line (strings and comments skipped)."""

    depth: int = 0
    quote: str | None = None  # the open triple quote, if any

    def line(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            if self.quote is not None:
                end = text.find(self.quote, i)
                if end < 0:
                    return
                i, self.quote = end + 3, None
                continue
            c = text[i]
            if text.startswith(('"""', "'''"), i):
                self.quote, i = text[i:i + 3], i + 3
            elif c in "\"'`":
                end = text.find(c, i + 1)
                i = n if end < 0 else end + 1
            elif c == "#" or text.startswith("//", i):
                return
            else:
                self.depth += (c in _OPEN) - (c in _CLOSE)
                i += 1


@dataclass(frozen=True)
class FimRules:
    """What the cutter knows of the gap; build it with :meth:`for_gap`."""

    #: the suffix's first non-blank lines (right-stripped, indentation kept), at most two
    suffix_head: tuple[str, ...] = ()
    #: the telling ones among the suffix's first three non-blank lines that the prefix does not have, stripped:
    #: a middle line equal to one of them (at any indentation) means the model jumped into the suffix
    suffix_lines: tuple[str, ...] = ()
    #: lines indented less than this end the middle (None: no such rule)
    block_indent: int | None = None
    #: whitespace before the cursor on its line when only whitespace is there (it starts the first line)
    cursor_indent: str = ""
    #: the cursor is inside a line of code: the completion's first line continues it
    mid_line: bool = False
    #: with ``mid_line``: the rest of the cursor's line after the cursor (stripped)
    line_rest: str = ""
    #: brackets the prefix left open, and whether it is inside a triple-quoted string
    depth: int = 0
    in_string: bool = False
    n_indent: int = 0
    time_limit_s: float | None = None

    @classmethod
    def for_gap(cls, prefix: str, suffix: str, *, n_indent: int = 0,
                time_limit_s: float | None = None) -> FimRules:
        cursor_line = prefix[prefix.rfind("\n") + 1:]
        mid_line = bool(cursor_line.strip())
        suffix_lines = suffix.split("\n")
        rest = suffix_lines[0] if suffix_lines else ""
        if mid_line:
            head_lines = suffix_lines[1:]
        else:
            head_lines = [cursor_line + rest, *suffix_lines[1:]] if suffix_lines else []
        head = tuple(ln.rstrip() for ln in head_lines if ln.strip())[:_HEAD_LINES]
        seen = {ln.strip() for ln in prefix.split("\n")}
        telling = tuple(h.strip() for h in head if not _weak(h) and h.strip() not in seen)
        scan, block = _prefix_block(prefix, cursor_line, mid_line)
        return cls(suffix_head=head[:2], suffix_lines=telling, block_indent=block, cursor_indent="" if mid_line else cursor_line,
                   mid_line=mid_line, line_rest=rest.strip() if mid_line else "", depth=max(scan.depth, 0),
                   in_string=scan.quote is not None, n_indent=max(int(n_indent or 0), 0),
                   time_limit_s=time_limit_s if time_limit_s and time_limit_s > 0 else None)


def _prefix_block(prefix: str, cursor_line: str, mid_line: bool) -> tuple[_Scan, int | None]:
    """The scan state at the cursor (from the enclosing top-level statement on) and the cursor's
    block indentation: the cursor line's own when it has any, else the body indentation of the
    enclosing top-level block (the gap may dedent out of inner blocks, never out of that one)."""
    lines = prefix.split("\n")[:-1]
    scan, marks = _Scan(), []
    for ln in lines:
        marks.append(scan.quote is None)
        scan.line(ln)
    top = next((i for i in range(len(lines) - 1, -1, -1)
                if marks[i] and lines[i].strip() and indent_of(lines[i]) == 0), None)
    region = lines[top:] if top is not None else lines
    rescan = _Scan()
    for ln in region:
        rescan.line(ln)
    if mid_line:
        rescan.line(cursor_line)
        return rescan, indent_of(cursor_line)
    if cursor_line:  # only whitespace before the cursor: the editor put it at the block's indentation
        return rescan, len(cursor_line)
    if top is None:
        return rescan, None
    body = [indent_of(ln) for ln, ok in zip(lines[top + 1:], marks[top + 1:], strict=True) if ok and ln.strip()]
    if body:
        return rescan, min(body) or None
    return rescan, 1 if lines[top].rstrip().endswith((":", "{", "(", "[")) else None


class FimCutter:
    """Feed streamed pieces, get back what may be shown; :meth:`close` at the end of generation."""

    def __init__(self, rules: FimRules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._now = clock
        self.text = ""
        self.sent = 0
        self.reason: str | None = None
        self.cut: int | None = None
        self._line_start = 0
        self._line_no = 0
        self._hold: int | None = None  # start of held blank lines / a weak suffix-like line
        self._candidate = False
        self._scan = _Scan(rules.depth, '"""' if rules.in_string else None)
        self._t0: float | None = None
        self._min_indent = 1 << 30  # the least indentation of the middle's lines so far

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    @property
    def result(self) -> str:
        """The middle so far (everything shown, or the final text once stopped or closed)."""
        return self.text[: self.cut] if self.cut is not None else self.text[: self.sent]

    def feed(self, piece: str) -> str:
        """Take the next streamed ``piece``; return the text now safe to show."""
        if self.stopped or not piece:
            return ""
        if self._t0 is None:
            self._t0 = self._now()
        self.text += piece
        while not self.stopped:
            nl = self.text.find("\n", self._line_start)
            if nl < 0:
                break
            self._line(self.text[self._line_start:nl], nl + 1, final=False)
        if not self.stopped:
            self._judge_start()
        return self._release()

    def close(self, ran_out: bool = False) -> str:
        """The generation ended (``ran_out``: at the token limit); judge the last line, return the rest."""
        if not self.stopped:
            if self._line_start < len(self.text):
                self._line(self.text[self._line_start:], len(self.text), final=True, ran_out=ran_out)
            if not self.stopped and self._candidate and self._hold is not None:
                self._stop(self._hold, "suffix")  # ended right after the suffix's first line: a repeat
            if not self.stopped:
                self._hold = None
                self.cut = len(self.text)
        return self._release()

    # --- the rules ---------------------------------------------------------------------------------
    def _stop(self, at: int, reason: str) -> None:
        self.cut, self.reason = max(at, self.sent), reason

    def _line(self, line: str, end: int, *, final: bool, ran_out: bool = False) -> None:
        start, first = self._line_start, self._line_no == 0
        if self.sent <= start or (first and self.rules.mid_line):
            self._judge(line, start, end, first, final, ran_out)
        if not self.stopped:
            self._scan.line(line)
            if line.strip():
                self._min_indent = min(self._min_indent, indent_of((self.rules.cursor_indent if first else "") + line))
            self._line_start, self._line_no = end, self._line_no + 1
            r = self.rules
            if final or r.time_limit_s is None or self._t0 is None:
                return
            if self._now() - self._t0 >= r.time_limit_s:
                self._stop(self._hold if self._hold is not None else end, "time")

    def _judge(self, line: str, start: int, end: int, first: bool, final: bool, ran_out: bool) -> None:
        r = self.rules
        if first and r.mid_line:
            body = line.rstrip()
            if r.line_rest and body.endswith(r.line_rest):
                self._stop(start + len(body) - len(r.line_rest), "suffix")
            return
        full = (r.cursor_indent if first else "") + line
        body = full.rstrip()
        at = self._hold if self._hold is not None else start
        if not body.strip():
            self._hold = at
            return
        if r.n_indent and not first and indent_of(line) < r.n_indent:
            return self._stop(at, "n_indent")
        head = r.suffix_head
        if self._candidate:  # a short suffix-like line before: confirmed by the suffix's next line, or a dedent
            self._candidate = False
            if (len(head) > 1 and body == head[1]) or self._dedented(full):
                return self._stop(at, "suffix")
            self._hold, at = None, start
        if head and (body == head[0] or (final and ran_out and head[0].startswith(body))):
            if not _weak(head[0]) or len(head) == 1:
                return self._stop(at, "suffix")
            self._candidate, self._hold = True, at
            return
        if len(head) > 1 and _near(body, head[0]):
            # a reworded suffix line: held, and cut when the next line is the suffix's second (or dedents)
            self._candidate, self._hold = True, at
            return
        if body.strip() in r.suffix_lines:
            return self._stop(at, "suffix")
        if head and self._min_indent >= indent_of(head[0]) and _same_exit(body, head[0]):
            return self._stop(at, "suffix")  # (only while the middle stayed inside that line's block)
        if self._dedented(full):
            if _is_closer(body) and not (head and head[0].strip().startswith(body.strip())):
                return self._stop(end, "indent")
            return self._stop(at, "indent")
        self._hold = None

    def _judge_start(self) -> None:
        """Cut at the unfinished current line as soon as its indentation rules it out (so the generation
        stops there, not a line later); a line that may be a closing bracket waits for its end."""
        start, first, r = self._line_start, self._line_no == 0, self.rules
        part = self.text[start:]
        if self.sent > start or (first and r.mid_line):
            return
        full = (r.cursor_indent if first else "") + part
        body = full.strip()
        if not body:
            return
        at = self._hold if self._hold is not None else start
        if r.n_indent and not first and indent_of(part) < r.n_indent:
            self._stop(at, "n_indent")
        elif self._dedented(full) and body[0] not in _CLOSE and not body[0].isalpha():
            self._stop(at, "suffix" if self._candidate else "indent")
        elif self._dedented(full) and body[0].isalpha() and len(body) > 4 and not _is_closer(body.split()[0]):
            self._stop(at, "suffix" if self._candidate else "indent")

    def _dedented(self, full: str) -> bool:
        r = self.rules
        return (r.block_indent is not None and self._scan.depth <= 0 and self._scan.quote is None
                and indent_of(full) < r.block_indent)

    # --- streaming ---------------------------------------------------------------------------------
    def _release(self) -> str:
        if self.cut is not None:
            upto = self.cut
        elif self._hold is not None:
            upto = self._hold
        else:
            upto = self._line_start + self._partial_safe()
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent:upto], upto
        return out

    def _partial_safe(self) -> int:
        """How much of the unfinished current line may be shown now."""
        r = self.rules
        part = self.text[self._line_start:]
        first = self._line_no == 0
        if first and r.mid_line:
            return 0 if r.line_rest else len(part)
        if self.sent > self._line_start:
            return len(part)
        full = ((r.cursor_indent if first else "") + part).rstrip()
        if not full.strip():
            return 0
        if any(h.startswith(full) for h in r.suffix_head[:1]) or any(h.startswith(full.strip()) for h in r.suffix_lines):
            return 0
        if r.n_indent and not first and indent_of(part) < r.n_indent:
            return 0
        if self._dedented(full) or _may_exit(full, r.suffix_head[0] if r.suffix_head else ""):
            return 0
        if len(r.suffix_head) > 1 and _may_near(full, r.suffix_head[0]):
            return 0
        return len(part)


def stop_type(reason: str | None) -> str:
    """llama.cpp's ``stop_type`` for a stop reason: eos, limit, word or none."""
    if reason in ("suffix", "indent", "stop"):
        return "word"
    if reason in ("n_indent", "time", "length", "context", "limit"):
        return "limit"
    if reason in (None, "eos"):
        return "eos"
    return "none"


def cut_pieces(pieces: Generator[str, None, None], cutter: FimCutter, cancel: threading.Event,
               ended: Callable[[], str | None]) -> Iterator[str]:
    """``pieces`` through ``cutter``: at a cut the generation is cancelled (and drained, so the engine
    ends cleanly); at its own end the held tail is judged. ``ended()`` is the engine's finish reason."""
    try:
        for piece in pieces:
            shown = cutter.feed(piece)
            if shown:
                yield shown
            if cutter.stopped:
                cancel.set()
                for _ in pieces:
                    pass
                return
        if ended() != "cancelled":
            tail = cutter.close(ran_out=ended() in ("length", "context"))
            if tail:
                yield tail
    finally:
        pieces.close()
