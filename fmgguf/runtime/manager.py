"""The model manager: the models resident here, switched, queued, generated from, unloaded.

It decides *what* to load and *how* (the downloader's path, the GGUF validator, the fit plan) and
admits requests per model: each resident model has its own queue (``SlotQueue``) with as many
slots as its engine takes streams at once (a runner: ``parallel``; in-process: one), FIM first,
``max_queue`` waiting, then :class:`BusyError`. Models stream side by side; memory (the fit plan)
and ``max_loaded`` decide what is resident, with LRU eviction, ``pinned`` and keep-alives (see
:mod:`fmgguf.runtime.runner.supervisor`). ``switch_model``/``load_file`` keep the seed's meaning:
the new model replaces the selected one. Isolation "process" (the default) keeps each model in a
runner process of its own: an abort kills only that runner, the calls in flight get
:class:`RunnerCrashedError`, the next call starts it again; "inprocess" keeps llama.cpp here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import ContextOverflowError, InvalidRequestError, RunnerCrashedError
from fmgguf.runtime import requests
from fmgguf.runtime.engine.drafting import default_mode
from fmgguf.runtime.engine.engine import GenerationStats
from fmgguf.runtime.engine.engine_api import CancelFlag
from fmgguf.runtime.engine.generation import GenerationResult, GenerationStream, ModelGone
from fmgguf.runtime.prompt.fim_again import FimRun, again_of
from fmgguf.runtime.requests import Ask
from fmgguf.runtime.router import Router
from fmgguf.runtime.runner.health import CrashRecord
from fmgguf.runtime.runner.loading import (
    FileFacts,
    LoadedModel,
    SwitchResult,
    available_models,
    check_load_options,
    engine_starter,
)
from fmgguf.runtime.runner.residency import IdleWatcher, LoadSpec, Resident
from fmgguf.runtime.runner.supervisor import Supervisor
from fmgguf.runtime.tools.tools import ToolRequest

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog, ModelCard
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.engine.engine_api import EngineStarter
    from fmgguf.runtime.plan.fit import DraftSource
    from fmgguf.runtime.prompt.fim_stop import FimCutter
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

ISOLATIONS = ("process", "inprocess")
Sampling = object  # a sampling option's value (numbers; a grammar constraint)
Options = object  # a load option's value (checked by load_request)


class ModelManager:
    """Loads models and answers generate/chat/FIM requests against them, thread-safely.

    ``isolation``/``max_loaded``/``parallel`` default to the settings; ``validator(path, cache)``
    checks a file before llama.cpp sees it; ``starter`` replaces the engine starter ``isolation`` picks.
    """

    def __init__(self, settings: "Settings | None" = None, catalog: "Catalog | None" = None,
                 downloader: "ModelDownloader | None" = None, *, max_queue: int = 8, keep_alive: float | None = None,
                 queue_timeout: float | None = None, isolation: str | None = None, max_loaded: int | None = None,
                 validator: Callable[[Path, dict], FileFacts] | None = None,
                 starter: "EngineStarter | None" = None, parallel: int | None = None) -> None:
        if settings is None:
            from fmgguf.settings import load_settings

            settings = load_settings()
        isolation = isolation or settings.isolation
        if isolation not in ISOLATIONS:
            raise InvalidRequestError(f"isolation {isolation!r} is unknown", fix="use process or inprocess")
        self._catalog = catalog
        self._downloader = downloader
        self.queue_timeout = queue_timeout
        self.max_queue = max(0, int(max_queue))
        self._settings = settings = settings.replace(parallel=int(parallel)) if parallel else settings
        self.sup = Supervisor(settings, starter=starter or engine_starter(isolation, settings.parallel),
                              isolation=isolation, max_loaded=max_loaded or settings.max_loaded_models,
                              keep_alive=float(settings.keep_alive if keep_alive is None else keep_alive),
                              max_queue=self.max_queue, **({"validator": validator} if validator else {}))
        self._idle: IdleWatcher[ModelManager] = IdleWatcher(self, lambda m: m.sup.sweep())
        self.router = Router(self.sup, lambda: self.catalog, lambda: self.downloader)
        self.sup.draft_for = self._draft_for

    def _draft_for(self, spec: LoadSpec) -> "DraftSource | None":
        """The draft model a load of ``spec`` brings under the ``speculative`` setting (read at each load)."""
        from fmgguf.runtime.draft_pick import pick_draft

        if not self.settings.speculative.startswith("draft"):
            return None
        return pick_draft(self.settings.speculative, spec.path, spec.card, self.catalog, self.downloader)

    # --- collaborators (built on first use) --------------------------------------------------
    @property
    def settings(self) -> "Settings":
        return self._settings

    @settings.setter
    def settings(self, value: "Settings") -> None:
        self._settings = self.sup.settings = value

    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    @catalog.setter
    def catalog(self, value: "Catalog") -> None:
        """A fresh catalog (the server's hot reload); resident models stay loaded."""
        self._catalog = value

    @property
    def downloader(self) -> "ModelDownloader":
        if self._downloader is None:
            from fmgguf.download import ModelDownloader

            self._downloader = ModelDownloader(self.settings, catalog=self.catalog)
        return self._downloader

    @property
    def isolation(self) -> str:
        return self.sup.isolation

    @property
    def keep_alive(self) -> float:
        return self.sup.keep_alive

    @keep_alive.setter
    def keep_alive(self, value: float) -> None:
        self.sup.keep_alive = float(value)

    @property
    def queue_depth(self) -> int:  # requests waiting for a slot, over every resident model
        return sum(r.queue.waiting for r in self.sup.residents.all())

    @property
    def busy(self) -> bool:  # a generation runs on some model
        return any(r.queue.active for r in self.sup.residents.all())

    # --- what is there -----------------------------------------------------------------------
    def get_available_models(self) -> list[dict[str, object]]:
        """Every catalog model with the quants downloaded here."""
        return available_models(self.catalog, self.downloader, self.settings)

    def current_model(self) -> LoadedModel | None:
        """The selected model (the one used without ``model=``), if it is loaded."""
        r = self.sup.selected_resident()
        return r.snapshot(True) if r is not None else None

    def selection(self) -> LoadSpec | None:
        """The selected model, resident or not (it is loaded again on the next call that needs it)."""
        return self.sup.selected_spec

    def loaded(self) -> list[LoadedModel]:
        """Every resident model, least recently used first."""
        return self.sup.snapshots()

    def loading(self) -> list[tuple[str, float]]:
        """(key, since when) of the models being loaded now."""
        return list(self.sup.loading.items())

    @property
    def runner_restarts(self) -> int:
        """Runners started again after a crash by this manager."""
        return self.sup.restarts

    def broken(self) -> dict[str, CrashRecord]:
        """key -> crash record of the models marked broken (three runner crashes in a row)."""
        return self.sup.health.broken()

    # --- loading -----------------------------------------------------------------------------
    def switch_model(self, model_id: str, quant: str | None = None, **options: Options) -> SwitchResult:
        """Load catalog model ``model_id`` (``id`` or ``id:QUANT``) in place of the selected one."""
        spec = self.router.catalog_spec(model_id if ":" in model_id or not quant else f"{model_id}:{quant}")
        return SwitchResult.of(self._load(spec, options).info)

    def load_file(self, path: str | Path, model_id: str | None = None, card: "ModelCard | None" = None,
                  **options: Options) -> SwitchResult:
        """Load a local GGUF (a tiny test model, an imported file) in place of the selected one."""
        p = Path(path)
        mid = model_id or (card.id if card else p.stem)
        spec = LoadSpec(key=mid, path=p, model_id=mid, quant=None, card=card)
        return SwitchResult.of(self._load(spec, options).info)

    def _load(self, spec: LoadSpec, options: Mapping[str, Options]) -> Resident:
        check_load_options(options)
        with self.sup.changes:
            resident = self.sup.load(spec, options, select=True, replace=True)
        self._touched(resident)
        return resident

    def ensure_loaded(self, ref: str, *, keep_alive: float | None = None, pinned: bool = False,
                      **options: Options) -> LoadedModel:
        """Make ``ref`` ("id", "id:QUANT", a resident key or a .gguf path) resident beside the others
        (evicting the least recently used unpinned models if needed); the selected model stays selected."""
        check_load_options(options)
        resident = self.router.resident(ref, keep_alive, options, pinned=pinned)
        self._touched(resident)
        return resident.snapshot(resident.key == self.sup.selected)

    def select(self, ref: str, **options: Options) -> LoadedModel:
        """Make ``ref`` the selected model, loading it beside the others if it is not resident (unlike
        :meth:`switch_model`, the previously selected model stays resident until evicted)."""
        check_load_options(options)
        resident = self.router.resident(ref, None, options)
        self.sup.select(resident.spec)
        self._touched(resident)
        return resident.snapshot(True)

    def ensure_selected(self) -> LoadedModel | None:
        """The selected model, loaded again if an idle unload or a crash took it (None: none selected)."""
        return self.router.selected(None).snapshot(True) if self.sup.selected_spec is not None else None

    def unload(self, ref: str | None = None) -> bool:
        """Unload ``ref`` (None: every model) once its running generations end; True if one was loaded."""
        with self.sup.changes:
            if ref is None:
                return self.sup.unload_all()
            r = self.sup.find(ref)
            return self.sup.unload(r, unselect=True) if r is not None else False

    def drop_missing(self) -> list[str]:
        """Unload the models whose file is gone or whose catalog entry was removed (hot catalog)."""
        gone = []
        for info in self.loaded():
            r = self.sup.find(info.key)
            if r is None:
                continue
            missing = not r.spec.path.exists() or (r.spec.card is not None and r.spec.model_id not in self.catalog)
            if missing:
                gone.append(info.key)
                self.unload(info.key)
                log.info("unloaded %s: its file or catalog entry was removed", info.key)
        return gone

    def close(self) -> None:
        """Unload everything, stop the idle watcher (the manager can still be used)."""
        self.unload()
        self._idle.stop()

    # --- generation --------------------------------------------------------------------------
    def generate_text(self, prompt: str, max_tokens: int | None = 256, temperature: float = 0.2,
                      top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                      stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
                      priority: bool = False, **sampling: Sampling) -> GenerationResult | GenerationStream:
        """Complete ``prompt`` with ``model`` (None: the selected one); ``stream=True`` returns a
        :class:`GenerationStream`, which holds its slot until it is exhausted, cancelled or closed.
        ``priority``: ahead of the other requests for the model (an editor's FIM prompt)."""
        ask = Ask.of(requests.plain(prompt), max_tokens, temperature, top_p, stop, seed, sampling, priority)
        return self._generate(ask, stream, model, keep_alive)

    def chat(self, messages: Sequence[Mapping[str, object]], max_tokens: int | None = 256, temperature: float = 0.2,
             top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
             stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
             tools: ToolRequest | None = None, **sampling: Sampling) -> GenerationResult | GenerationStream:
        """Answer chat ``messages`` with the model's own template (GGUF, else the catalog family).
        ``tools``: functions the model may call and/or a response format, each enforced by a grammar
        (the text that comes back still holds the calls: :mod:`fmgguf.runtime.tools.tool_parser` reads them)."""
        ask = Ask.of(requests.chat(messages, tools), max_tokens, temperature, top_p, stop, seed, sampling)
        return self._generate(ask, stream, model, keep_alive)

    def count_chat_tokens(self, messages: Sequence[Mapping[str, object]], *, model: str | None = None,
                          keep_alive: float | None = None, tools: ToolRequest | None = None) -> int:
        """How many tokens :meth:`chat` would feed the model for ``messages`` and ``tools`` (nothing is generated)."""
        resident = self._admit(model, keep_alive, False)
        try:
            tokens = requests.chat(messages, tools)(resident.engine, resident)[0]
            return len(tokens)
        finally:
            self._release(resident, False)

    def fill_in_middle(self, prefix: str, suffix: str, max_tokens: int | None = 256, temperature: float = 0.2,
                       top_p: float = 0.95, stop: Sequence[str] | str | None = None, seed: int | None = None,
                       stream: bool = False, *, model: str | None = None, keep_alive: float | None = None,
                       extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
                       max_prompt_chars: int | None = None, n_indent: int = 0, time_limit_s: float | None = None,
                       **sampling: Sampling) -> GenerationResult | GenerationStream:
        """Generate the code between ``prefix`` and ``suffix`` (refused where the model can't); it goes
        ahead of the chat and completion requests queued for the same model.

        A catalog model gets its family's text layout (``extra`` files ``(name, text)`` as repo-level
        context, the whole cut to ``max_prompt_chars``); a bare file its FIM token ids. The middle ends
        where :mod:`fmgguf.runtime.prompt.fim_stop` says the gap ends (``n_indent``, ``time_limit_s``: llama.cpp's
        ``n_indent`` and ``t_max_predict_ms``); the result's ``stop_reason`` says why."""
        from fmgguf.runtime.prompt.fim_stop import FimCutter, FimRules

        build = requests.fim(prefix, suffix, extra, filename, max_prompt_chars)
        ask = replace(Ask.of(build, max_tokens, temperature, top_p, stop, seed, sampling, True),
                      again=requests.fim_again(prefix, suffix, extra, filename, max_prompt_chars))
        cutter = FimCutter(FimRules.for_gap(prefix, suffix, n_indent=n_indent, time_limit_s=time_limit_s))
        return self._generate(ask, stream, model, keep_alive, cutter)

    def _admit(self, model: str | None, keep_alive: float | None, priority: bool) -> Resident:
        """The model for a request, with a slot of its queue held (wait in line; BusyError when full)."""
        while True:
            r = self.router.selected(keep_alive) if model is None else self.router.resident(model, keep_alive, {})
            try:
                r.queue.acquire(priority=priority, timeout=self.queue_timeout)
            except ModelGone:  # unloaded while we looked it up: find or load it again
                continue
            if r.leaving:  # its runner died or it is being unloaded while we waited: the next one serves
                r.queue.release(priority)
                continue
            return r

    def _generate(self, ask: Ask, stream: bool, model: str | None, keep_alive: float | None,
                  cutter: "FimCutter | None" = None) -> GenerationResult | GenerationStream:
        started = time.perf_counter()
        resident = self._admit(model, keep_alive, ask.priority)
        try:
            engine = resident.engine
            prompt = ask.build(engine, resident)
            tokens = prompt[0]
            if isinstance(tokens, list) and len(tokens) >= engine.n_ctx:  # (a PromptText is checked by the engine)
                raise ContextOverflowError(
                    f"the prompt is {len(tokens)} tokens but the context window is {engine.n_ctx}",
                    fix="shorten the prompt or load the model with a larger n_ctx (--ctx)")
            stats = GenerationStats(started=started)
            sampling = {**ask.sampling, "speculative": default_mode(ask.sampling.get("speculative"),
                                                                    self.settings.speculative, engine.draft_name)}
            cancel = CancelFlag()
            fim = None if cutter is None else FimRun(cutter, stats, cancel)

            def go(p: requests.Prompt, flag: CancelFlag, st: GenerationStats) -> Iterator[str]:
                return self._guard(resident, engine.stream(
                    p[0], st, max_tokens=ask.max_tokens, temperature=ask.temperature, top_p=ask.top_p,
                    stop=[*ask.stop, *p[1]], seed=ask.seed, cancel=flag, priority=ask.priority,
                    **({**sampling, "constraint": p[2]} if p[2] is not None else sampling)))
            flag = cancel if fim is None else fim.flag()
            pieces = go(prompt, flag, stats)
            if fim is not None:
                pieces = fim.pieces(pieces, flag, again_of(ask.again, engine, resident, go))
        except RunnerCrashedError as exc:
            self.sup.crashed(resident.spec, exc, resident)
            self._release(resident, ask.priority)
            raise
        except BaseException:
            self._release(resident, ask.priority)
            raise
        info = resident.info
        gs = GenerationStream(pieces, lambda text: requests.result(text, fim.stats if fim else stats, started, info,
                                                                   fim.cutter if fim else None),
                              lambda: self._release(resident, ask.priority), cancel)
        return gs if stream else gs.consume()

    def _guard(self, resident: Resident, pieces: Iterator[str]) -> Iterator[str]:
        """``pieces``, with a runner crash counted (and the dead runner dropped) on its way to the caller."""
        try:
            yield from pieces
        except RunnerCrashedError as exc:
            self.sup.crashed(resident.spec, exc, resident)
            raise
        self.sup.succeeded(resident)

    def _release(self, resident: Resident, priority: bool) -> None:
        resident.queue.release(priority)
        self._touched(resident)

    def _touched(self, resident: Resident) -> None:
        with self.sup.lock:
            self.sup.residents.touch(resident)
            watch = self.sup.residents.next_expiry() is not None
        if watch:
            self._idle.poke()


_default: dict[tuple, ModelManager] = {}
_default_lock = threading.Lock()


def get_model_manager(settings: "Settings | None" = None, *, isolation: str | None = None) -> ModelManager:
    """The manager for ``settings`` (read from the environment when None) and ``isolation``: one per
    distinct pair in this process, built on first use."""
    if settings is None:
        from fmgguf.settings import load_settings

        settings = load_settings()
    key = (settings, isolation or settings.isolation)
    with _default_lock:
        manager = _default.get(key)
        if manager is None:
            manager = _default[key] = ModelManager(settings, isolation=key[1])
        return manager
