"""The real model through the Python API: its chat template and stop token, a greedy coding answer
that parses as Python, streaming equal to non-streaming, and FIM refused (it has no FIM tokens)."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest

from fmgguf.errors import FIMNotSupportedError

pytestmark = pytest.mark.real

CODE_PROMPT = "Write a Python function that returns the sum of a list."


def _code_block(text: str) -> str:
    m = re.search(r"```(?:python|py)?\n(.*?)```", text, re.DOTALL)
    assert m, f"no fenced code block in the answer: {text!r}"
    return m.group(1)


def test_chat_answer_ends_at_im_end_and_never_shows_it(real_manager: Any) -> None:
    res = real_manager.chat([{"role": "user", "content": "Say hello in one short sentence."}], max_tokens=64,
                            temperature=0.0, seed=0)
    assert res.finish_reason == "stop", res  # the model's <|im_end|> ended it, not the token limit
    assert res.text.strip()
    for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"):
        assert marker not in res.text
    assert res.prompt_tokens > 20  # the template's default system turn came with it


def test_greedy_coding_answer_parses_as_python(real_manager: Any) -> None:
    res = real_manager.chat([{"role": "user", "content": CODE_PROMPT}], max_tokens=200, temperature=0.0, seed=0)
    code = _code_block(res.text)
    tree = ast.parse(code)
    assert any(isinstance(node, ast.FunctionDef) for node in ast.walk(tree)), code
    print(f"\nreal model, {res.completion_tokens} tokens at {res.tokens_per_s:.0f} tokens/s:\n{code}")


@pytest.mark.parametrize("how", ["chat", "raw"])
def test_streaming_gives_the_same_text(real_manager: Any, how: str) -> None:
    def call(**kw: Any) -> Any:
        if how == "chat":
            return real_manager.chat([{"role": "user", "content": CODE_PROMPT}], max_tokens=80, temperature=0.0,
                                     seed=0, **kw)
        return real_manager.generate_text("def fibonacci(n):", max_tokens=48, temperature=0.0, seed=0, **kw)

    whole = call()
    stream = call(stream=True)
    pieces = list(stream)
    assert len(pieces) > 5
    assert "".join(pieces) == whole.text == stream.result.text
    assert stream.result.finish_reason == whole.finish_reason


def test_fim_is_refused_with_a_clear_error(real_manager: Any) -> None:
    with pytest.raises(FIMNotSupportedError) as err:
        real_manager.fill_in_middle("def add(a, b):\n    ", "\n    return c\n", max_tokens=8)
    assert "fill-in-the-middle" in err.value.message and err.value.fix
