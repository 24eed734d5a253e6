"""`fmgguf list`/`info` show what is downloaded; the seed config.yaml is read through FMGGUF_CONFIG."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.testing.hub_server import HubServer


def test_list_and_info_show_downloaded_quant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.settings import load_settings

    blob = tmp_path / "served" / "mine-Q8_0.gguf"
    blob.parent.mkdir()
    blob.write_bytes(b"GGUF" + random.Random(1).randbytes(300_000))
    add_user_entry(load_settings(), {"id": "mine", "variants": {"Q8_0": {"repo": "me/mine-GGUF",
                                                                         "files": [{"name": blob.name}]}}})
    runner = CliRunner()
    before = {r["id"]: r for r in json.loads(runner.invoke(cli, ["list", "--json"]).output)}
    assert before["mine"]["quants"]["Q8_0"]["downloaded"] is False
    with HubServer({"me/mine-GGUF": {blob.name: blob}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        res = runner.invoke(cli, ["pull", "mine", "--quant", "Q8_0"])
        assert res.exit_code == 0, res.output
    after = {r["id"]: r for r in json.loads(runner.invoke(cli, ["list", "--json"]).output)}
    assert after["mine"]["quants"]["Q8_0"]["downloaded"] is True
    assert after["qwen2.5-coder-7b-instruct"]["quants"]["Q4_K_M"]["downloaded"] is False
    info = json.loads(runner.invoke(cli, ["info", "mine", "--json"]).output)
    assert info["downloaded"] == {"Q8_0": True}
    table = runner.invoke(cli, ["list"]).output
    assert any(line.startswith("mine") and line.rstrip().endswith("Q8_0") for line in table.splitlines()), table


def test_seed_config_yaml_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""
models:
  default_provider: "qwen"
  default_model: "qwen2.5-coder-7b-instruct"
  available_models:
    qwen2.5-coder-7b-instruct:
      provider: "qwen"
      name: "Qwen/Qwen2.5-Coder-7B-Instruct"
      display_name: "Qwen2.5-Coder (7B)"
      parameters: "7B"
      context_length: 128000
      specialization: "High-quality code generation"
      quantization_support: ["4bit", "8bit"]
      recommended_gpu_memory: "14GB"
providers:
  qwen: {backend: "transformers", auto_tokenizer: true, trust_remote_code: true, supports_quantization: true}
""")
    monkeypatch.setenv("FMGGUF_CONFIG", str(cfg))
    runner = CliRunner()
    res = runner.invoke(cli, ["info", "qwen2.5-coder-7b-instruct", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["display_name"] == "Qwen2.5-Coder (7B)" and data["recommended_gpu_memory"] == "14GB"
    assert data["variants"]["Q4_K_M"]["repo"] == "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"
    # an id the catalog lacks: one line naming what to add, exit code != 0
    cfg.write_text(cfg.read_text().replace("qwen2.5-coder-7b-instruct:", "my-own-coder:"))
    res = runner.invoke(cli, ["list"])
    assert res.exit_code != 0
    assert "fmgguf catalog add my-own-coder" in str(res.exception)


def test_info_reads_numbers_from_a_downloaded_user_model() -> None:
    from fmgguf.testing import build_tiny_model

    path = build_tiny_model("qwen2", "unit", "Q4_K_M")
    runner = CliRunner()
    res = runner.invoke(cli, ["import-gguf", str(path), "--as", "my-tiny"])
    assert res.exit_code == 0, res.output
    data = json.loads(runner.invoke(cli, ["info", "my-tiny", "--json"]).output)
    assert data["arch"]["name"] == "qwen2" and data["arch"]["n_layer"] >= 1
    assert data["parameters"]["total"] > 1_000_000
    assert data["file_chat_template"] is True
    mem = next(iter(data["memory"].values()))
    assert mem["4096"]["kv_cache"] < mem["16384"]["kv_cache"] < mem["32768"]["kv_cache"]
    text = runner.invoke(cli, ["info", "my-tiny"]).output
    assert "qwen2:" in text and "the GGUF's own" in text


def test_list_shows_context_in_binary_k() -> None:
    rows = runner_rows = CliRunner().invoke(cli, ["list"]).output.splitlines()
    line = next(r for r in runner_rows if r.startswith("qwen2.5-coder-7b-instruct"))
    assert " 32K " in line and rows
