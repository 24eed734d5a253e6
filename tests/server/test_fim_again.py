"""The second ask of a chat fill whose middle skipped the gap (runtime/prompt/fim_again.py): the mark on a
line of its own at the likely indentation (runtime/prompt/fim_chat.py), asked only when nothing of the
first middle is left."""

from __future__ import annotations

from collections.abc import Iterator

from fmgguf.runtime.engine.engine import GenerationStats
from fmgguf.runtime.engine.engine_api import CancelFlag
from fmgguf.runtime.prompt.fim_again import FimRun, skipped
from fmgguf.runtime.prompt.fim_chat import MARK, before_code, chat_fill_text, gap_indent
from fmgguf.runtime.prompt.fim_prompt import fim_again_prompt
from fmgguf.runtime.prompt.fim_stop import FimCutter, FimRules
from tests.server.test_fim_chat import QWEN_CHAT, FakeEngine

PRE = "def f(xs):\n    xs = sorted(xs)\n"
SUF = "    n = len(xs)\n    return xs[n // 2]\n"


def _user(text: str) -> str:
    return text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def test_the_second_ask_marks_the_gap_on_a_line_of_its_own() -> None:
    first = chat_fill_text(PRE, SUF, template=None, family="chatml")
    again = chat_fill_text(PRE, SUF, template=None, family="chatml", own_line=True)
    assert f"{PRE}{MARK}{SUF}" in _user(first)
    assert f"{PRE}    {MARK}\n{SUF}" in _user(again)
    assert again.endswith(f"```\n{PRE}") and first.endswith(f"```\n{PRE}")  # the reply opens the same way
    # the cursor in the indentation of a line of code: the mark after it, the line's code on the next line
    again = chat_fill_text(PRE + "    ", "n = len(xs)\n", template=None, family="chatml", own_line=True)
    assert f"{PRE}    {MARK}\n    n = len(xs)\n" in _user(again)


def test_the_mark_gets_the_indentation_the_missing_line_likely_has() -> None:
    assert gap_indent(PRE, SUF) == "    "  # the next line's
    assert gap_indent("def f(x):\n    if x:\n", "        y = 1\n") == "        "  # the block the previous line opens
    # the next line is deeper but nothing before opens a block: the missing line opens it
    assert gap_indent("def f(xs):\n    t = 0\n", "        t += x\n    return t\n") == "    "
    assert gap_indent('def f(xs):\n    """Doc."""\n', "        t += x\n") == "    "
    assert gap_indent("x = f(a,\n", "      b)\n") == "      "  # an open bracket: a continuation line
    assert gap_indent("", "y = 1\n") == ""


def test_only_a_chat_fill_before_a_line_of_code_is_asked_again() -> None:
    assert before_code(PRE, SUF) and before_code(PRE + "  ", "  n = 1\n")
    assert not before_code(PRE + "    return ", "xs\n")  # inside a line of code
    assert not before_code(PRE + "    ", "\n" + SUF)  # on a blank line: the first ask marked it so already
    got = fim_again_prompt(FakeEngine(), QWEN_CHAT, "m", PRE, SUF, family="chatml")
    assert got is not None
    tokens, stops = got
    assert f"{PRE}    {MARK}\n{SUF}" in "".join(chr(t) for t in tokens) and stops[0] == "```"  # type: ignore[union-attr]
    assert fim_again_prompt(FakeEngine(), QWEN_CHAT.model_copy(update={"prompt": "tokens"}), "m", PRE, SUF) is None
    assert fim_again_prompt(FakeEngine(), None, "m", PRE, SUF) is None
    assert fim_again_prompt(FakeEngine(), QWEN_CHAT, "m", PRE + "    return ", "xs\n", family="chatml") is None


def _cutter() -> FimCutter:
    return FimCutter(FimRules.for_gap(PRE, SUF))


def _stream(text: str, stats: GenerationStats, finish: str = "stop", tokens: int = 5) -> Iterator[str]:
    stats.prompt_tokens, stats.completion_tokens = 100, tokens
    yield from text.splitlines(keepends=True)
    stats.finish_reason = finish


def _run(first: str, second: str | None) -> tuple[FimRun, str, list[CancelFlag]]:
    stats, cancel, flags = GenerationStats(), CancelFlag(), []
    run = FimRun(_cutter(), stats, cancel)

    def again(flag: CancelFlag, st: GenerationStats) -> Iterator[str] | None:
        flags.append(flag)
        return None if second is None else _stream(second, st, tokens=7)
    flag = run.flag()
    text = "".join(run.pieces(_stream(first, stats), flag, again))
    return run, text, [flag, *flags]


def test_a_middle_that_skipped_the_gap_is_asked_for_again() -> None:
    # the first middle repeats the suffix at once: cut to nothing, so the second ask answers
    run, text, flags = _run("    n = len(xs)\n    return xs[n // 2]\n", "    xs = [x for x in xs if x]\n    n = len(xs)\n")
    assert text == "    xs = [x for x in xs if x]\n" and run.cutter.result == text and run.cutter.reason == "suffix"
    assert len(flags) == 2 and flags[0].is_set() and not run.cancel.is_set()  # the cut stopped the first only
    assert (run.stats.prompt_tokens, run.stats.completion_tokens) == (200, 12)  # both generations counted
    # a middle that filled the gap is not asked for again
    run, text, flags = _run("    xs = xs[1:]\n    n = len(xs)\n", "    never\n")
    assert text == "    xs = xs[1:]\n" and len(flags) == 1 and run.stats.completion_tokens == 5
    # a copy of the mark in the second middle is no code: cut like a copy of the suffix
    run, text, _ = _run("    n = len(xs)\n", f"    {MARK}\n    n = len(xs)\n")
    assert text == "" and run.cutter.reason == "suffix"
    # no second ask (not a chat fill before a line of code): the empty middle stands
    run, text, flags = _run("    n = len(xs)\n", None)
    assert text == "" and len(flags) == 2 and run.cutter.reason == "suffix"


def test_what_counts_as_a_skipped_gap() -> None:
    c = _cutter()
    c.feed("    n = len(xs)\n")
    assert skipped(c, None)
    c = _cutter()
    c.feed("x = 1\n")  # a line at column 0 leaves the function: cut as a dedent, nothing left
    assert c.reason == "indent" and skipped(c, None)
    c = _cutter()
    c.close()
    assert skipped(c, "stop") and not skipped(c, "length")  # ended at once; not when it ran out
    c = _cutter()
    c.feed("    xs.reverse()\n    n = len(xs)\n")
    assert c.result and not skipped(c, None)


def test_the_users_cancel_reaches_the_second_generation() -> None:
    stats, cancel = GenerationStats(), CancelFlag()
    run = FimRun(_cutter(), stats, cancel)
    seen: list[CancelFlag] = []

    def again(flag: CancelFlag, st: GenerationStats) -> Iterator[str]:
        seen.append(flag)
        cancel.set()  # the user cancels while the second ask runs
        yield "    xs = xs[1:]\n"
    list(run.pieces(_stream("    n = len(xs)\n", stats), run.flag(), again))
    assert seen and seen[0].is_set()
