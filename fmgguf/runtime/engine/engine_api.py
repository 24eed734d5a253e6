"""The one typed contract between the manager and a loaded model: :class:`EngineAPI`.

Two things implement it: :class:`~fmgguf.runtime.engine.engine.Engine` (llama.cpp in this process) and
:class:`~fmgguf.runtime.runner.proxy.EngineProxy` (llama.cpp in a runner process). The supervisor
gets an :data:`EngineStarter` injected and never asks which one it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fmgguf.errors import RunnerCrashedError
    from fmgguf.runtime.engine.engine import GenerationStats, LoadOptions
    from fmgguf.runtime.engine.generation import PromptText

Progress = Callable[[str, float], None]


class CancelFlag(threading.Event):
    """A stream's cancel flag: a :class:`threading.Event` that also calls the hooks registered with
    :meth:`on_set`, once, in the thread that sets it. A runner's proxy passes the cancel on to its
    runner the moment it comes, with no thread of its own per stream waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()

    def on_set(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` when the flag is set (at once if it is); returns what unregisters it."""
        with self._hooks_lock:
            if not self.is_set():
                self._hooks.append(hook)
                return lambda: self._drop(hook)
        hook()
        return lambda: None

    def _drop(self, hook: Callable[[], None]) -> None:
        with self._hooks_lock:
            self._hooks = [h for h in self._hooks if h is not hook]

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()


class EngineAPI(Protocol):
    """A loaded model: its facts, its vocabulary, and streams of generated text."""

    path: Path
    n_ctx: int
    n_ctx_train: int
    metadata: Mapping[str, str]
    bos_id: int
    eos_id: int
    add_bos: bool
    bos_text: str
    eos_text: str
    buffers: Mapping[str, int | Mapping[str, Mapping[str, int]]]
    load_s: float

    @property
    def pid(self) -> int | None:
        """The process llama.cpp runs in (None: this one)."""

    @property
    def slots(self) -> int:
        """Streams it takes at once (the manager sends at most this many; more wait in its queue)."""

    @property
    def lanes(self) -> int:
        """Slots beside ``slots`` that only priority (FIM) streams take (the FIM lane)."""

    @property
    def alive(self) -> bool: ...

    @property
    def draft_name(self) -> str | None:
        """The draft model loaded beside it (speculative decoding's ``draft`` mode), None: none."""

    @property
    def tokenizes_in_stream(self) -> bool:
        """``stream`` also takes a :class:`~fmgguf.runtime.engine.generation.PromptText` (one round trip, not two)."""

    @property
    def chat_template(self) -> str | None: ...

    def failure(self) -> RunnerCrashedError | None:
        """Why it stopped serving (a dead runner), or None."""

    def memory_bytes(self) -> int: ...

    def fim_token_ids(self) -> dict[str, int]: ...

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]: ...

    def special_token_id(self, text: str) -> int | None: ...

    def stream(self, tokens: Sequence[int] | PromptText, stats: GenerationStats, *, max_tokens: int | None = 256,
               temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
               repeat_penalty: float = 1.0, stop: Sequence[str] | None = None, seed: int | None = None,
               cancel: threading.Event | None = None, priority: bool = False) -> Iterator[str]:
        """Text pieces for ``tokens``; ``priority`` (FIM) goes ahead of other work where the engine
        schedules several streams."""

    def close(self) -> None: ...


#: starts an engine: (path, load options, progress, label) -> a loaded model
EngineStarter = Callable[[Path, "LoadOptions", "Progress | None", str], EngineAPI]
