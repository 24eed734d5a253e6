"""The benchmark runner: generation serialized on the loaded model, test executions in a pool, records
streamed to JSONL under ``settings.bench_dir/<run id>/`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import resource
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from fmgguf._util import PerSettings, human_bytes
from fmgguf.bench.executors import ExecResult, Executor
from fmgguf.bench.metrics import summarize
from fmgguf.bench.run_store import Progress, Run, RunStore, skipped_record, task_record
from fmgguf.bench.summary import BenchSummary
from fmgguf.bench.tasks import Task, load_suite, select_tasks
from fmgguf.errors import BenchError, FIMNotSupportedError, FmggufError

if TYPE_CHECKING:
    from fmgguf.bench.lint import JsLinter
    from fmgguf.catalog.schema import ModelCard
    from fmgguf.runtime.engine.generation import GenerationResult
    from fmgguf.runtime.runner.loading import LoadedModel
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)
K = TypeVar("K")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


class Loaded(Protocol):
    """What a load returns that the benchmark reads."""

    load_s: float


class Generator(Protocol):
    """What the benchmark needs of a model manager (:class:`fmgguf.runtime.ModelManager` is one)."""

    # options and sampling keywords as ModelManager takes them (its Options and Sampling values)
    def switch_model(self, model_id: str, quant: str | None = None, **options: object) -> Loaded: ...
    def load_file(self, path: str | Path, model_id: str | None = None, **options: object) -> Loaded: ...
    def current_model(self) -> LoadedModel | None: ...
    def generate_text(self, prompt: str, **kw: object) -> GenerationResult: ...
    def chat(self, messages: list[dict], **kw: object) -> GenerationResult: ...
    def fill_in_middle(self, prefix: str, suffix: str, **kw: object) -> GenerationResult: ...


class Locator(Protocol):
    """What the benchmark needs of a downloader: where a downloaded model's file is."""

    def model_path(self, model_id: str, quant: str | None = None) -> Path: ...


class Resolver(Protocol):
    """What the benchmark needs of a catalog: ``id[:QUANT]`` -> (card, quant)."""

    def resolve(self, spec: str) -> tuple[ModelCard, str]: ...


class ModelBenchmarker:
    """Benchmarks models on a task suite; see :meth:`benchmark_model`.

    Takes its collaborators: ``manager`` loads and runs the models (None: the benchmarker builds its own
    :class:`ModelManager` from *its* settings on first need, never a process-wide one).
    """

    def __init__(self, settings: Settings | None = None, manager: Generator | None = None,
                 catalog: Resolver | None = None, executor: Executor | None = None,
                 downloader: Locator | None = None) -> None:
        from fmgguf.settings import load_settings

        self.settings = settings or load_settings()
        self._manager = manager
        self._catalog = catalog
        self._downloader = downloader
        self.executor = executor or Executor(timeout_s=self.settings.bench_timeout,
                                             memory_bytes=self.settings.bench_memory)
        self._linter: JsLinter | None = None

    @property
    def manager(self) -> Generator:
        if self._manager is None:
            from fmgguf.runtime.manager import ModelManager

            self._manager = ModelManager(self.settings, catalog=self.catalog)
        return self._manager

    @property
    def linter(self) -> JsLinter:
        """The ESLint runner for the JavaScript quality column (ESLint installs on first use)."""
        if self._linter is None:
            from fmgguf.bench.lint import JsLinter

            self._linter = JsLinter(self.settings)
        return self._linter

    def _lint_manifest(self, tasks: list[Task]) -> dict:
        """``{"lint": {"eslint": status}}`` when JavaScript answers will be linted (why not, when they won't)."""
        if not any(t.language == "javascript" and self.executor.available(t.language) for t in tasks):
            return {}
        return {"lint": {"eslint": self.linter.status().as_dict()}}

    def _execute_and_lint(self, task: Task, answer: str, quality: dict) -> ExecResult:
        res = self.executor.execute(task, answer)
        if task.language == "javascript" and self.linter.status().available:
            quality["eslint_findings"] = self.linter.findings([task.source(answer)], [task.entry_point])[0]
        return res

    @property
    def downloader(self) -> Locator:
        if self._downloader is None:
            from fmgguf.download import ModelDownloader

            self._downloader = ModelDownloader(self.settings, self.catalog)
        return self._downloader

    @property
    def catalog(self) -> Resolver:
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    # --- reference self-check ------------------------------------------------------------------
    def run_reference(self, suite: str = "builtin", tasks: list[str] | None = None,
                      languages: list[str] | None = None, which: str = "reference",
                      progress: Progress | None = None) -> BenchSummary:
        """Run the suite's own reference (or ``which="wrong"``) answers: the harness's self-check."""
        chosen = select_tasks(load_suite(suite), tasks, languages)
        runnable = [t for t in chosen if self.executor.available(t.language)]
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress:
                progress(done[0], len(runnable), "")

        t0 = time.monotonic()
        from fmgguf.bench.infill import fim_quality
        from fmgguf.bench.prompting import static_quality

        answers = [(t, t.reference if which == "reference" else (t.wrong or "")) for t in runnable]
        lint = self._lint_manifest(runnable)
        results = self.executor.execute_many(answers, workers=self.settings.bench_workers, progress=tick)
        qualities = [{**static_quality(t, t.source(a), True), **fim_quality(t, a)} for t, a in answers]
        js = [i for i, (t, _) in enumerate(answers) if t.language == "javascript"]
        if js and lint["lint"]["eslint"]["available"]:
            counts = self.linter.findings([answers[i][0].source(answers[i][1]) for i in js],
                                          [answers[i][0].entry_point for i in js])
            for i, n in zip(js, counts, strict=True):
                qualities[i]["eslint_findings"] = n
        records = [task_record(t, 0, r, None, q) for (t, _), r, q in zip(answers, results, qualities, strict=True)]
        records += [skipped_record(t, 0, "toolchain missing") for t in chosen if t not in runnable]
        meta = {"model": which, "quant": None, "suite": suite, "kind": "reference",
                "wall_s": time.monotonic() - t0, **_manifest(self.executor), **lint}
        return summarize(records, 1, meta)

    # --- one model -----------------------------------------------------------------------------
    def benchmark_model(self, model_id: str, quant: str = "Q4_K_M", tasks: list[str] | None = None,
                        samples: int = 1, suite: str = "builtin", languages: list[str] | None = None,
                        max_tokens: int = 512, temperature: float | None = None, fresh: bool = False,
                        model_path: str | Path | None = None, progress: Progress | None = None) -> BenchSummary:
        """Generate ``samples`` answers per task with the model, execute them, and summarize.

        A model that does not fit this machine is skipped with the fit plan's reason (the summary's
        ``status`` is "skipped"). ``model_path`` loads a local GGUF instead of the store's file.
        """
        if samples < 1:
            raise BenchError(f"samples must be >= 1, not {samples}", fix="use --samples 1 or more")
        chosen = select_tasks(load_suite(suite), tasks, languages)
        suite_name = Path(suite).stem if suite not in ("builtin", "humaneval", "humaneval-infill") else suite
        run_id = _safe(f"{model_id}-{quant}-{suite_name}-n{samples}")
        store = RunStore(self.settings.bench_dir / run_id)
        meta: dict[str, object] = {"model": model_id, "quant": quant, "suite": suite_name, "run_id": run_id,
                                "run_dir": str(store.root), "kind": "model", "max_tokens": max_tokens,
                                "started": _now(), **_manifest(self.executor)}
        skip = None if model_path else self._fit_reason(model_id, quant)
        if skip:
            return store.write_summary(BenchSummary(**meta, status="skipped", reason=skip))
        if fresh:
            store.reset()
        done = {(r["task_id"], r["sample"]) for r in store.load()}
        todo = [(t, s) for t in chosen for s in range(samples) if (t.id, s) not in done]
        temp = temperature if temperature is not None else (0.0 if samples == 1 else 0.8)
        meta.update(temperature=temp, resumed=len(done), **self._lint_manifest([t for t, _ in todo] or chosen))
        if todo:
            meta["load_s"] = self._load(model_id, quant, model_path)
        info = self.manager.current_model()
        if info is not None:
            meta.update(n_ctx=info.n_ctx, n_gpu_layers=info.n_gpu_layers, model_memory_bytes=info.memory,
                        chat_template=info.chat_template)
        run = Run(store, len(chosen) * samples, len(done), progress)
        self._generate_all(run, todo, bool(info and info.chat_template), max_tokens, temp)
        records = [r for r in store.load() if r["task_id"] in {t.id for t in chosen}]
        meta.update(peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, finished=_now())
        return store.write_summary(summarize(records, samples, meta))

    def _load(self, model_id: str, quant: str, model_path: str | Path | None) -> float | None:
        """Load the model (the store's file, or ``model_path``) and warm it up; the load time."""
        mgr = self.manager
        loaded = mgr.load_file(model_path, model_id=model_id) if model_path else mgr.switch_model(model_id, quant)
        mgr.generate_text("def hello():", max_tokens=4, temperature=0.0, seed=0)  # warm-up
        return loaded.load_s

    def _generate_all(self, run: Run, todo: list[tuple[Task, int]], use_chat: bool, max_tokens: int,
                      temp: float) -> None:
        """Generate each answer in turn (one model), executing the tests in a pool meanwhile."""
        from fmgguf.bench.infill import fim_quality
        from fmgguf.bench.prompting import static_quality

        with ThreadPoolExecutor(max_workers=max(1, self.settings.bench_workers)) as pool:
            for task, sample in todo:
                if not self.executor.available(task.language):
                    run.record(skipped_record(task, sample, f"{task.language} toolchain missing"))
                    continue
                try:
                    answer, gen, extracted = self._generate(task, sample, use_chat, max_tokens, temp)
                except FIMNotSupportedError as exc:
                    run.record(skipped_record(task, sample, exc.one_line()))
                    continue
                quality = {**static_quality(task, task.source(answer), extracted), **fim_quality(task, answer)}
                fut = pool.submit(self._execute_and_lint, task, answer, quality)
                fut.add_done_callback(
                    lambda f, t=task, s=sample, g=gen, a=answer, q=quality: run.executed(f, t, s, g, a, q))

    def _fit_reason(self, model_id: str, quant: str) -> str | None:
        try:
            from fmgguf.runtime.plan.fit import plan_for_card

            card, q = self.catalog.resolve(f"{model_id}:{quant}")
            path = None
            try:  # the local file's header when it is there (no network), else the planner's fallbacks
                path = self.downloader.model_path(card.id, q)
            except FmggufError:
                path = None
            plan = plan_for_card(card, q, settings=self.settings, path=path, remote=path is None)
        except FmggufError:
            raise
        except Exception:  # noqa: BLE001 - a planner failure must not stop a benchmark
            log.debug("fit plan failed for %s", model_id, exc_info=True)
            return None
        if plan.fits:
            return None
        return (f"{plan.label}: needs {human_bytes(plan.ram_needed)} RAM + {human_bytes(plan.vram_needed)} VRAM, "
                f"{human_bytes(plan.ram_free)} RAM and {human_bytes(plan.vram_free)} VRAM free")

    def _generate(self, task: Task, sample: int, use_chat: bool, max_tokens: int,
                  temp: float) -> tuple[str, dict, bool]:
        from fmgguf.bench.prompting import (
            HUMANEVAL_STOPS,
            STOPS,
            answer_from_chat,
            chat_messages,
            completion_answer,
        )

        mgr = self.manager
        kw = {"max_tokens": max_tokens, "temperature": temp, "seed": 1234 + sample}
        if task.is_fim:
            res = mgr.fill_in_middle(task.fim_prefix, task.fim_suffix, **kw)
            answer, extracted = res.text, True
        elif use_chat:
            res = mgr.chat(chat_messages(task), **kw)
            answer, extracted = answer_from_chat(task, res.text)
        else:
            prompt = task.stub or task.prompt
            if task.language == "sql" and task.fixture:
                prompt = "-- SQLite schema:\n" + "\n".join(f"-- {ln}" for ln in task.fixture.splitlines()) + "\n" + prompt
            stops = HUMANEVAL_STOPS if task.completion_mode else STOPS[task.language]
            res = mgr.generate_text(prompt, stop=stops, **kw)
            answer, extracted = completion_answer(task, res.text), True
        gen = {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens, "ttft_s": res.ttft_s,
               "tokens_per_s": res.tokens_per_s, "total_s": res.total_s, "finish_reason": res.finish_reason,
               "stop_reason": res.stop_reason}
        return answer, gen, extracted

    # --- the seed's API ------------------------------------------------------------------------
    async def benchmark_multiple_models(self, model_configs: Mapping[str, object],
                                        **kw: object) -> dict[str, BenchSummary]:
        """Benchmark each ``{id: config}`` in turn (config: a ModelConfig, a dict or a quant string)."""
        out: dict[str, BenchSummary] = {}
        for model_id, cfg in model_configs.items():
            opts = dict(kw)
            quant = "Q4_K_M"
            if isinstance(cfg, str):
                quant = cfg
            elif isinstance(cfg, dict):
                quant = cfg.get("quant", quant)
                opts.update({k: v for k, v in cfg.items() if k != "quant"})
            elif cfg is not None and hasattr(cfg, "quant"):
                quant = cfg.quant
            out[model_id] = await asyncio.to_thread(self.benchmark_model, model_id, quant, **opts)
        return out

    def generate_comparison_report(self, summaries: Mapping[K, BenchSummary] | list[BenchSummary]) -> dict:
        """Markdown, JSON-ready rows and a self-contained HTML page comparing the runs."""
        from fmgguf.bench.html_report import render_html
        from fmgguf.bench.reports import comparison_markdown, comparison_rows

        runs = list(summaries.values()) if isinstance(summaries, Mapping) else list(summaries)
        return {"markdown": comparison_markdown(runs), "rows": [r.as_dict() for r in comparison_rows(runs)],
                "html": render_html(runs)}


def _manifest(executor: Executor) -> dict:
    caps = executor.sandbox.caps
    from importlib.metadata import PackageNotFoundError, version

    try:
        llama_v: str | None = version("llama_cpp_python")
    except PackageNotFoundError:
        llama_v = None
    return {"host": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                     "cpus": os.cpu_count(), "python": platform.python_version(), "llama_cpp_python": llama_v},
            "sandbox": {k: caps[k] for k in ("root", "drop_privileges", "network_isolated", "notes")},
            "limits": {"timeout_s": executor.sandbox.limits.timeout_s,
                       "memory_bytes": executor.sandbox.limits.memory_bytes}}


def _build_default(settings: Settings) -> ModelBenchmarker:
    from fmgguf.download import get_model_downloader
    from fmgguf.runtime import get_model_manager

    return ModelBenchmarker(settings, manager=get_model_manager(settings), downloader=get_model_downloader(settings))


_DEFAULT: PerSettings[ModelBenchmarker] = PerSettings(_build_default)


def get_model_benchmarker(settings: Settings | None = None) -> ModelBenchmarker:
    """The shared benchmarker for these settings (one per distinct settings), on the shared manager and downloader."""
    return _DEFAULT.get(settings)
