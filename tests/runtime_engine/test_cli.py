"""`fmgguf run`, `chat` and `fim` on a tiny model file; a catalog model that is not downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fmgguf.cli.main import cli


def test_run_json_gives_text_and_timings(qwen_path: Path) -> None:
    r = CliRunner().invoke(cli, ["run", str(qwen_path), "def add(a, b):", "-n", "6", "--ctx", "256", "--seed", "1",
                                 "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["completion_tokens"] >= 1 and data["finish_reason"] in ("length", "stop")
    assert data["ttft_s"] > 0 and data["tokens_per_s"] > 0 and isinstance(data["text"], str)
    assert data["load"]["n_ctx"] == 256 and data["load"]["plan"]["label"] == "CPU only"


def test_run_streams_a_prompt_from_stdin(llama_path: Path) -> None:
    r = CliRunner().invoke(cli, ["run", str(llama_path), "-", "-n", "5", "--ctx", "128", "-t", "0"],
                           input="def main():\n")
    assert r.exit_code == 0, r.output
    assert "tokens/s" in r.stderr and "loaded" in r.stderr
    assert r.stdout.strip()


def test_chat_is_interactive_with_the_template(llama_path: Path) -> None:
    r = CliRunner().invoke(cli, ["chat", str(llama_path), "-n", "4", "--ctx", "256", "--system", "be brief"],
                           input="hello\n/reset\nagain\n/exit\n")
    assert r.exit_code == 0, r.output
    assert "conversation forgotten" in r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ln.strip()]) >= 1


def test_fim_reads_prefix_and_suffix_files(starcoder_path: Path, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def double(x):\n    return ")
    (tmp_path / "b.py").write_text("\n\nprint(double(2))\n")
    r = CliRunner().invoke(cli, ["fim", str(starcoder_path), "--prefix-file", str(tmp_path / "a.py"),
                                 "--suffix-file", str(tmp_path / "b.py"), "-n", "4", "--ctx", "256", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["prompt_tokens"] > 10 and data["finish_reason"] in ("length", "stop")


def test_a_model_not_downloaded_says_pull(tmp_path: Path) -> None:
    import yaml

    from fmgguf.testing import tiny_card

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": [tiny_card("tiny-notpulled", arch="llama", quants=("F16",))]}))
    env = {**os.environ, "FMGGUF_CATALOG": str(catalog)}
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "run", "tiny-notpulled", "hi"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "fmgguf pull tiny-notpulled" in proc.stderr
    assert "Traceback" not in proc.stderr
