"""`fmgguf run` on the real instruct model: chat by default (code comes back), --raw completes the
text; `fmgguf fim` refuses in one line; a catalog id pulled through a local mirror chats too; and
no llama.cpp line reaches the terminal unless -v asks for it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

CODE_PROMPT = "Write a Python function that returns the sum of a list."


def fmgguf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmgguf", *args], capture_output=True, text=True, timeout=timeout)


def test_run_answers_an_instruct_model_through_its_chat_template(real_path: Path) -> None:
    proc = fmgguf("run", str(real_path), CODE_PROMPT, "-t", "0", "-n", "160", "--ctx", "1024", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "chat"
    assert "def " in out["text"] and "```" in out["text"], out["text"]
    assert out["finish_reason"] == "stop" and "<|im_end|>" not in out["text"]


def test_run_raw_completes_the_text_as_it_is(real_path: Path) -> None:
    proc = fmgguf("run", str(real_path), "def fibonacci(n):", "--raw", "-t", "0", "-n", "24", "--ctx", "512",
                  "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "raw"
    assert out["prompt_tokens"] < 10  # the bare prompt: no template around it


def test_fim_is_refused_in_one_line(real_path: Path) -> None:
    proc = fmgguf("fim", str(real_path), "--prefix", "def add(a, b):\n    ", "--suffix", "\n    return c\n",
                  "--ctx", "512")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("loaded ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fill-in-the-middle" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_llama_cpp_line_on_the_terminal_unless_verbose(real_path: Path, isolated_home: Path) -> None:
    quiet = fmgguf("run", str(real_path), "Hi", "-t", "0", "-n", "4", "--ctx", "512")
    assert quiet.returncode == 0, quiet.stderr
    for line in quiet.stderr.splitlines():  # fmgguf's own two lines, nothing from llama.cpp
        assert line.startswith("loaded ") or re.match(r"\d+ prompt \+ \d+ tokens", line), quiet.stderr
    log = isolated_home / "logs" / "llama.cpp.log"
    assert "llama_context" in log.read_text(encoding="utf-8")  # kept in the log file instead
    loud = fmgguf("-v", "run", str(real_path), "Hi", "-t", "0", "-n", "4", "--ctx", "512")
    assert loud.returncode == 0 and "fmgguf.llama_cpp" in loud.stderr


def test_run_by_catalog_id_after_a_pull_from_a_local_mirror(real_path: Path, real_card: Any,
                                                              monkeypatch: Any) -> None:
    from fmgguf.testing.hub_server import HubServer

    variant = real_card.variant("Q4_1")
    with HubServer({variant.repo: {variant.first_file.name: real_path}}, revision=variant.revision) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        pulled = fmgguf("pull", "smollm2-135m-instruct")
        assert pulled.returncode == 0, pulled.stderr
    proc = fmgguf("run", "smollm2-135m-instruct", CODE_PROMPT, "-t", "0", "-n", "160", "--ctx", "1024", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "chat" and "def " in out["text"], out


def test_a_load_failure_shows_llama_cpps_reason_in_its_one_line(real_path: Path, tmp_path: Path) -> None:
    data = bytearray(real_path.read_bytes())
    at = data.find(b"smollm", data.find(b"tokenizer.ggml.pre"))
    data[at:at + 6] = b"smollx"  # a pre-tokenizer llama.cpp does not know: its loader refuses the vocab
    bad = tmp_path / "bad-pre.gguf"
    bad.write_bytes(bytes(data))
    proc = fmgguf("run", str(bad), "Hi", "-n", "2", "--ctx", "256")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "unknown pre-tokenizer type: 'smollx'" in lines[0]  # llama.cpp's own words, in the one line
