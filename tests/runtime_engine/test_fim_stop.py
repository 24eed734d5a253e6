"""fmgguf.runtime.prompt.fim_stop on strings: where a fill-in-the-middle completion ends, and what streaming shows.

Every case runs twice: fed whole, and fed one character at a time, checking after every piece that
nothing shown is ever taken back (the shown text is always a prefix of the final middle)."""

from __future__ import annotations

import itertools

import pytest

from fmgguf.runtime.prompt.fim_stop import FimCutter, FimRules, cut_pieces, stop_type

PRE = 'def total(xs):\n    """Sum."""\n    t = 0\n    for x in xs:\n'
SUF = "    return t\n"


def run(prefix: str, suffix: str, out: str, step: int | None = None, ran_out: bool = False,
        **kw: object) -> tuple[str, str | None]:
    cutter = FimCutter(FimRules.for_gap(prefix, suffix, **kw))  # type: ignore[arg-type]
    shown = ""
    for i in range(0, len(out), step or len(out) or 1):
        shown += cutter.feed(out[i:i + (step or len(out))])
        assert cutter.result.startswith(shown) or shown == cutter.result
    shown += cutter.close(ran_out=ran_out)
    assert shown == cutter.result
    return shown, cutter.reason


@pytest.fixture(params=[None, 1, 3], ids=["whole", "by-char", "by-3"])
def step(request: pytest.FixtureRequest) -> int | None:
    return request.param


def test_repeat_of_the_suffix_ends_the_middle(step: int | None) -> None:
    out = "        t += x\n    return t\n\n\ndef check():\n    assert total([1]) == 1\n"
    assert run(PRE, SUF, out, step) == ("        t += x\n", "suffix")


def test_a_jump_into_the_suffix_ends_the_middle(step: int | None) -> None:
    prefix = "def sp(xs):\n    s, p = 0, 1\n    for n in xs:\n"
    suffix = "        p *= n\n    return s, p\n"
    assert run(prefix, suffix, "        s += n\n\n    return s, p\n\n# check\n", step) == ("        s += n\n", "suffix")
    # the third non-blank suffix line too, at another indentation; a short one (``pass``) is not telling
    suffix = "        p *= n\n        q = 0\n        total = s + p\n"
    assert run(prefix, suffix, "        s += n\n    total = s + p\n", step) == ("        s += n\n", "suffix")
    assert run(prefix, "        p *= n\n        pass\n", "        s += n\n        pass\n", step) == (
        "        s += n\n        pass\n", None)


def test_a_suffix_line_the_prefix_already_has_is_not_a_jump(step: int | None) -> None:
    # ``return False`` is the suffix's second line, but the code before the gap has it too: the gap's own
    # line may well be another one, so only the suffix's next line cuts there
    prefix = "def ok(m, d):\n    if m > 12:\n        return False\n    if d > 31:\n"
    suffix = "    if d < 1:\n        return False\n    return True\n"
    out = "        return False\n    if d < 1:\n"
    assert run(prefix, suffix, out, step) == ("        return False\n", "suffix")
    # a line of the suffix the prefix does not have still means the model skipped into the suffix
    assert run(prefix.replace("False", "None"), suffix, out, step) == ("", "suffix")


def test_a_second_exit_before_the_suffixs_exit_ends_the_middle(step: int | None) -> None:
    prefix = "def f(xs):\n    small = min(xs)\n"
    suffix = "    return (max(small), min(large))\n"
    out = "    large = max(xs)\n    return (max(large), min(small))\n"
    assert run(prefix, suffix, out, step) == ("    large = max(xs)\n", "suffix")
    # deeper inside the block it is an early exit, not the suffix again
    out = "    if not xs:\n        return None\n    large = 1\n"
    assert run(prefix, suffix, out, step) == (out, None)
    # a middle that left the suffix line's block: its exit belongs to another branch
    prefix, suffix = "def fib(n):\n    if n == 0:\n        return 0\n", "        return 1\n    return fib(n - 1)\n"
    out = "    elif n == 1:\n        return 0\n    elif n == 2:\n"
    assert run(prefix, suffix, out, step) == (out, None)


def test_dedent_out_of_the_block_ends_the_middle(step: int | None) -> None:
    out = "        t += x\n    return t\n\n\nprint(total([1, 2]))\n"
    assert run(PRE, "", out, step) == ("        t += x\n    return t\n", "indent")


def test_a_middle_that_ends_by_itself_is_kept(step: int | None) -> None:
    assert run(PRE, SUF, "        t += x\n", step) == ("        t += x\n", None)
    assert run(PRE, SUF, "        t += x", step) == ("        t += x", None)


def test_dedent_inside_the_function_is_allowed(step: int | None) -> None:
    prefix = "def f(xs):\n    for a in xs:\n        if a:\n            n = 1\n"
    suffix = "        m = 2\n    return m\n"
    out = "    for b in xs:\n        pass\n        m = 2\n"
    assert run(prefix, suffix, out, step) == ("    for b in xs:\n        pass\n", "suffix")


def test_short_suffix_line_needs_the_next_line_too(step: int | None) -> None:
    suffix = "    else:\n        t = -1\n    return t\n"
    prefix = "def f(x):\n    if x:\n"
    assert run(prefix, suffix, "        t = 1\n    else:\n        t = 2\n", step) == (
        "        t = 1\n    else:\n        t = 2\n", None)
    assert run(prefix, suffix, "        t = 1\n    else:\n        t = -1\n    return t\n", step) == (
        "        t = 1\n", "suffix")
    # the model stops right after repeating the short line: still a repeat
    assert run(prefix, suffix, "        t = 1\n    else:\n", step) == ("        t = 1\n", "suffix")


def test_a_reworded_suffix_line_confirmed_by_the_next_one_ends_the_middle(step: int | None) -> None:
    prefix = "def simplify(a, b):\n    num = int(a)\n"
    suffix = "    if (num / denom == int(num / denom)):\n        return True\n    return False\n"
    out = "    denominator = int(b)\n    if (num / denominator == int(num / denominator)):\n        return True\n"
    assert run(prefix, suffix, out, step) == ("    denominator = int(b)\n", "suffix")
    # a similar line that the suffix's next line does not follow is the model's own (a sibling branch)
    prefix, suffix = "def f(x):\n    y = 0\n", "    if x == 2:\n        y = 20\n    return y\n"
    out = "    if x == 1:\n        y = 10\n"
    assert run(prefix, suffix, out, step) == (out, None)


def test_inside_a_line_the_rest_of_the_line_is_not_repeated(step: int | None) -> None:
    assert run("    return foo(", ")\n", "a, b)\n", step) == ("a, b", "suffix")
    assert run("    return foo(", ")\n", "a, b", step) == ("a, b", None)
    assert run("    x = ", "\n    y = 2\n", "compute(1)\n    y = 2\n", step) == ("compute(1)\n", "suffix")


def test_brackets_and_docstrings_are_not_dedents(step: int | None) -> None:
    prefix = "def f():\n    x = 1\n"
    out = "    y = foo(\n1,\n)\n    s = '''\nraw\n'''\n    return y\nprint(f())\n"
    assert run(prefix, "", out, step) == ("    y = foo(\n1,\n)\n    s = '''\nraw\n'''\n    return y\n", "indent")


def test_closing_bracket_of_the_block_is_kept_unless_the_suffix_has_it(step: int | None) -> None:
    prefix = "int f(int x) {\n    int y = x;\n"
    assert run(prefix, "", "    return y;\n}\n\nint main() {}\n", step) == ("    return y;\n}\n", "indent")
    assert run(prefix, "}\n", "    return y;\n}\n\nint main() {}\n", step) == ("    return y;\n", "suffix")
    suffix = "}\n\nint g() {}\n"
    assert run(prefix, suffix, "    return y;\n}\n\nint main() {}\n", step) == ("    return y;\n", "suffix")


def test_n_indent_as_llama_cpp(step: int | None) -> None:
    out = "x)\n    y = 1\n\n    z\nw\nmore"
    assert run("f(", "", out, step, n_indent=4) == ("x)\n    y = 1\n\n    z\n", "n_indent")
    assert run("f(", "", "a\nb", step) == ("a\nb", None)


def test_time_limit_stops_at_a_line_end() -> None:
    ticks = itertools.count()
    cutter = FimCutter(FimRules.for_gap("", "", time_limit_s=2.5), clock=lambda: float(next(ticks)))
    shown = "".join(cutter.feed(p) for p in ["a = 1", "\nb", " = 2\nc = 3\n", "d = 4\n"])
    assert shown == "a = 1\nb = 2\nc = 3\n" and cutter.reason == "time"  # clock: 1 s per line


def test_token_limit_inside_a_repeat_of_the_suffix_is_cut() -> None:
    assert run(PRE, SUF, "        t += x\n    ret", ran_out=True) == ("        t += x\n", "suffix")
    assert run(PRE, SUF, "        t += x\n    ret") == ("        t += x\n    ret", None)


def test_streaming_holds_back_only_the_undecided_line() -> None:
    cutter = FimCutter(FimRules.for_gap(PRE, SUF))
    assert cutter.feed("        t +") == "        t +"  # not the suffix's line, indented enough: shown
    assert cutter.feed("= x\n    ret") == "= x\n"       # could become the suffix's line: held
    assert cutter.feed("urn t\n") == "" and cutter.reason == "suffix"


def test_cut_pieces_cancels_and_drains_the_generation() -> None:
    import threading

    cancel = threading.Event()
    produced: list[str] = []

    def engine():  # noqa: ANN202 - a generator standing in for the engine's token stream
        for piece in ["        t += x\n", "    return t\n", "junk\n", "more\n"]:
            if cancel.is_set():
                return
            produced.append(piece)
            yield piece

    cutter = FimCutter(FimRules.for_gap(PRE, SUF))
    out = list(cut_pieces(engine(), cutter, cancel, lambda: "cancelled"))
    assert out == ["        t += x\n"] and cancel.is_set() and produced == ["        t += x\n", "    return t\n"]


def test_stop_types_follow_llama_cpp() -> None:
    assert [stop_type(r) for r in ("suffix", "indent", "n_indent", "time", "eos", "length", None)] == [
        "word", "word", "limit", "limit", "eos", "limit", "eos"]
