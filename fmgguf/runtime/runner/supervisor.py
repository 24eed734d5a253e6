"""The supervisor: which models are resident, loading them (validate, make room, plan, start), and
what happens when a runner dies (crash records, backoff, broken models).

Residency: at most ``max_loaded`` models; loading one more unloads the least recently used model
that is not pinned, and so does a fit plan that says the new model does not fit in the memory
left. A model idle for its keep-alive is unloaded (pinned ones never are). The caller (the
manager) holds its turn around every method here except :meth:`snapshots`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmgguf.errors import FmggufError, InsufficientMemoryError, ModelBrokenError, RunnerCrashedError
from fmgguf.runtime.fim_rule import fim_verdict
from fmgguf.runtime.loading import FileFacts, LoadedModel, add_note, load_request, plan_load, start_engine, validate
from fmgguf.runtime.runner.health import HealthBook, backoff
from fmgguf.runtime.runner.residency import LoadSpec, Resident, Residents

if TYPE_CHECKING:
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, settings: "Settings", *, isolation: str, max_loaded: int, keep_alive: float,
                 validator: Callable[[Path, dict], FileFacts] = validate) -> None:
        self.settings = settings
        self.validate = validator
        self.isolation = isolation
        self.max_loaded = max(1, int(max_loaded))
        self.keep_alive = keep_alive
        self.health = HealthBook(settings.home)
        self.residents = Residents()
        self.lock = threading.Lock()
        #: the model calls without ``model=`` use, and whether it was lost to a crash (restart it)
        self.selected: str | None = None
        self.selected_spec: LoadSpec | None = None
        self.restart_selected = False
        #: runners started again after a crash (in this process), for /metrics
        self.restarts = 0
        self._facts: dict[tuple, Any] = {}
        self._plans: dict[tuple, Any] = {}

    # --- what is resident ------------------------------------------------------------------------
    def snapshots(self) -> list[LoadedModel]:
        with self.lock:
            return [r.snapshot(r.key == self.selected) for r in self.residents.all()]

    def selected_resident(self) -> Resident | None:
        with self.lock:
            return self.residents.get(self.selected)

    def find(self, ref: str) -> Resident | None:
        with self.lock:
            return self.residents.find(ref)

    # --- loading ---------------------------------------------------------------------------------
    def load(self, spec: LoadSpec, options: Mapping[str, Any], *, select: bool, replace: bool,
             keep_alive: float | None = None, pinned: bool = False) -> Resident:
        """Load ``spec`` (``replace``: in place of the selected model, the seed's switch)."""
        progress: Callable[[str, float], None] | None = options.get("progress")
        # everything that can be refused without touching memory is checked with the old models loaded
        if self.check_broken(spec) is not None:
            self.restarts += 1
        _report(progress, "validate", 0.0)
        facts = self.validate(spec.path, self._facts)
        request = load_request(facts, options, self.settings)
        # then the models that must go give their memory back, so the plan measures it as free
        previous = self._make_room(spec, replace)
        try:
            _report(progress, "plan", 0.05)
            load_opts, plan = self._plan(spec, facts, request, options)
            self._wait_backoff(spec)
            engine = start_engine(spec.path, load_opts, plan, progress, isolation=self.isolation, label=spec.key)
        except RunnerCrashedError as exc:
            self.crashed(spec, exc)
            raise
        except FmggufError as exc:
            if previous is not None:  # say so: the old model is gone
                gone = "so no model is loaded now" if not len(self.residents) else "the others stay loaded"
                add_note(exc, f"{previous} was unloaded to make room, {gone}")
            raise
        card = spec.card
        info = LoadedModel(
            id=spec.model_id, quant=spec.quant or facts.quant, path=str(spec.path), plan=plan,
            memory=engine.memory_bytes(), buffers=dict(engine.buffers), n_ctx=engine.n_ctx,
            n_gpu_layers=load_opts.n_gpu_layers, load_s=round(engine.load_s, 4),
            loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), architecture=facts.arch,
            chat_template=bool(engine.chat_template),
            fim=fim_verdict(card, name=spec.model_id, path=spec.path).able,
            fim_ids=dict(facts.fim_ids), key=spec.key, isolation=self.isolation, pid=getattr(engine, "pid", None))
        kept = {k: v for k, v in options.items() if k != "progress"}
        resident = Resident(spec=dataclasses.replace(spec, options=kept), engine=engine, info=info,
                            keep_alive=float(self.keep_alive if keep_alive is None else keep_alive), pinned=pinned,
                            had_crashes=self.health.get(spec.key) is not None)
        with self.lock:
            self.residents.add(resident)
            if select:
                self.selected, self.selected_spec, self.restart_selected = spec.key, resident.spec, False
        log.info("loaded %s (%s) in %.2f s: n_ctx=%d n_gpu_layers=%d, %s", spec.key, info.quant, engine.load_s,
                 engine.n_ctx, load_opts.n_gpu_layers, self.isolation)
        return resident

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
            with self.lock:
                self.selected, self.selected_spec, self.restart_selected = None, None, False
        while len(self.residents) >= self.max_loaded:
            victim = self.residents.evictable({spec.key})
            if victim is None:
                raise InsufficientMemoryError(
                    f"{len(self.residents)} pinned models are loaded and max_loaded_models is {self.max_loaded}",
                    fix="unload one of them, or raise FMGGUF_MAX_LOADED_MODELS")
            log.info("unloading %s (least recently used) to load %s", victim.key, spec.key)
            self.unload(victim)
        return previous

    def _plan(self, spec: LoadSpec, facts: Any, request: Any, options: Mapping[str, Any]) -> tuple[Any, Any]:
        """The load options and fit plan; while the plan says "won't fit", unload the LRU unpinned model."""
        while True:
            try:
                return plan_load(spec.path, facts, request, options, self.settings, self._plans)
            except InsufficientMemoryError:
                victim = self.residents.evictable({spec.key})
                if victim is None:
                    raise
                log.info("unloading %s (least recently used) to make memory for %s", victim.key, spec.key)
                self.unload(victim)

    def unload(self, resident: Resident) -> bool:
        with self.lock:
            if self.residents.get(resident.key) is not resident:
                return False
            self.residents.pop(resident.key)
            if self.selected == resident.key:
                self.selected = None
        resident.engine.close()
        return True

    def unload_all(self) -> bool:
        with self.lock:
            victims = self.residents.all()
            self.selected, self.selected_spec, self.restart_selected = None, None, False
        for r in victims:
            self.unload(r)
        return bool(victims)

    # --- crashes ---------------------------------------------------------------------------------
    def check_broken(self, spec: LoadSpec) -> Any:
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
        """Count the crash, forget the dead runner, and say in ``exc`` when the model is now broken."""
        from fmgguf.runtime.rpc import explain_lost_workers

        lost = explain_lost_workers(exc, spec.options.get("rpc"), self.settings)  # not the model's fault: not counted
        rec = None if lost else self.health.crashed(spec.key, spec.path, exc.message,
                                                    exc.details.get("signal"))  # type: ignore[arg-type]
        if resident is not None:
            with self.lock:
                if self.residents.get(resident.key) is resident:
                    self.residents.pop(resident.key)
                    if self.selected == resident.key:
                        self.selected, self.restart_selected = None, True
            resident.engine.close()
        log.warning("%s", exc.message)
        if rec is not None and rec.broken:
            add_note(exc, f"it crashed {rec.crashes} times in a row and is now marked broken")

    def succeeded(self, resident: Resident) -> None:
        """A generation finished: the crashes before it were not "in a row"."""
        if resident.had_crashes:
            resident.had_crashes = False
            self.health.clear(resident.key)

    # --- keep-alive ------------------------------------------------------------------------------
    def sweep(self, try_turn: Callable[[], bool], release: Callable[[], None]) -> float | None:
        """Unload the models whose keep-alive ran out; the seconds until the next one (None: none)."""
        with self.lock:
            expired = self.residents.expired()
        for r in expired:
            if not try_turn():
                return 1.0  # in use: the end of that use pokes the watcher again
            try:
                left = r.expires_in(time.monotonic())
                if left is not None and left <= 0 and self.unload(r):
                    log.info("unloaded %s after %.0f s idle", r.key, r.keep_alive)
            finally:
                release()
        with self.lock:
            return self.residents.next_expiry()


def _report(progress: Callable[[str, float], None] | None, stage: str, fraction: float) -> None:
    if progress is not None:
        try:
            progress(stage, fraction)
        except Exception:  # noqa: BLE001
            log.debug("progress callback failed", exc_info=True)
