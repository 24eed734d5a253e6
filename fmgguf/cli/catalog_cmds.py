"""`fmgguf list`, `search`, `info` and `catalog add|path|lock`: the catalog from the command line.

Cold start matters here (`fmgguf list` is benchmarked): nothing heavy is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import click

from fmgguf._util import JsonObject
from fmgguf.cli._common import (
    AppContext,
    console,
    human_bytes,
    human_count,
    human_ctx,
    json_option,
    output,
    pass_app,
    print_table,
)
from fmgguf.cli.store_cmds import catalog_lock_cmd

if TYPE_CHECKING:
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.settings import Settings

CTX_TABLE = (4096, 16384, 32768)


def _downloaded(app: AppContext) -> dict[tuple[str, str], bool]:
    """(id, quant) -> downloaded, from the store's records (cheap: no hub import)."""
    from fmgguf.download.records import downloaded_quants

    return downloaded_quants(app.settings)


class QuantRow(TypedDict):
    repo: str
    size: int | None
    approx_size: int | None
    downloaded: bool


class CatalogRow(TypedDict):
    """One model of `fmgguf list`/`search` (their --json rows)."""

    id: str
    family: str
    display_name: str
    parameters: int | None
    active_parameters: int | None
    context_length: int | None
    fim: bool
    license: str
    chat: bool
    builtin: bool
    quants: dict[str, QuantRow]


def _row(card: ModelCard, local: dict[tuple[str, str], bool], settings: Settings) -> CatalogRow:
    from fmgguf.runtime.prompt.fim_rule import card_verdict

    return {
        "id": card.id,
        "family": card.family,
        "display_name": card.title,
        "parameters": card.parameters.total if card.parameters else None,
        "active_parameters": card.parameters.active if card.parameters else None,
        "context_length": card.context_length,
        "fim": card_verdict(card, settings).able,
        "license": card.license,
        "chat": card.chat_template is not None,
        "builtin": card.builtin,
        "quants": {q: {"repo": v.repo, "size": v.size, "approx_size": v.approx_size,
                       "downloaded": bool(local.get((card.id, q)))} for q, v in card.variants.items()},
    }


def _table(rows: list[CatalogRow], title: str | None = None) -> None:
    headers = ["id", "family", "params", "Q4_K_M", "Q8_0", "ctx", "FIM", "licence", "local"]
    right = {"params", "Q4_K_M", "Q8_0", "ctx"}
    body = []
    for r in rows:
        def size(q: str, r: CatalogRow = r) -> str:
            info = r["quants"].get(q)
            if not info:
                return "-"
            exact = info["size"] is not None
            return human_bytes(info["approx_size"], unknown="?") if exact else "~" + human_bytes(info["approx_size"])
        local = ",".join(q for q, info in r["quants"].items() if info["downloaded"]) or "-"
        params = human_count(r["parameters"])
        if r["active_parameters"] and r["parameters"] and r["active_parameters"] != r["parameters"]:
            params += f" ({human_count(r['active_parameters'])} act.)"
        others = [q for q in r["quants"] if q not in ("Q4_K_M", "Q8_0")]
        body.append([r["id"] + (f" [+{','.join(others)}]" if others else ""), r["family"], params, size("Q4_K_M"),
                     size("Q8_0"), human_ctx(r["context_length"]), "yes" if r["fim"] else "no", r["license"], local])
    print_table(headers, body, right=right, title=title)


@click.command("list")
@json_option
@pass_app
def list_cmd(app: AppContext, as_json: bool) -> None:
    """Every model in the catalog: sizes of each quant, context, FIM, licence, local state."""
    local = _downloaded(app)
    rows = [_row(c, local, app.settings) for c in app.catalog.models()]
    output(rows, as_json, lambda r: _table(r, f"{len(r)} models (~ = size rounded by the hub)"))


@click.command("search")
@click.argument("text", required=False)
@click.option("--family", help="Family name, e.g. qwen2.5-coder.")
@click.option("--max-params", type=click.FloatRange(min=0, min_open=True), help="At most this many billion parameters.")
@click.option("--max-vram", "max_vram_gb", type=click.FloatRange(min=0, min_open=True),
              help="Fits in this many GB (weights + 4K context).")
@click.option("--quant", help="Has this quantization (Q4_K_M, Q8_0, 4bit, 8bit).")
@click.option("--fim/--no-fim", default=None, help="Really supports fill-in-the-middle (or not).")
@click.option("--min-context", type=click.IntRange(min=1), help="Context length at least this many tokens.")
@click.option("--capability", help="A capability tag, e.g. chat, fim, moe, lightweight.")
@json_option
@pass_app
def search_cmd(app: AppContext, text: str | None, family: str | None, max_params: float | None,
               max_vram_gb: float | None, quant: str | None, fim: bool | None, min_context: int | None,
               capability: str | None, as_json: bool) -> None:
    """Find models by text and filters."""
    if family and not any(family.lower() in f.lower() for f in app.catalog.families()):
        raise click.BadParameter(f"no family matches {family!r}; families: {', '.join(app.catalog.families())}",
                                 param_hint="--family")
    cards = app.catalog.search(text=text, family=family, max_params=max_params, max_vram_gb=max_vram_gb, quant=quant,
                               fim=fim, min_context=min_context, capability=capability)
    local = _downloaded(app)
    rows = [_row(c, local, app.settings) for c in cards]
    output(rows, as_json, lambda r: _table(r, f"{len(r)} matching") if r else click.echo("no model matches"))


def _with_file_numbers(app: AppContext, card: ModelCard, local: dict[tuple[str, str], bool]) -> tuple[ModelCard, str | None]:
    """A user card without architecture numbers, completed from its downloaded GGUF header."""
    if card.arch is not None:
        return card, None
    for quant in card.variants:
        if not local.get((card.id, quant)):
            continue
        from fmgguf.download import get_model_downloader
        from fmgguf.errors import FmggufError
        from fmgguf.runtime.gguf.card_arch import card_numbers
        from fmgguf.runtime.gguf.gguf_file import read_gguf

        try:
            info = read_gguf(get_model_downloader(app.settings).model_path(card.id, quant))
            arch, params = card_numbers(info)
            update: JsonObject = {"arch": arch, "parameters": card.parameters or params}
            return type(card).model_validate({**card.model_dump(), **update}), info.chat_template
        except (FmggufError, ValueError):
            return card, None
    return card, None


def card_details(card: ModelCard, local: dict[tuple[str, str], bool], app: AppContext | None = None) -> JsonObject:
    from fmgguf.catalog.sizing import estimate_card

    file_template = None
    if app is not None:
        card, file_template = _with_file_numbers(app, card, local)
    data = card.model_dump(mode="json")
    data["file_chat_template"] = bool(file_template)
    data["memory"] = {q: {str(n): estimate_card(card, q, n).as_dict() for n in CTX_TABLE} for q in card.variants}
    data["downloaded"] = {q: bool(local.get((card.id, q))) for q in card.variants}
    return data


def _render_info(data: JsonObject) -> None:
    from rich.table import Table

    c = console()
    c.print(f"[bold]{data['display_name'] or data['id']}[/bold]  ({data['id']})")
    arch = data.get("arch") or {}
    params = data.get("parameters") or {}
    lines = [
        ("family", data["family"]), ("licence", data["license"]), ("source", data.get("source_repo") or "-"),
        ("parameters", f"{human_count(params.get('total'))} total, {human_count(params.get('active'))} active" if params else "?"),
        ("architecture", f"{arch.get('name')}: {arch.get('n_layer')} layers, {arch.get('n_embd')} wide, "
                         f"{arch.get('n_head')} heads / {arch.get('n_head_kv')} KV, head dim {arch.get('head_dim')}, "
                         f"vocab {arch.get('vocab')}" if arch else "? (read from the GGUF once downloaded)"),
        ("context", str(arch.get("context_length", "?"))),
        ("chat template", data.get("chat_template") or ("the GGUF's own" if data.get("file_chat_template")
                                                         else "none (completion model)")),
        ("FIM", ("yes" if data["fim"]["supported"] else "tokens present, not supported") + f" ({data['fim']['order']})"
         if data.get("fim") else "no"),
        ("specialization", data.get("specialization") or "-"),
        ("capabilities", ", ".join(data.get("capabilities") or []) or "-"),
        ("draft model", f"{data['draft']} (--speculative draft)" if data.get("draft") else "-"),
    ]
    for key, value in lines:
        c.print(f"  {key:<15} {value}", highlight=False)
    for quant, v in data["variants"].items():
        local = "downloaded" if data["downloaded"].get(quant) else "not downloaded"
        c.print(f"\n[bold]{quant}[/bold]  {v['repo']}" + (f" @ {v['revision']}" if v.get("revision") else "") + f"  ({local})")
        for f in v["files"]:
            size = human_bytes(f["size"]) if f.get("size") else (f"~{f['size_approx']}" if f.get("size_approx") else "size ?")
            c.print(f"  {f['name']}  {size}\n    sha256 {f['sha256'] or 'not pinned (verified against the hub or recorded on first use)'}",
                    highlight=False)
    table = Table(title="memory to run fully on one device (estimate from catalog numbers)", box=None, header_style="bold")
    table.add_column("quant")
    for n in CTX_TABLE:
        table.add_column(f"{n // 1024}K ctx", justify="right")
    for quant, by_ctx in data["memory"].items():
        table.add_row(quant, *[human_bytes(by_ctx[str(n)]["total"]) for n in CTX_TABLE])
    c.print()
    c.print(table)
    for note in data.get("notes") or []:
        c.print(f"  note: {note}", highlight=False)


@click.command("info")
@click.argument("model_id")
@json_option
@pass_app
def info_cmd(app: AppContext, model_id: str, as_json: bool) -> None:
    """The whole card of one model: architecture, files with sha256, memory per quant and context."""
    card = app.catalog.get(model_id)
    output(card_details(card, _downloaded(app), app), as_json, _render_info)


@click.group("catalog")
def catalog_group() -> None:
    """Manage the user catalog (merged over the built-in one)."""


@catalog_group.command("add")
@click.argument("model_id")
@click.option("--repo", required=True, help="Hub repository holding the GGUF, e.g. owner/Name-GGUF.")
@click.option("--file", "files", required=True, multiple=True, help="GGUF file name in the repo (repeat for split parts).")
@click.option("--quant", required=True, help="llama.cpp quant name of the file(s), e.g. Q4_K_M, Q6_K.")
@click.option("--sha256", "shas", multiple=True, help="Pinned SHA256 of each file, in --file order.")
@click.option("--revision", help="Pin a commit hash (recommended) or branch.")
@json_option
@pass_app
def catalog_add_cmd(app: AppContext, model_id: str, repo: str, files: tuple[str, ...], quant: str,
                    shas: tuple[str, ...], revision: str | None, as_json: bool) -> None:
    """Add (or extend) a model in the user catalog."""
    from fmgguf.catalog.schema import LLAMA_CPP_QUANTS, check_relative_path, normalize_quant
    from fmgguf.catalog.user import add_user_entry, simple_entry

    if normalize_quant(quant) not in LLAMA_CPP_QUANTS:
        raise click.BadParameter(f"{quant!r} is not a llama.cpp quantization (e.g. Q4_K_M, Q8_0, Q6_K)", param_hint="--quant")
    for name in files:
        try:
            check_relative_path(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--file") from None
    for sha in shas:
        if len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
            raise click.BadParameter(f"{sha!r} is not a SHA256 (64 hex digits)", param_hint="--sha256")
    base = app.catalog.get(model_id) if model_id in app.catalog else None
    entry = simple_entry(model_id, repo, list(files), quant, list(shas) or None, revision, base=base)
    card = add_user_entry(app.settings, entry)
    data = {"id": card.id, "quants": card.quants, "catalog_file": str(app.settings.catalog_file)}
    output(data, as_json, lambda d: click.echo(f"added {d['id']} ({', '.join(d['quants'])}) to {d['catalog_file']}"))


@catalog_group.command("remove")
@click.argument("model_id")
@pass_app
def catalog_remove_cmd(app: AppContext, model_id: str) -> None:
    """Remove a model from the user catalog (built-in entries come back as they were)."""
    from fmgguf.catalog.user import remove_user_entry
    from fmgguf.errors import UnknownModelError

    if not remove_user_entry(app.settings, model_id):
        raise UnknownModelError(f"{model_id} is not in the user catalog {app.settings.catalog_file}",
                                fix="see `fmgguf list` for ids; built-in entries cannot be removed")
    click.echo(f"removed {model_id} from {app.settings.catalog_file}")


@catalog_group.command("path")
@json_option
@pass_app
def catalog_path_cmd(app: AppContext, as_json: bool) -> None:
    """Where the built-in and user catalogs are."""
    from fmgguf.catalog.loader import builtin_catalog_path

    data = {"builtin": str(builtin_catalog_path()), "user": str(app.settings.catalog_file),
            "user_exists": app.settings.catalog_file.is_file()}
    output(data, as_json, lambda d: click.echo(f"built-in: {d['builtin']}\nuser:     {d['user']}"
                                               + ("" if d["user_exists"] else " (not created yet)")))


catalog_group.add_command(catalog_lock_cmd)  # the store owns it: it asks the hub for hashes
