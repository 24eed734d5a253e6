"""Which models are resident: the records the manager keeps per loaded model, in least-recently-used
order, and the one thread per manager that unloads a model when its keep-alive runs out."""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from fmgguf.runtime.engine.engine_api import EngineAPI
from fmgguf.runtime.engine.generation import SlotQueue
from fmgguf.runtime.runner.loading import LoadedModel

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard

Owner = TypeVar("Owner")


class ModelState(str, Enum):
    """Where a resident model is in its life (``LoadedModel.state``)."""

    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    UNLOADING = "unloading"
    BROKEN = "broken"


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model (again, after an idle unload or a crash)."""

    key: str
    path: Path
    model_id: str
    quant: str | None
    card: "ModelCard | None" = field(default=None, repr=False, compare=False)
    options: Mapping[str, object] = field(default_factory=dict, compare=False)


@dataclass
class Resident:
    """One loaded model: its engine, its queue of requests, and what the manager reports about it."""

    spec: LoadSpec
    engine: EngineAPI
    info: LoadedModel
    queue: SlotQueue
    #: seconds idle before unload (0: never)
    keep_alive: float
    pinned: bool = False
    last_used: float = field(default_factory=time.monotonic)
    #: crashes were on record when it loaded (a finished generation clears them)
    had_crashes: bool = False
    #: set when it is being unloaded, or its runner died (then ``broken`` says whether for good)
    leaving: bool = False
    broken: bool = False

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def state(self) -> ModelState:
        if self.broken:
            return ModelState.BROKEN
        if self.leaving:
            return ModelState.UNLOADING
        return ModelState.BUSY if self.queue.active else ModelState.READY

    def expires_in(self, now: float) -> float | None:
        if self.pinned or self.keep_alive <= 0:
            return None
        return self.last_used + self.keep_alive - now

    def snapshot(self, selected: bool) -> LoadedModel:
        left = self.expires_in(time.monotonic())
        return dataclasses.replace(self.info, pinned=self.pinned, keep_alive=self.keep_alive, selected=selected,
                                   expires_in_s=None if left is None else round(max(left, 0.0), 3),
                                   state=self.state.value, active=self.queue.active, waiting=self.queue.waiting)


class Residents:
    """Resident models, least recently used first (not thread-safe: the manager holds its lock)."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[str, Resident] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def all(self) -> list[Resident]:
        return list(self._by_key.values())

    def get(self, key: str | None) -> Resident | None:
        return self._by_key.get(key) if key is not None else None

    def find(self, ref: str) -> Resident | None:
        """By key ("id:QUANT"), else by model id when exactly one resident has it."""
        hit = self._by_key.get(ref)
        if hit is not None:
            return hit
        same = [r for r in self._by_key.values() if r.spec.model_id == ref]
        return same[0] if len(same) == 1 else None

    def add(self, resident: Resident) -> None:
        self._by_key[resident.key] = resident
        self._by_key.move_to_end(resident.key)

    def pop(self, key: str) -> Resident | None:
        return self._by_key.pop(key, None)

    def touch(self, resident: Resident) -> None:
        resident.last_used = time.monotonic()
        if resident.key in self._by_key:
            self._by_key.move_to_end(resident.key)

    def evictable(self, keep: set[str]) -> Resident | None:
        """The least recently used model that is neither pinned nor in ``keep``."""
        return next((r for r in self._by_key.values() if not r.pinned and r.key not in keep), None)

    def expired(self) -> list[Resident]:
        now = time.monotonic()
        return [r for r in self._by_key.values() if (left := r.expires_in(now)) is not None and left <= 0]

    def next_expiry(self) -> float | None:
        now = time.monotonic()
        lefts = [left for r in self._by_key.values() if (left := r.expires_in(now)) is not None]
        return max(min(lefts), 0.0) if lefts else None


class IdleWatcher(Generic[Owner]):
    """One daemon thread per manager: calls ``sweep()`` (which unloads expired models and returns the
    seconds until the next expiry, or None) whenever a keep-alive may have run out."""

    def __init__(self, owner: Owner, sweep: Callable[[Owner], float | None]) -> None:
        self._ref = weakref.ref(owner)
        self._sweep = sweep
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def poke(self) -> None:
        with self._cond:
            self._stopped = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fmgguf-idle-unload", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            owner = self._ref()
            if owner is None:
                return
            wait = self._sweep(owner)
            del owner
            with self._cond:
                if self._stopped or wait is None:
                    self._thread = None
                    return
                self._cond.wait(timeout=min(wait + 0.01, 60.0))
