"""`fmgguf demo` (what `make run` runs): the whole job, offline, on a tiny embedded model.

local mirror → pull (verified) → verify → fit plan → load → generate → a small benchmark.
It works in a throw-away FMGGUF_HOME and hub cache, so the user's own store and catalog are
never touched (``--keep DIR`` keeps that home for a look afterwards).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

from fmgguf.cli._common import AppContext, human_bytes, pass_app

DEMO_ID = "tiny-qwen2-coder"
DEMO_REPO = "fmgguf-demo/tiny-qwen2-coder-GGUF"


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n}/7] {text}", bold=True)


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the demo's home in this folder.")
@click.option("--tasks", default=6, show_default=True, help="How many benchmark tasks to run at the end (0 = none).")
@pass_app
def demo_cmd(app: AppContext, keep: Path | None, tasks: int) -> None:
    """Run the whole job offline on a tiny model built here (no GPU, no internet needed)."""
    from fmgguf.mirror.server import MirrorServer
    from fmgguf.testing import build_tiny_model, tiny_card, tiny_repo_files

    base = app.settings
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="fmgguf-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    settings = base.replace(home=home, catalog_file=home / "catalog.yaml", hub_cache=home / "hub", offline=False,
                            config_file=home / "config.yaml", keep_alive=0.0)
    t_start = time.perf_counter()
    try:
        _step(1, "Building a tiny but real llama.cpp model (qwen2 architecture, real Qwen2 tokenizer)")
        t0 = time.perf_counter()
        build_tiny_model("qwen2", "unit", "F16")
        files = tiny_repo_files(DEMO_ID, arch="qwen2", size="unit", quants=("Q4_K_M", "Q8_0"))
        card = tiny_card(DEMO_ID, arch="qwen2", size="unit", repo=DEMO_REPO, quants=("Q4_K_M", "Q8_0"))
        from fmgguf.catalog.user import add_user_entry

        add_user_entry(settings, card)
        for name, path in files.items():
            click.echo(f"  {name}  {human_bytes(path.stat().st_size)}")
        click.echo(f"  registered as {DEMO_ID} in the demo catalog, SHA256 pinned ({time.perf_counter() - t0:.1f} s)")

        with MirrorServer({DEMO_REPO: files}) as hub:
            settings = settings.replace(hf_endpoint=hub.endpoint)
            _step(2, f"Serving it from a hub-compatible mirror on {hub.endpoint} (HF_ENDPOINT)")
            from fmgguf.catalog import Catalog
            from fmgguf.download import ModelDownloader

            catalog = Catalog.load(settings)
            downloader = ModelDownloader(settings=settings, catalog=catalog)

            _step(3, f"fmgguf pull {DEMO_ID} --quant Q4_K_M  (hashed while streaming)")
            path = downloader.download_model(DEMO_ID, quant="Q4_K_M")
            sha = card["variants"]["Q4_K_M"]["files"][0]["sha256"]
            click.echo(f"  {path.name}: sha256 {sha} verified")

        _step(4, "fmgguf verify  (re-hash against the pin, with the network gone)")
        settings = settings.replace(offline=True)
        downloader = ModelDownloader(settings=settings, catalog=Catalog.load(settings))
        ok = downloader.verify_model_integrity(DEMO_ID, "Q4_K_M")
        click.echo(f"  {'verified' if ok else 'FAILED'}")

        _step(5, "fmgguf fit  (how much of it fits on this machine's devices)")
        from fmgguf.runtime.fit import plan_for_file

        plan = plan_for_file(path, n_ctx=2048, settings=settings)
        click.echo(f"  {plan.label}: {plan.n_gpu_layers} of {plan.n_layers} layers on a GPU, "
                   f"RAM needed {human_bytes(plan.ram_needed)}, VRAM needed {human_bytes(plan.vram_needed)}")

        _step(6, "fmgguf run  (load with the plan, then stream a completion)")
        from fmgguf.runtime import ModelManager

        manager_catalog = Catalog.load(settings)
        manager = ModelManager(settings=settings, catalog=manager_catalog, downloader=downloader)
        switched = manager.switch_model(DEMO_ID, quant="Q4_K_M", n_ctx=2048)
        click.echo(f"  loaded in {switched.load_s:.2f} s; prompt: 'def fibonacci(n):'")
        stream = manager.generate_text("def fibonacci(n):", max_tokens=32, temperature=0.0, seed=0, stream=True)
        click.echo("  output: ", nl=False)
        for piece in stream:
            click.echo(piece.replace("\n", "\\n"), nl=False)
        res = stream.result
        click.echo(f"\n  {res.completion_tokens} tokens, first after {res.ttft_s * 1000:.0f} ms, "
                   f"{res.tokens_per_s:.0f} tokens/s (random weights: gibberish is expected)")

        if tasks > 0:
            _step(7, f"fmgguf bench  ({tasks} executed tasks; a random model scores about 0 — "
                     "the harness is proved by reference solutions in the tests)")
            from fmgguf.bench.reports import summary_markdown
            from fmgguf.bench.runner import ModelBenchmarker
            from fmgguf.bench.tasks import load_suite

            bench = ModelBenchmarker(settings=settings, manager=manager, catalog=manager_catalog)
            suite = load_suite("builtin")
            picked: list[str] = []
            for lang in ("python", "javascript", "cpp", "sql", "fim", "barrier"):
                picked += [t.id for t in suite if t.category == lang][:1]
            summary = bench.benchmark_model(DEMO_ID, quant="Q4_K_M", tasks=picked[:tasks], samples=1, max_tokens=48)
            click.echo(summary_markdown(summary))
        manager.unload()
        click.secho(f"\nDone in {time.perf_counter() - t_start:.0f} s. Next: `fmgguf list`, "
                    "`fmgguf pull qwen2.5-coder-1.5b-instruct` on a connected machine, `fmgguf serve`.", bold=True)
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
        else:
            click.echo(f"demo home kept in {home}")
