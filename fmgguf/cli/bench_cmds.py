"""`fmgguf bench` and `fmgguf compare`."""

from __future__ import annotations

from pathlib import Path

import click

from fmgguf._util import atomic_write_text
from fmgguf.cli._common import emit_json, json_option, pass_app
from fmgguf.errors import BenchError, InvalidRequestError


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for part in values for v in part.split(",") if v.strip()]
    return out or None


def _progress_bar(enabled: bool):
    """A rich progress bar on stderr (a no-op when stderr is not a terminal or JSON is asked)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[current]}"), console=Console(stderr=True), transient=True)
    holder: dict = {}

    def update(done: int, total: int, current: str) -> None:
        if "id" not in holder:
            holder["id"] = prog.add_task("bench", total=total, current="")
        prog.update(holder["id"], completed=done, total=total, current=current)

    return prog, update


@click.command("bench")
@click.argument("model_ids", nargs=-1)
@click.option("--quant", default="Q4_K_M", show_default=True, help="Q4_K_M, Q8_0 or both.")
@click.option("--tasks", "tasks", multiple=True, help="Task ids (comma-separated; a trailing * is a prefix).")
@click.option("--language", "languages", multiple=True, help="python, javascript, cpp, sql, fim, barrier.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 200),
              help="Answers per task (pass@k needs k <= samples; >1 samples at temperature 0.8).")
@click.option("--suite", default="builtin", show_default=True, help="builtin, humaneval or a JSONL/YAML file.")
@click.option("--reference", is_flag=True, help="Run the suite's reference/canonical solutions (harness self-check).")
@click.option("--wrong", is_flag=True, hidden=True, help="With --reference: run the deliberately wrong answers.")
@click.option("--list-tasks", is_flag=True, help="List the suite's tasks and exit.")
@click.option("--max-tokens", default=512, show_default=True, type=int, help="Generation limit per answer.")
@click.option("--gguf", "gguf_path", type=click.Path(exists=True, dir_okay=False),
              help="Benchmark this local GGUF file (one model id names it).")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an interrupted run.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Also write a comparison HTML page.")
@json_option
@pass_app
def bench_cmd(app, model_ids, quant, tasks, languages, samples, suite, reference, wrong, list_tasks, max_tokens,
              gguf_path, fresh, html_out, as_json) -> None:
    """Run coding tasks through models (or the reference solutions) in a sandbox and report pass@k, speed, memory."""
    from fmgguf.bench.tasks import load_suite, select_tasks

    if list_tasks:
        chosen = select_tasks(load_suite(suite), _split(tasks), _split(languages))
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
        return
    from fmgguf.bench.reports import comparison_markdown, summary_markdown
    from fmgguf.bench.runner import ModelBenchmarker

    bm = ModelBenchmarker(app.settings)
    prog, update = _progress_bar(not as_json)
    if reference:
        if model_ids:
            raise InvalidRequestError("--reference runs no model", fix="drop the model ids or drop --reference")
        if prog:
            prog.start()
        try:
            summary = bm.run_reference(suite, _split(tasks), _split(languages), "wrong" if wrong else "reference",
                                       progress=update)
        finally:
            if prog:
                prog.stop()
        if as_json:
            emit_json(summary)
        else:
            click.echo(summary_markdown(summary))
        ov = summary["overall"]
        if not wrong and ov["solved"] < ov["tasks"]:
            raise BenchError(f"{ov['tasks'] - ov['solved']} reference solution(s) did not pass",
                             fix="see the failing tasks above; the harness or the toolchain is broken")
        return
    if not model_ids:
        raise InvalidRequestError("no model to benchmark", fix="give model ids, or use --reference / --list-tasks")
    q = quant.upper()
    quants = ["Q4_K_M", "Q8_0"] if q == "BOTH" else [quant]
    if gguf_path and (len(model_ids) != 1 or len(quants) != 1):
        raise InvalidRequestError("--gguf benchmarks one file", fix="give exactly one model id and one --quant")
    summaries = []
    if prog:
        prog.start()
    try:
        from fmgguf.errors import InsufficientMemoryError, NotDownloadedError, UnknownQuantError

        several = len(model_ids) * len(quants) > 1
        for mid in model_ids:
            for qq in quants:
                try:
                    summaries.append(bm.benchmark_model(mid, qq, tasks=_split(tasks), samples=samples, suite=suite,
                                                        languages=_split(languages), max_tokens=max_tokens,
                                                        fresh=fresh, model_path=gguf_path, progress=update))
                except (UnknownQuantError, NotDownloadedError, InsufficientMemoryError) as exc:
                    if not several:
                        raise
                    # one of several runs cannot happen: say why in the report, run the others
                    summaries.append({"model": mid, "quant": qq, "status": "skipped", "reason": exc.one_line()})
    finally:
        if prog:
            prog.stop()
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
    click.echo("Runs: " + ", ".join(s.get("run_id", "?") for s in summaries) + "  (fmgguf compare RUN… --html out.html)")


def _write_run_reports(summary: dict) -> None:
    from fmgguf.bench.html_report import render_html
    from fmgguf.bench.reports import summary_markdown

    run_dir = summary.get("run_dir")
    if run_dir:
        atomic_write_text(Path(run_dir) / "report.md", summary_markdown(summary))
        atomic_write_text(Path(run_dir) / "report.html", render_html([summary], title=f"fmgguf bench: {summary.get('run_id')}"))


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
        emit_json({"runs": comparison_rows(summaries)})
        return
    click.echo(comparison_markdown(summaries))
    if html_out:
        click.echo(f"wrote {html_out}")
