"""`fmgguf connect TOOL [--write]` and GET /api/connect: the settings each editor needs, with the right
model ids and roles, merged into an existing config file (other settings kept, a backup made)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomllib
import yaml
from click.testing import CliRunner

FIM, CHAT = "qwen2.5-coder-1.5b-instruct", "deepseek-coder-v2-lite-instruct"


def _connect(*args: str) -> Any:
    from fmgguf.cli.main import cli

    return CliRunner().invoke(cli, ["connect", *args], catch_exceptions=False)


def test_continue_write_merges_and_keeps_a_backup(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("name: mine\nversion: 0.0.1\nschema: v1\nmodels:\n  - name: GPT\n    provider: openai\n"
                   "    model: gpt-4o\n", encoding="utf-8")
    for _ in range(2):  # twice: our entries are replaced, not duplicated
        r = _connect("continue", "--fim-model", FIM, "--chat-model", CHAT, "--url", "http://127.0.0.1:9000",
                     "--write", "--config", str(cfg))
        assert r.exit_code == 0, r.output
    doc = yaml.safe_load(cfg.read_text())
    assert doc["name"] == "mine" and [m["name"] for m in doc["models"]][0] == "GPT"
    ours = {m["roles"][0]: m for m in doc["models"][1:]}
    assert len(doc["models"]) == 3
    assert ours["autocomplete"]["model"] == f"{FIM}:Q4_K_M" and ours["autocomplete"]["provider"] == "ollama"
    assert ours["chat"]["model"] == f"{CHAT}:Q4_K_M" and ours["chat"]["apiBase"] == "http://127.0.0.1:9000/"
    backups = list(tmp_path.glob("config.yaml.bak-*"))
    assert backups and "gpt-4o" in backups[0].read_text()


def test_vscode_settings_with_comments_are_merged(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.json"
    cfg.write_text('{\n  // my font\n  "editor.fontSize": 14, /* keep */\n  "url": "http://x//y",\n}\n', encoding="utf-8")
    r = _connect("llama.vscode", "--fim-model", FIM, "--chat-model", CHAT, "--api-key", "k-12345678", "--write",
                 "--config", str(cfg))
    assert r.exit_code == 0, r.output
    doc = json.loads(cfg.read_text())
    assert doc["editor.fontSize"] == 14 and doc["url"] == "http://x//y"
    assert doc["llama-vscode.endpoint"] == "http://127.0.0.1:8000" and doc["llama-vscode.api_key"] == "k-12345678"
    r = _connect("copilot", "--write", "--config", str(cfg))
    assert json.loads(cfg.read_text())["github.copilot.chat.byok.ollamaEndpoint"] == "http://127.0.0.1:8000"
    assert json.loads(cfg.read_text())["llama-vscode.endpoint"]  # the earlier tool's settings stay


def test_zed_and_tabby(tmp_path: Path) -> None:
    zed = tmp_path / "zed.json"
    zed.write_text('{"theme": "One Dark", "language_models": {"anthropic": {"version": "1"}}}')
    assert _connect("zed", "--fim-model", FIM, "--chat-model", CHAT, "--write", "--config", str(zed)).exit_code == 0
    doc = json.loads(zed.read_text())
    assert doc["theme"] == "One Dark" and "anthropic" in doc["language_models"]
    models = [m["name"] for m in doc["language_models"]["ollama"]["available_models"]]
    assert f"{CHAT}:Q4_K_M" in models and doc["agent"]["default_model"]["model"] == f"{CHAT}:Q4_K_M"
    tools = {m["name"]: m["supports_tools"] for m in doc["language_models"]["ollama"]["available_models"]}
    assert tools == {f"{CHAT}:Q4_K_M": True, f"{FIM}:Q4_K_M": False}  # Zed's agent needs tools on the chat model
    tabby = tmp_path / "config.toml"
    tabby.write_text('[logs]\nlevel = "debug"\n\n[server]\nendpoint = "http://old"\n')
    assert _connect("tabby", "--api-key", "tok-12345678", "--write", "--config", str(tabby)).exit_code == 0
    doc = tomllib.loads(tabby.read_text())
    assert doc == {"logs": {"level": "debug"}, "server": {"endpoint": "http://127.0.0.1:8000", "token": "tok-12345678"}}


def _fmgguf(*args: str) -> Any:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "fmgguf", *args], capture_output=True, text=True, env=env, timeout=60)


def test_refusals_are_one_line(tmp_path: Path) -> None:
    r = _fmgguf("connect", "continue", "--fim-model", CHAT)
    assert r.returncode == 15 and "not trained for fill-in-the-middle" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    r = _fmgguf("connect", "continue", "--write", "--config", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and bad.read_text() == "models: [\n"
    assert not list(tmp_path.glob("bad.yaml.bak-*"))


def test_api_connect_picks_roles_from_downloaded_models(served: Any) -> None:
    data = httpx.get(served.url + "/api/connect", timeout=10).json()
    assert data["fim_model"] == "tiny-qwen:F16" and data["chat_model"] == "tiny-llama:F16"
    tools = {t["tool"]: t for t in data["tools"]}
    assert set(tools) == {"continue", "llama.vscode", "zed", "copilot", "tabby"}
    cont = yaml.safe_load(tools["continue"]["text"])
    assert {m["model"]: m["roles"] for m in cont["models"]} == {"tiny-qwen:F16": ["autocomplete"],
                                                                "tiny-llama:F16": ["chat", "edit", "apply"]}
    assert json.loads(tools["llama.vscode"]["text"])["llama-vscode.endpoint"] == served.url
    r = httpx.get(served.url + "/api/connect", params={"tool": "vim"}, timeout=10)
    assert r.status_code == 400


@pytest.mark.parametrize("tool", ["continue", "zed", "copilot", "tabby", "llama.vscode", "claude-code", "codex", "opencode",
                                  "aider"])
def test_printed_config_parses(tool: str) -> None:
    r = _connect(tool, "--fim-model", FIM, "--chat-model", CHAT, "--json")
    data = json.loads(r.output)
    text = data["text"]
    parsed = {"yaml": yaml.safe_load, "json": json.loads, "toml": tomllib.loads}[data["format"]](text)
    assert parsed


# --- coding agents ---------------------------------------------------------------------------------
AGENT_MODEL = "qwen2.5-coder-0.5b-instruct"


def test_claude_code_env_merges_into_its_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.json"
    cfg.write_text('{"theme": "dark", "env": {"MY_VAR": "1"}}', encoding="utf-8")
    r = _connect("claude-code", "--chat-model", AGENT_MODEL, "--api-key", "k-12345678", "--write", "--config", str(cfg))
    assert r.exit_code == 0, r.output
    doc = json.loads(cfg.read_text())
    env = doc["env"]
    assert doc["theme"] == "dark" and env["MY_VAR"] == "1"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000" and env["ANTHROPIC_AUTH_TOKEN"] == "k-12345678"
    assert env["ANTHROPIC_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == f"{AGENT_MODEL}:Q4_K_M"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "context 32768" in r.output and "FMGGUF_CTX=32768 fmgguf serve" in r.output  # what the fit plan allows


def test_codex_profile_speaks_responses(tmp_path: Path) -> None:
    cfg = tmp_path / "fmgguf.config.toml"
    cfg.write_text('approval_policy = "never"\nmodel = "gpt-5"\n\n[model_providers.fmgguf]\nname = "stale"\n')
    for _ in range(2):
        r = _connect("codex", "--chat-model", AGENT_MODEL, "--url", "http://127.0.0.1:9000", "--write", "--config", str(cfg))
        assert r.exit_code == 0, r.output
    doc = tomllib.loads(cfg.read_text())
    assert doc["approval_policy"] == "never" and doc["model"] == f"{AGENT_MODEL}:Q4_K_M"
    assert doc["model_provider"] == "fmgguf" and doc["model_context_window"] == 32768
    provider = doc["model_providers"]["fmgguf"]
    assert provider["wire_api"] == "responses" and provider["base_url"] == "http://127.0.0.1:9000/v1"


def test_opencode_and_aider_carry_the_context(tmp_path: Path) -> None:
    oc = tmp_path / "opencode.json"
    assert _connect("opencode", "--chat-model", AGENT_MODEL, "--write", "--config", str(oc)).exit_code == 0
    provider = json.loads(oc.read_text())["provider"]["fmgguf"]
    assert provider["options"]["baseURL"] == "http://127.0.0.1:8000/v1"
    assert provider["models"][f"{AGENT_MODEL}:Q4_K_M"]["limit"]["context"] == 32768
    meta = tmp_path / ".aider.model.metadata.json"
    r = _connect("aider", "--chat-model", AGENT_MODEL, "--write", "--config", str(meta))
    assert r.exit_code == 0 and "--openai-api-base http://127.0.0.1:8000/v1" in r.output
    assert json.loads(meta.read_text())[f"openai/{AGENT_MODEL}:Q4_K_M"]["max_input_tokens"] == 32768
