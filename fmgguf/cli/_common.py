"""What every command shares: the lazily built settings/catalog, JSON output, size formatting."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import click

from fmgguf._util import human_bytes, jsonable  # noqa: F401 - human_bytes: the CLI's formatter

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.settings import Settings


@dataclass
class AppContext:
    offline: bool = False
    verbose: int = 0
    rpc: str | None = None  # --rpc: workers to split models across (else FMGGUF_RPC)
    threads: int | None = None  # --threads: CPU threads for llama.cpp (else FMGGUF_THREADS, else one per core)
    speculative: str | None = None  # --speculative: off | ngram | draft:ID (else FMGGUF_SPECULATIVE, else off)
    _settings: "Settings | None" = field(default=None, repr=False)
    _catalog: "Catalog | None" = field(default=None, repr=False)

    @property
    def settings(self) -> "Settings":
        if self._settings is None:
            from fmgguf.settings import load_settings

            self._settings = load_settings(offline=True if self.offline else None, rpc=self.rpc,
                                           n_threads=self.threads, speculative=self.speculative)
            _setup_logging(self._settings.log_level, self.verbose)
            from fmgguf.runtime.engine.llama_log import configure as route_llama_log

            route_llama_log(self._settings.home, self.verbose)
        return self._settings

    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog


def _setup_logging(level: str, verbose: int) -> None:
    import logging

    lvl = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else getattr(logging, level.upper(), 30)
    logging.basicConfig(level=lvl, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


pass_app = click.make_pass_decorator(AppContext, ensure=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _set_rpc(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        app = ctx.ensure_object(AppContext)
        app.rpc, app._settings = value, None


def _set_threads(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    if value is not None:
        app = ctx.ensure_object(AppContext)
        app.threads, app._settings = value, None


threads_option = click.option(
    "--threads", type=click.IntRange(1, 1024), default=None, expose_value=False, callback=_set_threads,
    help="CPU threads llama.cpp computes with (default: FMGGUF_THREADS, else one per usable core, as llama.cpp).")

def _set_speculative(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        app = ctx.ensure_object(AppContext)
        app.speculative, app._settings = value, None


speculative_option = click.option(
    "--speculative", metavar="off|ngram|draft|draft:ID", default=None, expose_value=False, callback=_set_speculative,
    help="Speculative decoding: ngram drafts the next tokens from the prompt and output, draft has a small "
         "model of the same vocabulary draft them (the catalog's pair, or draft:ID / draft:FILE.gguf, downloaded); "
         "both are checked in one batch (same greedy text). Default: FMGGUF_SPECULATIVE, else off.")

rpc_option = click.option(
    "--rpc", metavar="HOST[:PORT][@BUDGET],...", default=None, expose_value=False, callback=_set_rpc,
    help="Split models across these RPC workers (`fmgguf worker` on each; '' for none). Default: FMGGUF_RPC.")


T = TypeVar("T")


def emit_json(data: object) -> None:
    click.echo(json.dumps(jsonable(data), indent=2, ensure_ascii=False))


def output(data: T, as_json: bool, render: Callable[[T], None]) -> None:
    """JSON when asked, otherwise the human rendering."""
    if as_json:
        emit_json(data)
    else:
        render(data)


def trained_context(path: str | os.PathLike[str]) -> int | None:
    """The context length a GGUF file says its model was trained with (None: unreadable or not said)."""
    from fmgguf.errors import FmggufError
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    try:
        return read_gguf(path).n_ctx_train
    except FmggufError:
        return None


def context_warning(n_ctx: int, trained: int | None) -> str | None:
    """The one warning for a context longer than the trained one (None when it is not)."""
    if trained and n_ctx > trained:
        return f"context {n_ctx} exceeds the model's trained context {trained}; quality degrades past it"
    return None


def human_count(n: int | None) -> str:
    if n is None:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.1f}{unit}" if value < 10 and value != int(value) else f"{value:.0f}{unit}"
    return str(n)


def human_ctx(n: int | None) -> str:
    """Context lengths are powers of two: 32768 -> '32K', 163840 -> '160K'."""
    if n is None:
        return "?"
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def console():
    """A rich console for tables (imported lazily: rich costs import time)."""
    import shutil

    from rich.console import Console

    # When piped, rich assumes 80 columns; tables of 20 models read better a little wider.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((140, 24)).columns, 140)
    return Console(soft_wrap=False, highlight=False, width=width)


def print_table(headers: list[str], rows: list[list[str]], right: set[str] | None = None, title: str | None = None) -> None:
    """A plain aligned table (no rich: `fmgguf list` is on the cold-start budget)."""
    right = right or set()
    widths = [max([len(h)] + [len(str(row[i])) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [str(c).rjust(w) if h in right else str(c).ljust(w) for c, w, h in zip(cells, widths, headers, strict=True)]
        return "  ".join(out).rstrip()

    if title:
        click.echo(title)
    click.secho(line(headers), bold=True)
    for row in rows:
        click.echo(line(row))
