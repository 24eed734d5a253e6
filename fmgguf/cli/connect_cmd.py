"""`fmgguf connect TOOL [--write]`: the settings that point an editor at `fmgguf serve`.

It prints the exact config with the right model ids and roles (the downloaded FIM model for
autocomplete, a chat model for chat). ``--write`` merges it into the tool's config file, keeping
everything else there, after copying the file to ``<file>.bak-<time>``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fmgguf._util import JsonObject
from fmgguf.cli._common import AppContext, emit_json, json_option, pass_app

if TYPE_CHECKING:
    from fmgguf.server.editor_config import EditorConfig, Roles
from fmgguf.errors import ConfigError
from fmgguf.server.agent_config import AGENTS

TOOL_CHOICES = ("continue", "llama.vscode", "zed", "copilot", "tabby", "claude-code", "codex", "opencode", "aider")


@click.command("connect")
@click.argument("tool", type=click.Choice(TOOL_CHOICES))
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Where `fmgguf serve` listens.")
@click.option("--fim-model", default=None, metavar="ID[:QUANT]", help="Autocomplete model (default: a downloaded FIM model).")
@click.option("--chat-model", default=None, metavar="ID[:QUANT]", help="Chat model (default: a downloaded chat model).")
@click.option("--api-key", default=None, metavar="KEY", help="The key given to `fmgguf serve --api-key`.")
@click.option("--write", is_flag=True, help="Merge into the tool's config file (a backup is kept).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="The config file to merge into (default: the tool's usual place).")
@json_option
@pass_app
def connect_cmd(app: AppContext, tool: str, url: str, fim_model: str | None, chat_model: str | None,
                api_key: str | None, write: bool, config_path: Path | None, as_json: bool) -> None:
    """Print (or --write) the config that points TOOL (an editor or a coding agent) at this fmgguf server."""
    from fmgguf.server.editor_config import Roles, config_for, pick_roles

    if not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(f"--url {url!r} is not an http(s) URL", fix="e.g. --url http://127.0.0.1:8000")
    roles = pick_roles(app.catalog, _downloaded(app), url.rstrip("/"), api_key, settings=app.settings)
    roles = Roles(roles.base_url, _checked(app, fim_model, fim=True) or roles.fim,
                  _checked(app, chat_model, fim=False) or roles.chat, api_key, roles.n_ctx)
    if tool in AGENTS:
        cfg, ctx_note = _agent_config(app, tool, roles)
    else:
        cfg, ctx_note = config_for(tool, roles), None
    target = config_path or cfg.path
    backup = merge_into(target, cfg.fmt, cfg.data) if write else None
    if as_json:
        emit_json({**cfg.as_dict(), "path": str(target), "written": write, "backup": str(backup) if backup else None,
                   "context_note": ctx_note})
        return
    click.echo(f"# {cfg.title}: {target}")
    click.echo(cfg.text().rstrip())
    for note in cfg.notes + ((ctx_note,) if ctx_note else ()):
        click.echo(f"# note: {note}", err=True)
    if write:
        click.echo(f"merged into {target}" + (f" (backup: {backup})" if backup else " (new file)"), err=True)


def _agent_config(app: AppContext, tool: str, roles: Roles) -> tuple[EditorConfig, str | None]:
    """An agent's config, announcing the context the fit plan allows for the chat model (>= 32k where it fits)."""
    from fmgguf.server.agent_config import BUILDERS, agent_context
    from fmgguf.server.editor_config import Roles

    note = None
    if roles.chat:
        card, quant = app.catalog.resolve(roles.chat)
        path = _local_file(app, card.id, quant)
        ctx = agent_context(app.settings, card, quant, path)
        roles, note = Roles(roles.base_url, roles.fim, roles.chat, roles.api_key, ctx.n_ctx), ctx.note
    return BUILDERS[tool](roles), note


def _local_file(app: AppContext, model_id: str, quant: str) -> Path | None:
    from fmgguf.download import ModelDownloader
    from fmgguf.errors import FmggufError

    try:
        return Path(ModelDownloader(app.settings, catalog=app.catalog).model_path(model_id, quant))
    except FmggufError:
        return None


def _downloaded(app: AppContext) -> list[tuple[str, str]]:
    from fmgguf.download import ModelDownloader

    recs = ModelDownloader(app.settings, catalog=app.catalog).list_downloaded() or []
    return sorted({(r["id"], r["quant"]) for r in recs if isinstance(r, dict) and r.get("id") and r.get("quant")})


def _checked(app: AppContext, ref: str | None, *, fim: bool) -> str | None:
    if ref is None:
        return None
    card, quant = app.catalog.resolve(ref)  # UnknownModelError names the closest ids
    if fim:
        from fmgguf.runtime.prompt.fim_rule import card_verdict

        verdict = card_verdict(card, app.settings)
        if not verdict.able:
            from fmgguf.errors import FIMNotSupportedError

            able = [c.id for c in app.catalog.models() if c.fim_supported][:3]
            raise FIMNotSupportedError(verdict.reason,
                                       fix=f"pick a FIM model for --fim-model, e.g. {', '.join(able) or 'one with FIM: yes'}")
    return f"{card.id}:{quant}"


# --- merging into an existing file ---------------------------------------------------------------
def merge_into(path: Path, fmt: str, data: JsonObject) -> Path | None:
    """Merge ``data`` into the file (created if missing); returns the backup's path (None: new file)."""
    from fmgguf._util import atomic_write_text

    old = path.read_text(encoding="utf-8") if path.exists() else ""
    text = {"yaml": _merge_yaml, "json": _merge_json, "toml": _merge_toml}[fmt](old, data, path)
    backup = None
    if path.exists():
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return backup


def _merge_yaml(old: str, data: dict, path: Path) -> str:
    import yaml

    try:
        doc = yaml.safe_load(old) if old.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})",
                          fix="fix or move the file, then run again; nothing was changed") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a YAML mapping", fix="fix or move the file; nothing was changed")
    for key in ("name", "version", "schema"):
        doc.setdefault(key, data[key])
    ours = {m["name"].split(" (")[0] for m in data["models"]}
    kept = [m for m in doc.get("models") or [] if not (isinstance(m, dict) and str(m.get("name", "")).split(" (")[0] in ours)]
    doc["models"] = kept + data["models"]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _merge_json(old: str, data: dict, path: Path) -> str:
    doc = _load_jsonc(old, path) if old.strip() else {}
    _deep_merge(doc, data)
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _deep_merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _load_jsonc(text: str, path: Path) -> dict:
    """VS Code and Zed settings are JSON with comments and trailing commas."""
    try:
        doc = json.loads(_strip_jsonc(text))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})", fix="fix or move the file; nothing was changed") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a JSON object", fix="fix or move the file; nothing was changed")
    return doc


def _strip_jsonc(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i: j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if text.find("\n", i) >= 0 else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def _merge_toml(old: str, data: dict, path: Path) -> str:
    import tomllib

    from fmgguf.server.editor_config import EditorConfig

    try:
        tomllib.loads(old)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})", fix="fix or move the file; nothing was changed") from None
    top, tables, skip, in_table = [], [], False, False
    for line in old.splitlines():
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            in_table, skip = True, header.group(1).strip() in data
        key = re.match(r"^\s*([A-Za-z0-9_-]+)\s*=", line)
        if not in_table and not (key and key.group(1) in data):  # our top-level keys are replaced
            top.append(line)
        elif in_table and not skip:
            tables.append(line)
    ours = EditorConfig("", "", path, "toml", data).text()
    mine_top, _, mine_tables = ours.partition("\n[") if not ours.startswith("[") else ("", "", ours[1:])
    text = "\n".join(ln for ln in [*top, mine_top.rstrip("\n")] if ln is not None).strip("\n")
    text = (text + "\n\n" if text else "") + "\n".join(tables).strip("\n")
    text = text.rstrip("\n") + ("\n\n[" + mine_tables if mine_tables else "\n")
    tomllib.loads(text)  # what we write must read back
    return text
