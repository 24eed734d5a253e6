"""The benchmark runner: generation serialized on the loaded model, test executions in a pool, records
streamed to JSONL under ``settings.bench_dir/<run id>/`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf._util import atomic_write_text, human_bytes
from fmgguf.bench.executors import ExecResult, Executor
from fmgguf.bench.metrics import summarize
from fmgguf.bench.tasks import Task, load_suite, select_tasks
from fmgguf.errors import BenchError, FIMNotSupportedError, FmggufError

if TYPE_CHECKING:
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


class RunStore:
    """One run's folder: ``records.jsonl`` (appended line by line), ``summary.json`` (written atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records_path = root / "records.jsonl"
        self._lock = threading.Lock()
        self._tail_checked = False

    def load(self) -> list[dict]:
        out = []
        if self.records_path.exists():
            for line in self.records_path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut short by an interrupted run
                    continue
        return out

    def append(self, record: dict) -> None:
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.records_path, "a", encoding="utf-8") as fh:
                if not self._tail_checked:  # a line cut short by an interrupted run: start a fresh one
                    self._tail_checked = True
                    if fh.tell() > 0:
                        with open(self.records_path, "rb") as rb:
                            rb.seek(-1, os.SEEK_END)
                            if rb.read(1) != b"\n":
                                fh.write("\n")
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()

    def reset(self) -> None:
        self.records_path.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> Path:
        path = self.root / "summary.json"
        atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return path


class ModelBenchmarker:
    """Benchmarks models on a task suite; see :meth:`benchmark_model`."""

    def __init__(self, settings: Settings | None = None, manager: Any = None, catalog: Any = None,
                 executor: Executor | None = None) -> None:
        from fmgguf.settings import load_settings

        self.settings = settings or load_settings()
        self._manager = manager
        self._catalog = catalog
        self.executor = executor or Executor(timeout_s=self.settings.bench_timeout,
                                             memory_bytes=self.settings.bench_memory)
        self._linter: Any = None

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from fmgguf.runtime import get_model_manager

            self._manager = get_model_manager(self.settings)
        return self._manager

    @property
    def linter(self) -> Any:
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
    def catalog(self) -> Any:
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    # --- reference self-check ------------------------------------------------------------------
    def run_reference(self, suite: str = "builtin", tasks: list[str] | None = None,
                      languages: list[str] | None = None, which: str = "reference",
                      progress: Progress | None = None) -> dict:
        """Run the suite's own reference (or ``which="wrong"``) answers: the harness's self-check."""
        chosen = select_tasks(load_suite(suite), tasks, languages)
        runnable = [t for t in chosen if self.executor.available(t.language)]
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress:
                progress(done[0], len(runnable), "")

        t0 = time.monotonic()
        from fmgguf.bench.prompting import static_quality

        answers = [(t, t.reference if which == "reference" else (t.wrong or "")) for t in runnable]
        lint = self._lint_manifest(runnable)
        results = self.executor.execute_many(answers, workers=self.settings.bench_workers, progress=tick)
        qualities = [static_quality(t, t.source(a), True) for t, a in answers]
        js = [i for i, (t, _) in enumerate(answers) if t.language == "javascript"]
        if js and lint["lint"]["eslint"]["available"]:
            counts = self.linter.findings([answers[i][0].source(answers[i][1]) for i in js],
                                          [answers[i][0].entry_point for i in js])
            for i, n in zip(js, counts, strict=True):
                qualities[i]["eslint_findings"] = n
        records = [_record(t, 0, r, None, q) for (t, _), r, q in zip(answers, results, qualities, strict=True)]
        records += [_skipped(t, 0, "toolchain missing") for t in chosen if t not in runnable]
        meta = {"model": which, "quant": None, "suite": suite, "kind": "reference",
                "wall_s": time.monotonic() - t0, **_manifest(self.executor), **lint}
        return summarize(records, 1, meta)

    # --- one model -----------------------------------------------------------------------------
    def benchmark_model(self, model_id: str, quant: str = "Q4_K_M", tasks: list[str] | None = None,
                        samples: int = 1, suite: str = "builtin", languages: list[str] | None = None,
                        max_tokens: int = 512, temperature: float | None = None, fresh: bool = False,
                        model_path: str | Path | None = None, progress: Progress | None = None) -> dict:
        """Generate ``samples`` answers per task with the model, execute them, and summarize.

        A model that does not fit this machine is skipped with the fit plan's reason (the summary's
        ``status`` is "skipped"). ``model_path`` loads a local GGUF instead of the store's file.
        """
        if samples < 1:
            raise BenchError(f"samples must be >= 1, not {samples}", fix="use --samples 1 or more")
        chosen = select_tasks(load_suite(suite), tasks, languages)
        suite_name = Path(suite).stem if suite not in ("builtin", "humaneval") else suite
        run_id = _safe(f"{model_id}-{quant}-{suite_name}-n{samples}")
        store = RunStore(self.settings.bench_dir / run_id)
        meta: dict[str, Any] = {"model": model_id, "quant": quant, "suite": suite_name, "run_id": run_id,
                                "run_dir": str(store.root), "kind": "model", "max_tokens": max_tokens,
                                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                **_manifest(self.executor)}
        skip = None if model_path else self._fit_reason(model_id, quant)
        if skip:
            summary = {**meta, "status": "skipped", "reason": skip}
            store.write_summary(summary)
            return summary
        if fresh:
            store.reset()
        done = {(r["task_id"], r["sample"]) for r in store.load()}
        todo = [(t, s) for t in chosen for s in range(samples) if (t.id, s) not in done]
        temp = temperature if temperature is not None else (0.0 if samples == 1 else 0.8)
        meta.update(temperature=temp, resumed=len(done))
        mgr = self.manager
        if todo:
            if model_path:
                loaded = mgr.load_file(model_path, model_id=model_id)
            else:
                loaded = mgr.switch_model(model_id, quant)
            meta["load_s"] = getattr(loaded, "load_s", None)
            mgr.generate_text("def hello():", max_tokens=4, temperature=0.0, seed=0)  # warm-up
        info = mgr.current_model() or {}
        meta.update(n_ctx=info.get("n_ctx"), n_gpu_layers=info.get("n_gpu_layers"),
                    model_memory_bytes=info.get("memory"), chat_template=info.get("chat_template"))
        total, count = len(chosen) * samples, [len(done)]
        count_lock = threading.Lock()

        def advance(task_id: str) -> None:
            with count_lock:
                count[0] += 1
                n = count[0]
            if progress:
                progress(n, total, task_id)

        def finished(fut: Future, task: Task, sample: int, gen: dict | None, answer: str, quality: dict) -> None:
            try:
                res: ExecResult = fut.result()
                rec = _record(task, sample, res, gen, quality)
            except FmggufError as exc:
                rec = {**_skipped(task, sample, exc.one_line()), "outcome": "error", "gen": gen}
            rec["answer"] = answer[:20000]
            store.append(rec)
            advance(task.id)

        use_chat = bool(info.get("chat_template"))
        meta.update(self._lint_manifest([t for t, _ in todo] or chosen))
        with ThreadPoolExecutor(max_workers=max(1, self.settings.bench_workers)) as pool:
            for task, sample in todo:
                if not self.executor.available(task.language):
                    store.append(_skipped(task, sample, f"{task.language} toolchain missing"))
                    advance(task.id)
                    continue
                try:
                    answer, gen, extracted = self._generate(task, sample, use_chat, max_tokens, temp)
                except FIMNotSupportedError as exc:
                    store.append(_skipped(task, sample, exc.one_line()))
                    advance(task.id)
                    continue
                from fmgguf.bench.prompting import static_quality

                quality = static_quality(task, task.source(answer), extracted)
                fut = pool.submit(self._execute_and_lint, task, answer, quality)
                fut.add_done_callback(lambda f, t=task, s=sample, g=gen, a=answer, q=quality: finished(f, t, s, g, a, q))
        records = [r for r in store.load() if r["task_id"] in {t.id for t in chosen}]
        meta["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        summary = {**summarize(records, samples, meta), "status": "done"}
        store.write_summary(summary)
        return summary

    def _fit_reason(self, model_id: str, quant: str) -> str | None:
        try:
            from fmgguf.runtime.fit import plan_for_card

            card, q = self.catalog.resolve(f"{model_id}:{quant}")
            path = None
            try:  # the local file's header when it is there (no network), else the planner's fallbacks
                from fmgguf.download import ModelDownloader

                path = ModelDownloader(self.settings, self.catalog).model_path(card.id, q)
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
        gen = {k: getattr(res, k, None) for k in ("prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s",
                                                  "total_s", "finish_reason")}
        return answer, gen, extracted

    # --- the seed's API ------------------------------------------------------------------------
    async def benchmark_multiple_models(self, model_configs: dict[str, Any], **kw: Any) -> dict[str, dict]:
        """Benchmark each ``{id: config}`` in turn (config: a ModelConfig, a dict or a quant string)."""
        out: dict[str, dict] = {}
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

    def generate_comparison_report(self, summaries: dict[str, dict] | list[dict]) -> dict:
        """Markdown, JSON-ready rows and a self-contained HTML page comparing the runs."""
        from fmgguf.bench.html_report import render_html
        from fmgguf.bench.reports import comparison_markdown, comparison_rows

        runs = list(summaries.values()) if isinstance(summaries, dict) else list(summaries)
        return {"markdown": comparison_markdown(runs), "rows": comparison_rows(runs), "html": render_html(runs)}


def _record(task: Task, sample: int, res: ExecResult, gen: dict | None, quality: dict | None) -> dict:
    return {"task_id": task.id, "category": task.category, "language": task.language, "sample": sample,
            "outcome": res.outcome, "detail": res.detail[:500], "exec_s": round(res.duration_s, 4),
            "compile_warnings": res.compile_warnings, "compile_s": res.compile_s,
            "max_rss_bytes": res.max_rss_bytes, "gen": gen, "quality": quality or {}}


def _skipped(task: Task, sample: int, why: str) -> dict:
    return {"task_id": task.id, "category": task.category, "language": task.language, "sample": sample,
            "outcome": "skipped", "detail": why, "gen": None, "quality": {}}


def _manifest(executor: Executor) -> dict:
    caps = executor.sandbox.caps
    try:
        from importlib.metadata import version

        llama_v = version("llama_cpp_python")
    except Exception:  # noqa: BLE001
        llama_v = None
    return {"host": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                     "cpus": os.cpu_count(), "python": platform.python_version(), "llama_cpp_python": llama_v},
            "sandbox": {k: caps[k] for k in ("root", "drop_privileges", "network_isolated", "notes")},
            "limits": {"timeout_s": executor.sandbox.limits.timeout_s,
                       "memory_bytes": executor.sandbox.limits.memory_bytes}}


_default: dict[str, ModelBenchmarker] = {}
_default_lock = threading.Lock()


def get_model_benchmarker(settings: Settings | None = None) -> ModelBenchmarker:
    """The process-wide benchmarker (built on first call; ``settings`` only matter then)."""
    with _default_lock:
        if "b" not in _default:
            _default["b"] = ModelBenchmarker(settings)
        return _default["b"]
