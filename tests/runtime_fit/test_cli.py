"""`fmgguf fit`, `inspect` and `doctor` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fmgguf.cli.main import cli


def run(*args: str, env: dict | None = None) -> dict | str:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_fit_file_labels(llama_f16: Path) -> None:
    out = run("fit", str(llama_f16), "--vram", "0", "--ctx", "2048", "--json")
    (plan,) = out["plans"].values()
    assert plan["label"] == "CPU only" and plan["n_gpu_layers"] == 0
    assert plan["estimate"]["compute_source"] == "dry-run"
    out = run("fit", str(llama_f16), "--vram", "80GB", "--ctx", "2k", "--json")
    (plan,) = out["plans"].values()
    assert plan["label"] == "Full GPU" and plan["n_ctx"] == 2048
    text = run("fit", str(llama_f16), "--vram", "80GB", "--no-measure")
    assert "Full GPU" in text and "compute buffer" in text


def test_fit_catalog_model_shows_both_quants(tmp_path: Path, isolated_home: Path) -> None:
    from fmgguf.testing import HubServer, tiny_card, tiny_repo_files

    card = tiny_card("tiny-fit", arch="llama", quants=("Q4_K_M", "Q8_0"))
    files = tiny_repo_files("tiny-fit", arch="llama", quants=("Q4_K_M", "Q8_0"))
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"models": [card]}))
    repo = next(iter(card["variants"].values()))["repo"]
    with HubServer({repo: files}) as hub:
        out = run("fit", "tiny-fit", "--vram", "0", "--ctx", "2048", "--json",
                  env={"FMGGUF_CATALOG": str(cat), "HF_ENDPOINT": hub.endpoint})
    assert set(out["plans"]) == {"Q4_K_M", "Q8_0"}
    for plan in out["plans"].values():
        assert plan["source"] == "header" and plan["label"] == "CPU only"
    assert out["plans"]["Q8_0"]["estimate"]["weights"] > out["plans"]["Q4_K_M"]["estimate"]["weights"]
    out = run("--offline", "fit", "tiny-fit", "--quant", "Q8_0", "--vram", "24GB", "--json",
              env={"FMGGUF_CATALOG": str(cat)})
    assert list(out["plans"]) == ["Q8_0"] and out["plans"]["Q8_0"]["source"] == "catalog"
    assert out["plans"]["Q8_0"]["label"] == "Full GPU"


def test_inspect_file(tiny: dict) -> None:
    out = run("inspect", str(tiny[("qwen2", "Q4_K_M")]), "--json")
    assert out["architecture"] == "qwen2" and out["chat_template"] is True
    assert {"pre", "suf", "mid"} <= set(out["fim_tokens"])
    text = run("inspect", str(tiny[("gemma3", "F16")]))
    assert "gemma3" in text and "quant mix" in text


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40])
def test_inspect_broken_file_is_one_error_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "inspect", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 12
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_doctor() -> None:
    out = run("doctor", "--json")
    assert "CPU" in out["backends"] and out["devices"][0]["kind"] == "CPU"
    assert out["ram_total"] > 0 and out["disk_free"] > 0 and out["llama_cpp_python"]
    text = run("doctor")
    assert "llama.cpp backends" in text
    planned = run("doctor", "--json", env={"FMGGUF_VRAM": "8GB"})
    assert planned["planning_gpus"][0]["free"] == 8 * 10**9


@pytest.mark.parametrize("offline", [True, False])
def test_inspect_catalog_id_without_the_hub_shows_catalog_numbers(offline: bool) -> None:
    """Offline (or the hub out of reach: conftest points HF_ENDPOINT at a dead port), inspect falls back to
    the card and says so, pointing to `fmgguf info`, never to a flag that does not help."""
    root = ["--offline"] if offline else []
    r = CliRunner().invoke(cli, [*root, "inspect", "qwen2.5-coder-7b-instruct", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["source"] == "catalog" and data["header_read"] is False and data["header_error"]
    assert data["context_length"] == 32768 and data["n_layer"] == 28 and data["quant"] == "Q4_K_M"
    r = CliRunner().invoke(cli, [*root, "inspect", "qwen2.5-coder-7b-instruct:Q8_0"])
    assert r.exit_code == 0, r.output
    assert "32768" in r.stdout and "qwen2" in r.stdout and "q8_0" in r.stdout.lower()
    assert "fmgguf info qwen2.5-coder-7b-instruct" in r.stderr and "header could not be read" in r.stderr
    assert "offline" not in r.stderr.replace("needs the network", "")


def test_fit_warns_past_the_trained_context(llama_f16: Path) -> None:
    r = CliRunner().invoke(cli, ["--offline", "fit", "qwen2.5-coder-7b-instruct", "--quant", "Q4_K_M",
                                 "--ctx", "131072", "--vram", "80GB", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["warnings"] == ["context 131072 exceeds the model's trained context 32768; quality degrades past it"]
    assert r.stderr.strip() == f"warning: {data['warnings'][0]}"
    r = CliRunner().invoke(cli, ["--offline", "fit", "qwen2.5-coder-7b-instruct", "--ctx", "32768", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [] and not r.stderr
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    trained = read_gguf(llama_f16).n_ctx_train
    r = CliRunner().invoke(cli, ["fit", str(llama_f16), "--ctx", str(trained * 4), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert f"exceeds the model's trained context {trained}" in r.stderr and "fit:" in r.stdout
