"""The supervisor: which models are resident and which one is selected, loading them (validate, make
room, plan, start an engine through the injected :data:`~fmgguf.runtime.engine.engine_api.EngineStarter`),
unloading them once their queue has drained, and what happens when a runner dies (crash records,
backoff, broken models).

Residency: at most ``max_loaded`` models, and only as many as the fit plan says fit in memory;
loading one more unloads the least recently used model that is not pinned. A model idle for its
keep-alive is unloaded (pinned ones never are). ``lock`` guards the tables here and is held only
for short looks and changes, never across a load, a drain or a generation; ``changes`` serialises
the loads and unloads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import FmggufError, InsufficientMemoryError, ModelBrokenError, RunnerCrashedError
from fmgguf.runtime.engine.engine_api import EngineAPI, EngineStarter, Progress
from fmgguf.runtime.engine.generation import SlotQueue
from fmgguf.runtime.prompt.fim_rule import fim_verdict
from fmgguf.runtime.runner.health import CrashRecord, HealthBook, backoff
from fmgguf.runtime.runner.loading import (
    FileFacts,
    LoadedModel,
    LoadRequest,
    add_note,
    load_request,
    plan_load,
    start_engine,
    validate,
)
from fmgguf.runtime.runner.residency import LoadSpec, Resident, Residents

if TYPE_CHECKING:
    from fmgguf.runtime.engine.engine import LoadOptions
    from fmgguf.runtime.plan.fit import DraftSource, FitPlan
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, settings: "Settings", *, starter: EngineStarter, isolation: str, max_loaded: int,
                 keep_alive: float, max_queue: int, validator: Callable[[Path, dict], FileFacts] = validate) -> None:
        self.settings = settings
        self.start = starter
        self.validate = validator
        self.isolation = isolation
        self.max_loaded = max(1, int(max_loaded))
        self.keep_alive = keep_alive
        self.max_queue = max_queue
        self.health = HealthBook(settings.home)
        self.residents = Residents()
        self.lock = threading.Lock()
        #: held by the manager around every load, unload and switch (one residency change at a time;
        #: generations on resident models never wait for it)
        self.changes = threading.RLock()
        #: the model calls without ``model=`` use; it stays selected through an idle unload or a crash
        #: (loaded again on the next call) until it is unloaded on purpose or replaced
        self.selected_spec: LoadSpec | None = None
        #: runners started again after a crash (in this process), for /metrics
        self.restarts = 0
        #: how every model loaded here was loaded, by key (a file is found again after it left)
        self.known: dict[str, LoadSpec] = {}
        #: keys being loaded now -> since when (time.time())
        self.loading: dict[str, float] = {}
        self._facts: dict[tuple, FileFacts] = {}
        self._plans: dict[tuple, "FitPlan"] = {}
        #: the draft model a load brings (speculative decoding; the manager sets it: it knows the catalog)
        self.draft_for: Callable[[LoadSpec], "DraftSource | None"] = lambda spec: None

    # --- what is resident ------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        return self.selected_spec.key if self.selected_spec is not None else None

    def snapshots(self) -> list[LoadedModel]:
        with self.lock:
            return [r.snapshot(r.key == self.selected) for r in self.residents.all()]

    def selected_resident(self) -> Resident | None:
        with self.lock:
            return self.residents.get(self.selected)

    def find(self, ref: str) -> Resident | None:
        with self.lock:
            return self.residents.find(ref)

    def select(self, spec: LoadSpec | None) -> None:
        with self.lock:
            self.selected_spec = spec

    # --- loading ---------------------------------------------------------------------------------
    def load(self, spec: LoadSpec, options: Mapping[str, object], *, select: bool, replace: bool,
             keep_alive: float | None = None, pinned: bool = False) -> Resident:
        """Load ``spec`` (``replace``: in place of the selected model, the seed's switch)."""
        progress = options.get("progress")
        report = progress if callable(progress) else None
        # everything that can be refused without touching memory is checked with the old models loaded
        if self.check_broken(spec) is not None:
            self.restarts += 1
        _report(report, "validate", 0.0)
        facts = self.validate(spec.path, self._facts)
        request = dataclasses.replace(load_request(facts, options, self.settings), draft=self.draft_for(spec))
        self.loading[spec.key] = time.time()
        try:
            engine, load_opts, plan = self._start(spec, facts, request, options, replace, report)
        finally:
            self.loading.pop(spec.key, None)
        info = _loaded_info(spec, facts, engine, load_opts, plan, self.isolation)
        kept = {k: v for k, v in options.items() if k != "progress"}
        resident = Resident(spec=dataclasses.replace(spec, options=kept), engine=engine, info=info,
                            queue=SlotQueue(spec.key, engine.slots, self.max_queue, engine.lanes),
                            keep_alive=float(self.keep_alive if keep_alive is None else keep_alive), pinned=pinned,
                            had_crashes=self.health.get(spec.key) is not None)
        with self.lock:
            self.residents.add(resident)
            self.known[spec.key] = resident.spec
            if select:
                self.selected_spec = resident.spec
        log.info("loaded %s (%s) in %.2f s: n_ctx=%d n_gpu_layers=%d, %s, %d slot(s)", spec.key, info.quant,
                 engine.load_s, engine.n_ctx, load_opts.n_gpu_layers, self.isolation, engine.slots)
        return resident

    def _start(self, spec: LoadSpec, facts: FileFacts, request: LoadRequest, options: Mapping[str, object],
               replace: bool, report: Progress | None) -> tuple[EngineAPI, "LoadOptions", "FitPlan | None"]:
        # the models that must go give their memory back first, so the plan measures it as free
        previous = self._make_room(spec, replace)
        try:
            _report(report, "plan", 0.05)
            load_opts, plan = self._plan(spec, facts, request, options)
            self._wait_backoff(spec)
            engine = start_engine(self.start, spec.path, load_opts, plan, report, spec.key)
        except RunnerCrashedError as exc:
            self.crashed(spec, exc)
            raise
        except FmggufError as exc:
            if previous is not None:  # say so: the old model is gone
                gone = "so no model is loaded now" if not len(self.residents) else "the others stay loaded"
                add_note(exc, f"{previous} was unloaded to make room, {gone}")
            raise
        return engine, load_opts, plan

    def _make_room(self, spec: LoadSpec, replace: bool) -> str | None:
        """Unload the same model, the selected one (``replace``) and the LRU ones over the cap."""
        with self.lock:
            same = self.residents.get(spec.key)
            sel = self.residents.get(self.selected) if replace else None
        previous = None
        for victim in (same, sel):
            if victim is not None and (victim is same or not victim.pinned) and self.residents.get(victim.key):
                previous = previous or victim.spec.model_id
                self.unload(victim)
        if replace:
            self.select(None)
        while len(self.residents) >= self.max_loaded:
            with self.lock:
                victim = self.residents.evictable({spec.key})
            if victim is None:
                raise InsufficientMemoryError(
                    f"{len(self.residents)} pinned models are loaded and max_loaded_models is {self.max_loaded}",
                    fix="unload one of them, or raise FMGGUF_MAX_LOADED_MODELS")
            log.info("unloading %s (least recently used) to load %s", victim.key, spec.key)
            self.unload(victim)
        return previous

    def _plan(self, spec: LoadSpec, facts: FileFacts, request: LoadRequest,
              options: Mapping[str, object]) -> tuple["LoadOptions", "FitPlan | None"]:
        """The load options and fit plan; while the plan says "won't fit", unload the LRU unpinned model."""
        while True:
            try:
                return plan_load(spec.path, facts, request, options, self.settings, self._plans)
            except InsufficientMemoryError:
                with self.lock:
                    victim = self.residents.evictable({spec.key})
                if victim is None:
                    raise
                log.info("unloading %s (least recently used) to make memory for %s", victim.key, spec.key)
                self.unload(victim)

    def unload(self, resident: Resident, *, unselect: bool = False) -> bool:
        """Unload ``resident`` once the streams running or queued on it have ended; True if it was resident.
        ``unselect``: it is unloaded on purpose, so it stops being the selected model too."""
        with self.lock:
            if self.residents.get(resident.key) is not resident:
                return False
            self.residents.pop(resident.key)
            resident.leaving = True
            if unselect and self.selected == resident.key:
                self.selected_spec = None
        resident.queue.shut(wait=True)
        resident.engine.close()
        return True

    def unload_all(self) -> bool:
        with self.lock:
            victims = self.residents.all()
            self.selected_spec = None
        for r in victims:
            self.unload(r)
        return bool(victims)

    # --- crashes ---------------------------------------------------------------------------------
    def check_broken(self, spec: LoadSpec) -> CrashRecord | None:
        """ModelBrokenError for a broken model; else its crash record (None: no crashes in a row)."""
        rec = self.health.get(spec.key, spec.path)
        if rec is not None and rec.broken:
            raise ModelBrokenError(
                f"{spec.key} is marked broken: its runner crashed {rec.crashes} times in a row, last: {rec.reason}",
                fix="check the file with `fmgguf inspect FILE`; re-download or re-import it (a changed file "
                    "starts afresh) or use another quant", model=spec.key, signal=rec.signal)
        return rec

    def _wait_backoff(self, spec: LoadSpec) -> None:
        rec = self.health.get(spec.key, spec.path)
        if rec is not None:
            wait = backoff(rec.crashes) - (time.time() - rec.at)
            if wait > 0:
                log.info("waiting %.2f s before starting %s again (%d crashes in a row)", wait, spec.key, rec.crashes)
                time.sleep(wait)

    def crashed(self, spec: LoadSpec, exc: RunnerCrashedError, resident: Resident | None = None) -> None:
        """Count the crash once (every stream of a dead runner reports it), forget the dead runner, and
        say in ``exc`` when the model is now broken."""
        from fmgguf.runtime.rpc.rpc import explain_lost_workers

        if resident is not None:
            with self.lock:
                first = self.residents.get(resident.key) is resident
                if first:
                    self.residents.pop(resident.key)
                    resident.leaving = True
            if not first:
                return
            resident.queue.shut(wait=False)
            resident.engine.close()
        lost = explain_lost_workers(exc, spec.options.get("rpc"), self.settings)
        sig = exc.details.get("signal")
        rec = None if lost else self.health.crashed(spec.key, spec.path, exc.message, sig if isinstance(sig, str) else None)
        log.warning("%s", exc.message)
        if rec is not None and rec.broken:
            if resident is not None:
                resident.broken = True
            add_note(exc, f"it crashed {rec.crashes} times in a row and is now marked broken")

    def succeeded(self, resident: Resident) -> None:
        """A generation finished: the crashes before it were not "in a row"."""
        if resident.had_crashes:
            resident.had_crashes = False
            self.health.clear(resident.key)

    # --- keep-alive ------------------------------------------------------------------------------
    def sweep(self) -> float | None:
        """Unload the idle models whose keep-alive ran out; the seconds until the next one (None: none)."""
        if not self.changes.acquire(blocking=False):  # a load or unload is under way: look again soon
            return 1.0
        try:
            return self._sweep()
        finally:
            self.changes.release()

    def _sweep(self) -> float | None:
        with self.lock:
            expired = self.residents.expired()
            gone = []
            for r in expired:
                if r.queue.try_shut():  # nobody uses it or waits for it: it goes now
                    self.residents.pop(r.key)
                    r.leaving = True
                    gone.append(r)
            busy = len(gone) < len(expired)
        for r in gone:
            r.engine.close()
            log.info("unloaded %s after %.0f s idle", r.key, r.keep_alive)
        with self.lock:
            nxt = self.residents.next_expiry()
        return 1.0 if busy else nxt  # a model in use is looked at again when its use ends, or in a second


def _loaded_info(spec: LoadSpec, facts: FileFacts, engine: EngineAPI, load_opts: "LoadOptions",
                 plan: "FitPlan | None", isolation: str) -> LoadedModel:
    card = spec.card
    return LoadedModel(
        id=spec.model_id, quant=spec.quant or facts.quant, path=str(spec.path), plan=plan,
        memory=engine.memory_bytes(), buffers=dict(engine.buffers), n_ctx=engine.n_ctx,
        n_gpu_layers=load_opts.n_gpu_layers, load_s=round(engine.load_s, 4),
        loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), architecture=facts.arch,
        chat_template=bool(engine.chat_template),
        fim=fim_verdict(card, name=spec.model_id, path=spec.path).able,
        fim_ids=dict(facts.fim_ids), key=spec.key, isolation=isolation, pid=engine.pid)


def _report(progress: Progress | None, stage: str, fraction: float) -> None:
    if progress is not None:
        try:
            progress(stage, fraction)
        except Exception:  # noqa: BLE001
            log.debug("progress callback failed", exc_info=True)
