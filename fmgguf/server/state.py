"""What one running server owns: its settings, catalog, manager, downloader, benchmarker and jobs.

One :class:`ServerState` per app (``app.state.fmgguf``); nothing lives in module globals. The heavy
parts (the manager imports llama.cpp) are built on first use, so the catalog endpoints and the page
answer without them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.server.gate import GenerationGate
from fmgguf.server.jobs import DownloadJobs

if TYPE_CHECKING:
    from starlette.requests import Request

    from fmgguf.bench import ModelBenchmarker
    from fmgguf.catalog import Catalog, ModelCard
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime.hw.devices import SystemMemory
    from fmgguf.runtime.manager import ModelManager
    from fmgguf.runtime.runner.health import CrashRecord
    from fmgguf.server.dialects.core import DialectHub
    from fmgguf.server.routes_bench import BenchRun
    from fmgguf.settings import Settings

#: seconds a computed fit plan is reused (device probing is not free)
FIT_CACHE_S = 30.0


class ServerState:
    def __init__(self, settings: "Settings", manager: "ModelManager | None" = None,
                 downloader: "ModelDownloader | None" = None, benchmarker: "ModelBenchmarker | None" = None,
                 catalog: "Catalog | None" = None, api_key: str | None = None,
                 max_queue: int = 64) -> None:
        self.settings = settings
        self.api_key = api_key or None
        self._catalog = catalog
        self._manager = manager
        self._downloader = downloader
        self._benchmarker = benchmarker
        self._build_lock = threading.RLock()
        self.gate = GenerationGate(max_queue)
        self.jobs = DownloadJobs(lambda: self.downloader)
        self._dialects: "DialectHub | None" = None
        #: the last finished generation (finish reason, token counts), for status and tests
        self.last_generation: JsonObject | None = None
        self._fit_cache: dict[tuple[str, str, int], tuple[float, dict]] = {}
        self.bench_runs: dict[str, BenchRun] = {}
        self.started_at = time.time()
        #: the hot catalog's view of the user catalog and the store (see :meth:`refresh`)
        self._stamp = _store_stamp(settings)
        self._stamp_at = time.monotonic()

    # --- components, built on first use ------------------------------------------------------
    @property
    def catalog(self) -> "Catalog":
        self.refresh()
        if self._catalog is None:
            with self._build_lock:
                if self._catalog is None:
                    from fmgguf.catalog import Catalog

                    self._catalog = Catalog.load(self.settings)
        return self._catalog

    @property
    def downloader(self) -> "ModelDownloader":
        if self._downloader is None:
            with self._build_lock:
                if self._downloader is None:
                    from fmgguf.download import ModelDownloader

                    self._downloader = ModelDownloader(settings=self.settings, catalog=self.catalog)
        return self._downloader

    @property
    def manager(self) -> "ModelManager":
        if self._manager is None:
            with self._build_lock:
                if self._manager is None:
                    from fmgguf.runtime import ModelManager

                    # each resident model queues its own requests: max_queue waiting per model
                    self._manager = ModelManager(settings=self.settings, catalog=self.catalog,
                                                 downloader=self.downloader, max_queue=self.gate.max_queue)
        return self._manager

    @property
    def manager_if_built(self) -> "ModelManager | None":
        """The manager if something already needed it (status pages must not load llama.cpp)."""
        return self._manager

    @property
    def dialects(self) -> "DialectHub":
        """The dialect layer's per-app state (supersede table, metrics)."""
        if self._dialects is None:
            with self._build_lock:
                if self._dialects is None:
                    from fmgguf.server.dialects.core import DialectHub

                    self._dialects = DialectHub()
        return self._dialects

    @property
    def benchmarker(self) -> "ModelBenchmarker":
        if self._benchmarker is None:
            with self._build_lock:
                if self._benchmarker is None:
                    self._benchmarker = _build_benchmarker(self)
        return self._benchmarker

    def reload_catalog(self) -> None:
        """Pick up user-catalog edits (e.g. `fmgguf catalog add` while the server runs)."""
        from fmgguf.catalog import Catalog

        with self._build_lock:
            self._catalog = catalog = Catalog.load(self.settings)
            self._fit_cache.clear()
            if self._downloader is not None and hasattr(self._downloader, "reload_catalog"):
                self._downloader.reload_catalog()
            manager = self._manager
        if manager is not None:
            manager.catalog = catalog
            # a model whose file or entry is gone is unloaded once its generation ends (never under it)
            threading.Thread(target=manager.drop_missing, name="fmgguf-drop-missing", daemon=True).start()

    def refresh(self, every_s: float = 0.2) -> bool:
        """Hot catalog: reload when the user catalog or the store changed on disk (a CLI `pull`,
        `import-gguf`, `rm`, `catalog add`, or another server); a few stat calls, at most every
        ``every_s``. True when it reloaded."""
        now = time.monotonic()
        if now - self._stamp_at < every_s:
            return False
        self._stamp_at = now
        stamp = _store_stamp(self.settings)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if self._catalog is None:  # built fresh when first needed
            return False
        self.reload_catalog()
        return True

    # --- fit plans, cached briefly ------------------------------------------------------------
    def fit_for(self, card: "ModelCard", quant: str, n_ctx: int | None = None, *, path: Path | None = None,
                remote: bool = False, mem: "SystemMemory | None" = None) -> dict:
        """The fit plan as a dict: from the local file when ``path`` is given, else the catalog numbers
        (``remote=True`` reads the GGUF header from the hub first; listings never do)."""
        n_ctx = int(n_ctx or self.settings.default_ctx)
        key = (card.id, quant, n_ctx, str(path) if path else ("remote" if remote else ""))
        hit = self._fit_cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < FIT_CACHE_S:
            return hit[1]
        from fmgguf.runtime.plan.fit import plan_for_card

        plan = plan_for_card(card, quant, n_ctx=n_ctx, settings=self.settings, path=path, remote=remote, mem=mem)
        data = plan.as_dict()
        self._fit_cache[key] = (now, data)
        return data

    def memory_snapshot(self) -> "SystemMemory | None":
        """Free RAM/VRAM probed once for a whole listing (None if the runtime is not available)."""
        try:
            from fmgguf.runtime.hw.devices import system_memory
        except ImportError:
            return None
        return system_memory(vram_override=self.settings.vram_override)

    def local_path(self, model_id: str, quant: str) -> Path | None:
        """The verified local file of a downloaded variant, or None."""
        from fmgguf.errors import FmggufError

        try:
            return Path(self.downloader.model_path(model_id, quant))
        except FmggufError:
            return None

    # --- what is loaded --------------------------------------------------------------------------
    @property
    def selected(self) -> tuple[str, str | None, str | None] | None:
        """(model id, quant, path of a file loaded by path) of the model the manager has selected,
        resident or not (a read-only view: the selection lives in the manager)."""
        spec = self._manager.selection() if self._manager is not None else None
        if spec is None:
            return None
        return (spec.model_id, spec.quant, None if spec.card is not None or spec.quant else str(spec.path))

    @property
    def loading(self) -> tuple[str, str, float] | None:
        """(model id, quant, since when) of a model being loaded now, if any."""
        manager = self._manager
        busy = manager.loading() if manager is not None else []
        if not busy:
            return None
        model_id, _, quant = busy[0][0].partition(":")
        return (model_id, quant, busy[0][1])

    def broken(self) -> dict[str, CrashRecord]:
        """key -> crash record of the models whose runner crashed three times in a row (read from the
        fmgguf home, so a model broken by the CLI or another server shows too)."""
        from fmgguf.runtime.runner.health import HealthBook

        return HealthBook(self.settings.home).broken()

    def current(self) -> dict | None:
        """The selected model as JSON-ready data (the routes' view of ``manager.current_model()``)."""
        manager = self._manager
        if manager is None:
            return None
        self.refresh()
        info = manager.current_model()
        return info.as_dict() if info is not None else None


def _store_stamp(settings: "Settings") -> tuple:
    """mtimes of the user catalog and of the store's record folders (a record added, replaced or
    removed changes its folder's mtime)."""
    out = []
    for path in (settings.catalog_file, settings.store_dir / "models"):
        try:
            out.append(path.stat().st_mtime_ns)
        except OSError:
            out.append(None)
    try:
        out.extend(sorted((d.name, d.stat().st_mtime_ns) for d in os.scandir(settings.store_dir / "models")))
    except OSError:
        pass
    return tuple(out)


def _build_benchmarker(state: ServerState) -> "ModelBenchmarker":
    """The benchmarker shares this server's manager, so a benchmark cannot load a second model."""
    from fmgguf.bench import ModelBenchmarker

    return ModelBenchmarker(state.settings, catalog=state.catalog, manager=state.manager, downloader=state.downloader)


def state_of(request: "Request") -> ServerState:
    """The :class:`ServerState` of the app serving ``request`` (the one accessor every route uses)."""
    return request.app.state.fmgguf
