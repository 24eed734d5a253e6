"""What each editor needs to talk to one fmgguf server: the settings (as data to merge, and as text to
paste), where its config file lives, and what to know. Used by `fmgguf connect` and the /models page.

Model ids carry the family name (Continue picks its FIM template by it) and are ``id:QUANT`` as
/api/tags lists them; the FIM-capable model gets the autocomplete role, a chat model the chat roles.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.settings import Settings

TOOLS = ("continue", "llama.vscode", "zed", "copilot", "tabby")


@dataclass(frozen=True)
class Roles:
    base_url: str
    fim: str | None = None
    chat: str | None = None
    api_key: str | None = None
    n_ctx: int = 4096


@dataclass(frozen=True)
class EditorConfig:
    tool: str
    title: str
    path: Path
    #: "yaml" | "json" | "toml"
    fmt: str
    #: the settings to merge into the file (keys at the top level of it)
    data: JsonObject
    notes: tuple[str, ...] = field(default=())

    def text(self) -> str:
        if self.fmt == "yaml":
            import yaml

            return yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True)
        if self.fmt == "toml":  # top-level keys first, then one [table] per dict value
            top = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.data.items() if not isinstance(v, dict))
            tables = "".join(f"\n[{table}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                             for table, values in self.data.items() if isinstance(values, dict))
            return (top + tables).lstrip("\n")
        return json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"

    def as_dict(self) -> JsonObject:
        return {"tool": self.tool, "title": self.title, "path": str(self.path), "format": self.fmt,
                "text": self.text(), "notes": list(self.notes)}


def vscode_settings_path() -> Path:
    home = Path.home()
    if platform.system() == "Darwin":
        return home / "Library" / "Application Support" / "Code" / "User" / "settings.json"
    if platform.system() == "Windows":
        return Path(os.environ.get("APPDATA", home)) / "Code" / "User" / "settings.json"
    return home / ".config" / "Code" / "User" / "settings.json"


def _missing(r: Roles) -> list[str]:
    out = []
    if r.fim is None:
        out.append("no downloaded model does fill-in-the-middle: `fmgguf list --fim` and `fmgguf pull ID` one "
                   "for autocomplete")
    if r.chat is None:
        out.append("no downloaded model has a chat template: pull an -instruct model for chat")
    return out


def continue_config(r: Roles) -> EditorConfig:
    base = r.base_url.rstrip("/") + "/"
    models = []
    for name, model, roles in (("fmgguf autocomplete", r.fim, ["autocomplete"]),
                               ("fmgguf chat", r.chat, ["chat", "edit", "apply"])):
        if model is None:
            continue
        entry: JsonObject = {"name": f"{name} ({model})", "provider": "ollama", "model": model,
                                 "apiBase": base, "roles": roles}
        if r.api_key:
            entry["apiKey"] = r.api_key
        models.append(entry)
    data = {"name": "fmgguf", "version": "1.0.0", "schema": "v1", "models": models}
    notes = ("provider ollama: Continue reads /api/show, sees the FIM template and sends prefix + suffix to "
             "/api/generate; the `openai` provider with apiBase .../v1 works too",) + tuple(_missing(r))
    return EditorConfig("continue", "Continue", Path.home() / ".continue" / "config.yaml", "yaml", data, notes)


def llama_vscode_config(r: Roles) -> EditorConfig:
    base = r.base_url.rstrip("/")
    data: JsonObject = {"llama-vscode.endpoint": base, "llama-vscode.endpoint_chat": base,
                            "llama-vscode.ai_api_version": "v1", "llama-vscode.ai_model": r.chat or "",
                            "llama-vscode.api_key": r.api_key or "", "llama-vscode.ask_install_llamacpp": False}
    notes = ("completions go to /infill (the FIM model answers when no `model` is sent); chat to /v1/chat/completions",
             "llama-vscode.endpoint_embeddings stays empty: fmgguf serves no embedding model") + tuple(_missing(r))
    return EditorConfig("llama.vscode", "llama.vscode (VS Code settings.json)", vscode_settings_path(), "json", data, notes)


def zed_config(r: Roles) -> EditorConfig:
    models = [{"name": m, "display_name": f"{m} (fmgguf)", "max_tokens": r.n_ctx, "supports_tools": m == r.chat}
              for m in dict.fromkeys(x for x in (r.chat, r.fim) if x)]
    data: JsonObject = {"language_models": {"ollama": {"api_url": r.base_url.rstrip("/"),
                                                           "available_models": models}}}
    if r.chat:
        data["agent"] = {"default_model": {"provider": "ollama", "model": r.chat}}
    notes = ("Zed's Ollama provider calls /api/tags, /api/show and /api/chat",)
    if r.api_key:
        notes += ("Zed sends the key as a bearer token from the OLLAMA_API_KEY environment variable (or the key "
                  "entered in its Ollama provider settings)",)
    path = Path.home() / ".config" / "zed" / "settings.json"
    return EditorConfig("zed", "Zed (settings.json)", path, "json", data, notes + tuple(_missing(r)))


def copilot_config(r: Roles) -> EditorConfig:
    data = {"github.copilot.chat.byok.ollamaEndpoint": r.base_url.rstrip("/")}
    notes = ("then in Copilot Chat: model picker > Manage Models > Ollama, and pick "
             f"{r.chat or 'a chat model'}; it checks /api/version, lists /api/tags, reads /api/show and chats "
             "over /v1/chat/completions",
             "Copilot's inline completions cannot use a local server; use llama.vscode or Continue for autocomplete")
    if r.api_key:
        notes += ("Copilot's Ollama provider sends no API key: serve on 127.0.0.1 without --api-key for it",)
    return EditorConfig("copilot", "GitHub Copilot Chat (VS Code settings.json)", vscode_settings_path(), "json",
                        data, notes + tuple(_missing(r)))


def tabby_config(r: Roles) -> EditorConfig:
    server: JsonObject = {"endpoint": r.base_url.rstrip("/")}
    if r.api_key:
        server["token"] = r.api_key
    notes = ("Tabby's IDE extensions send /v1/completions with `segments` and read /v1/health",) + tuple(_missing(r))
    return EditorConfig("tabby", "Tabby IDE extensions (agent config.toml)",
                        Path.home() / ".tabby-client" / "agent" / "config.toml", "toml", {"server": server}, notes)


BUILDERS = {"continue": continue_config, "llama.vscode": llama_vscode_config, "zed": zed_config,
            "copilot": copilot_config, "tabby": tabby_config}


def config_for(tool: str, roles: Roles) -> EditorConfig:
    return BUILDERS[tool](roles)


def pick_roles(catalog: Catalog, downloaded: list[tuple[str, str]], base_url: str, api_key: str | None = None,
               loaded: list[str] | None = None, n_ctx: int = 4096, *, settings: Settings) -> Roles:
    """The autocomplete (FIM, by the one FIM rule) and chat models among the downloaded ones, loaded ones first."""
    from fmgguf.runtime.prompt.fim_rule import card_verdict

    order = sorted(downloaded, key=lambda p: (p[0] not in (loaded or []), p[0], p[1]))
    cards = [(catalog.get(m), q) for m, q in order if m in catalog]
    fim = next((f"{c.id}:{q}" for c, q in cards if card_verdict(c, settings).able), None)
    chats = [f"{c.id}:{q}" for c, q in cards if c.chat_template not in (None, "none")]
    chat = next((m for m in chats if fim is None or m.partition(":")[0] != fim.partition(":")[0]), None) or \
        next(iter(chats), None)
    return Roles(base_url, fim, chat, api_key, n_ctx)
