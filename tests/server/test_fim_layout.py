"""The one FIM prompt builder (runtime/prompt/prompts.py: fim_format + render_fim) every dialect uses (the
post-processor, runtime/prompt/fim_stop.py, is tested in tests/runtime_engine/test_fim_stop.py)."""

from __future__ import annotations

import pytest

from fmgguf.catalog.schema import FIM
from fmgguf.errors import FIMNotSupportedError
from fmgguf.runtime.prompt.prompts import fim_format, render_fim

QWEN = FIM(prefix="<|fim_prefix|>", suffix="<|fim_suffix|>", middle="<|fim_middle|>", order="PSM", supported=True)
CODESTRAL = FIM(prefix="[PREFIX]", suffix="[SUFFIX]", order="SPM", supported=True)
DEEPSEEK = FIM(prefix="<｜fim▁begin｜>", suffix="<｜fim▁hole｜>", middle="<｜fim▁end｜>", supported=True)


def test_repo_level_layout_with_file_separators() -> None:
    fmt = fim_format(QWEN, "qwen")
    text = render_fim(fmt, "def f():\n    ", "\n", [("a.py", "A = 1\n"), ("b.py", "B = 2")], filename="main.py")
    assert text == ("<|repo_name|>project\n<|file_sep|>a.py\nA = 1\n<|file_sep|>b.py\nB = 2\n<|file_sep|>main.py\n"
                    "<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>")
    assert "<|file_sep|>" in fmt.stop and "<|endoftext|>" in fmt.stop
    # nothing to say about the repo or the file: the plain layout, no made-up header (it measured worse)
    assert render_fim(fmt, "a", "b") == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"


def test_suffix_first_and_snippets_without_separators() -> None:
    text = render_fim(fim_format(CODESTRAL), "pre", "suf", [("u.py", "x = 1")])
    assert text == "--- u.py ---\nx = 1\n[SUFFIX]suf[PREFIX]pre"
    assert render_fim(fim_format(DEEPSEEK), "p", "s") == "<｜fim▁begin｜>p<｜fim▁hole｜>s<｜fim▁end｜>"


def test_no_fim_card_is_refused() -> None:
    with pytest.raises(FIMNotSupportedError, match="not trained for fill-in-the-middle"):
        fim_format(FIM(prefix="<PRE>", suffix="<SUF>", supported=False), "opencoder")
    with pytest.raises(FIMNotSupportedError):
        fim_format(None, "codellama-34b")


def test_cut_to_budget_keeps_a_stable_start() -> None:
    fmt = fim_format(QWEN)
    prefix = "".join(f"line {i}\n" for i in range(2000))
    suffix = "".join(f"after {i}\n" for i in range(2000))
    extra = [("big.py", "z" * 5000)]
    text = render_fim(fmt, prefix, suffix, extra, max_chars=4000)
    body = text.split("<|fim_prefix|>", 1)[1]
    kept_prefix, kept_suffix = body.split("<|fim_suffix|>")
    assert len(kept_prefix) + len(kept_suffix.removesuffix("<|fim_middle|>")) <= 4000
    assert len(kept_suffix) <= 1000 + len("<|fim_middle|>") and kept_suffix.startswith("after 0\n")
    assert prefix.endswith(kept_prefix) and kept_prefix.startswith("line ")  # cut at a line start
    assert "z" * 100 not in text  # the extra file did not fit
    typed = render_fim(fmt, prefix + "x", suffix, extra, max_chars=4000)
    assert typed.split("<|fim_suffix|>")[0] == text.split("<|fim_suffix|>")[0] + "x"  # same start: KV reuse holds
