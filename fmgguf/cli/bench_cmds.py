"""`fmgguf bench` and `fmgguf compare`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fmgguf._util import atomic_write_text
from fmgguf.cli._common import AppContext, emit_json, json_option, pass_app, rpc_option, threads_option
from fmgguf.errors import BenchError, InvalidRequestError

if TYPE_CHECKING:
    from fmgguf.bench.run_store import Progress
    from fmgguf.bench.summary import BenchSummary


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for part in values for v in part.split(",") if v.strip()]
    return out or None


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on stderr while the block runs; yields its update function (None: no bar, when
    stderr is not a terminal or JSON is asked)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              TextColumn("{task.fields[current]}"), console=Console(stderr=True), transient=True)
    ids: list = []

    def update(done: int, total: int, current: str) -> None:
        if not ids:
            ids.append(bar.add_task("bench", total=total, current=""))
        bar.update(ids[0], completed=done, total=total, current=current)

    with bar:
        yield update


@click.command("bench")
@click.argument("model_ids", nargs=-1)
@click.option("--quant", default="Q4_K_M", show_default=True, help="Q4_K_M, Q8_0 or both.")
@click.option("--tasks", "tasks", multiple=True, help="Task ids (comma-separated; a trailing * is a prefix).")
@click.option("--language", "languages", multiple=True, help="python, javascript, cpp, sql, fim, barrier.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 200),
              help="Answers per task (pass@k needs k <= samples; >1 samples at temperature 0.8).")
@click.option("--suite", default="builtin", show_default=True,
              help="builtin, humaneval, humaneval-infill (FIM gaps cut from HumanEval), tools (the tool-call "
                   "suite) or a JSONL/YAML file.")
@click.option("--reference", is_flag=True, help="Run the suite's reference/canonical solutions (harness self-check).")
@click.option("--wrong", is_flag=True, hidden=True, help="With --reference: run the deliberately wrong answers.")
@click.option("--list-tasks", is_flag=True, help="List the suite's tasks and exit.")
@click.option("--max-tokens", default=512, show_default=True, type=int, help="Generation limit per answer.")
@click.option("--gguf", "gguf_path", type=click.Path(exists=True, dir_okay=False),
              help="Benchmark this local GGUF file (one model id names it).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an interrupted run.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Also write a comparison HTML page.")
@rpc_option
@threads_option
@json_option
@pass_app
def bench_cmd(app: AppContext, model_ids: tuple[str, ...], quant: str, tasks: tuple[str, ...],
              languages: tuple[str, ...], samples: int, suite: str, reference: bool, wrong: bool, list_tasks: bool,
              max_tokens: int, gguf_path: str | None, fresh: bool, html_out: str | None, as_json: bool) -> None:
    """Run coding tasks through models (or the reference solutions) in a sandbox and report pass@k, speed, memory."""
    if suite == "tools" and not list_tasks and not reference:
        _run_tool_suite(app, model_ids, quant, gguf_path, _split(tasks), as_json)
    elif list_tasks:
        _list_tasks(suite, _split(tasks), _split(languages), as_json)
    elif reference:
        if model_ids:
            raise InvalidRequestError("--reference runs no model", fix="drop the model ids or drop --reference")
        _run_reference(app, suite, _split(tasks), _split(languages), wrong, as_json)
    else:
        if not model_ids:
            raise InvalidRequestError("no model to benchmark", fix="give model ids, or use --reference / --list-tasks")
        quants = ["Q4_K_M", "Q8_0"] if quant.upper() == "BOTH" else [quant]
        if gguf_path and (len(model_ids) != 1 or len(quants) != 1):
            raise InvalidRequestError("--gguf benchmarks one file", fix="give exactly one model id and one --quant")
        options = {"tasks": _split(tasks), "samples": samples, "suite": suite, "languages": _split(languages),
                   "max_tokens": max_tokens, "fresh": fresh, "model_path": gguf_path}
        _bench_models(app, [(m, q) for m in model_ids for q in quants], options, html_out, as_json)


def _run_tool_suite(app: AppContext, model_ids: tuple[str, ...], quant: str, gguf_path: str | None,
                    only: list[str] | None, as_json: bool) -> None:
    """`bench ID --suite tools`: the fixed tool-call suite; schema-valid, right-tool and spurious-call rates."""
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.bench.tool_suite import report_markdown, run_tool_suite

    if len(model_ids) != 1:
        raise InvalidRequestError("--suite tools runs one model at a time", fix="give exactly one model id")
    manager = ModelBenchmarker(app.settings, catalog=app.catalog).manager
    mid = model_ids[0]
    try:
        loaded = manager.load_file(gguf_path, model_id=mid) if gguf_path else manager.switch_model(mid, quant)
        label = f"{mid}:{loaded.quant or quant}"
        with _progress(not as_json) as update:
            report = run_tool_suite(manager, label, only=only, progress=update)
    finally:
        manager.close()
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(report_markdown(report))


def _list_tasks(suite: str, tasks: list[str] | None, languages: list[str] | None, as_json: bool) -> None:
    """`bench --list-tasks`: the suite's tasks, as a table or JSON."""
    from fmgguf.bench.tasks import load_suite, select_tasks

    chosen = select_tasks(load_suite(suite), tasks, languages)
    if as_json:
        emit_json([t.as_dict() for t in chosen])
        return
    from rich.table import Table

    from fmgguf.cli._common import console

    table = Table("id", "category", "language", "entry point", "title")
    for t in chosen:
        table.add_row(t.id, t.category, t.language, t.entry_point or "", t.title or t.prompt.splitlines()[0][:60])
    console().print(table)
    click.echo(f"{len(chosen)} tasks; one task = {100 / len(chosen):.1f} points of pass@1")


def _run_reference(app: AppContext, suite: str, tasks: list[str] | None, languages: list[str] | None,
                   wrong: bool, as_json: bool) -> None:
    """`bench --reference`: the suite's own solutions through the sandbox (exit != 0 when one fails)."""
    from fmgguf.bench.reports import summary_markdown
    from fmgguf.bench.runner import ModelBenchmarker

    bm = ModelBenchmarker(app.settings, catalog=app.catalog)
    with _progress(not as_json) as update:
        summary = bm.run_reference(suite, tasks, languages, "wrong" if wrong else "reference", progress=update)
    if as_json:
        emit_json(summary)
    else:
        click.echo(summary_markdown(summary))
    ov = summary.overall
    if not wrong and ov is not None and ov.solved < ov.tasks:
        raise BenchError(f"{ov.tasks - ov.solved} reference solution(s) did not pass",
                         fix="see the failing tasks above; the harness or the toolchain is broken")


def _bench_models(app: AppContext, runs: list[tuple[str, str]], options: dict[str, object], html_out: str | None,
                  as_json: bool) -> None:
    """`bench ID…`: each model × quant in turn, then the reports and the comparison."""
    from fmgguf.bench.reports import comparison_markdown, summary_markdown
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.bench.summary import BenchSummary
    from fmgguf.errors import InsufficientMemoryError, NotDownloadedError, UnknownQuantError

    bm = ModelBenchmarker(app.settings, catalog=app.catalog)
    summaries: list[BenchSummary] = []
    with _progress(not as_json) as update:
        for mid, qq in runs:
            try:
                summaries.append(bm.benchmark_model(mid, qq, progress=update, **options))
            except (UnknownQuantError, NotDownloadedError, InsufficientMemoryError) as exc:
                if len(runs) == 1:
                    raise
                # one of several runs cannot happen: say why in the report, run the others
                summaries.append(BenchSummary(mid, qq, status="skipped", reason=exc.one_line()))
    report = bm.generate_comparison_report(summaries)
    for s in summaries:
        _write_run_reports(s)
    if html_out:
        atomic_write_text(Path(html_out), report["html"])
    if as_json:
        emit_json({"runs": summaries, "comparison": report["rows"]})
        return
    for s in summaries:
        click.echo(summary_markdown(s))
    if len(summaries) > 1:
        click.echo("## Comparison\n")
        click.echo(comparison_markdown(summaries))
    click.echo("Runs: " + ", ".join(s.run_id or "?" for s in summaries) + "  (fmgguf compare RUN… --html out.html)")


def _write_run_reports(summary: BenchSummary) -> None:
    from fmgguf.bench.html_report import render_html
    from fmgguf.bench.reports import summary_markdown

    if summary.run_dir:
        run_dir = Path(summary.run_dir)
        atomic_write_text(run_dir / "report.md", summary_markdown(summary))
        atomic_write_text(run_dir / "report.html", render_html([summary], title=f"fmgguf bench: {summary.run_id}"))


@click.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained HTML page here.")
@json_option
@pass_app
def compare_cmd(app, runs, html_out, as_json) -> None:
    """Compare benchmark runs (run ids under the bench dir, run folders or summary.json files)."""
    from fmgguf.bench.html_report import render_html
    from fmgguf.bench.reports import comparison_markdown, comparison_rows, load_run

    summaries = [load_run(r, app.settings.bench_dir) for r in runs]
    if html_out:
        atomic_write_text(Path(html_out), render_html(summaries))
    if as_json:
        emit_json({"runs": [r.as_dict() for r in comparison_rows(summaries)]})
        return
    click.echo(comparison_markdown(summaries))
    if html_out:
        click.echo(f"wrote {html_out}")
