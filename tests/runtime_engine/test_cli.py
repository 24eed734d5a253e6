"""`fmgguf run`, `chat` and `fim` on a tiny model file; a catalog model that is not downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert data["stop_reason"] in ("length", "eos", "suffix", "indent")  # the FIM post-processor's answer


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
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no "loading…" line before the error
    assert "Traceback" not in proc.stderr


def _main(args: list[str], capsys, monkeypatch, stdin: str | None = None) -> tuple[int, str, str]:
    """The real entry point (one `error:` line and the table's exit code), in this process."""
    import io

    from fmgguf.cli.main import main

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as done:
        main(args)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err



@pytest.mark.parametrize("opts", [["-n", "-5"], ["-n", "0"], ["-t", "-1"], ["-t", "2.5"], ["--top-p", "0"],
                                  ["--top-p", "1.5"]])
def test_out_of_range_sampling_options_are_one_line_rc2(opts: list[str], qwen_path: Path, capsys,
                                                         monkeypatch) -> None:
    rc, out, err = _main(["run", str(qwen_path), "x", "--ctx", "128", *opts], capsys, monkeypatch)
    assert rc == 2, err
    assert out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert opts[0].lstrip("-") in err or {"-n": "max-tokens", "-t": "temperature"}[opts[0]] in err


@pytest.mark.parametrize("stdin", ["", "  \n"])
def test_an_empty_prompt_is_refused(stdin: str, qwen_path: Path, capsys, monkeypatch) -> None:
    rc, out, err = _main(["run", str(qwen_path), "-", "--ctx", "128"], capsys, monkeypatch, stdin=stdin)
    assert rc == 2 and out == "" and "prompt is empty" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model_id", ["deepseek-coder-v2-lite-instruct", "codellama-34b-instruct"])
def test_fim_is_refused_from_the_card_before_the_download_check(model_id: str, capsys, monkeypatch) -> None:
    rc, out, err = _main(["fim", model_id, "--prefix", "def f(", "--suffix", ")"], capsys, monkeypatch)
    assert rc == 15, err
    assert "fill-in-the-middle" in err and "pull" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_context_past_the_trained_one_warns(qwen_path: Path) -> None:
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    trained = read_gguf(qwen_path).n_ctx_train
    r = CliRunner().invoke(cli, ["run", str(qwen_path), "x", "-n", "1", "--ctx", str(trained * 2), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(data["warnings"]) == 1 and f"trained context {trained}" in data["warnings"][0]
    assert f"warning: context {trained * 2} exceeds the model's trained context {trained}" in r.stderr
    r = CliRunner().invoke(cli, ["run", str(qwen_path), "x", "-n", "1", "--ctx", "128", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [] and "warning:" not in r.stderr


@pytest.mark.parametrize("case", ["unknown", "too-big"])
def test_load_failures_are_the_only_line(case: str, qwen_path: Path, capsys, monkeypatch) -> None:
    args = {"unknown": ["run", "nosuch-model-xyz", "hi"],
            "too-big": ["run", str(qwen_path), "hi", "--ctx", "999999999"]}[case]
    rc, out, err = _main(args, capsys, monkeypatch)
    assert rc in (4, 13), err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    if case == "too-big":  # a file has no other quant to suggest
        assert rc == 13 and "use a smaller quant" not in err and "--ctx" in err


def test_no_smaller_quant_advice_for_a_q4_k_m_file_that_does_not_fit() -> None:
    from fmgguf.errors import InsufficientMemoryError
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("llama", "unit", "Q4_K_M")
    manager = ModelManager(settings=load_settings(ram_margin=1 << 50))
    with pytest.raises(InsufficientMemoryError) as info:
        manager.load_file(path, n_ctx=512)
    assert "smaller quant" not in str(info.value) and "--ctx" in str(info.value)
