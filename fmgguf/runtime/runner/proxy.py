"""The parent's side of a runner: :class:`EngineProxy` offers the manager the
:class:`~fmgguf.runtime.engine.engine_api.EngineAPI` while llama.cpp runs in the child
(:class:`~fmgguf.runtime.runner.process.RunnerProcess`).

Several streams may run at once, each under its own request id; a cancel goes to its id. When the
child dies (abort, segfault, OOM kill) every call in flight raises
:class:`~fmgguf.errors.RunnerCrashedError` naming the model, the signal and llama.cpp's last log
lines; the proxy is dead from then on and the manager decides about restarting.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fmgguf.errors import ModelNotLoadedError, RunnerCrashedError
from fmgguf.runtime.engine.engine import GenerationStats, LoadOptions
from fmgguf.runtime.engine.engine_api import CancelFlag, Progress
from fmgguf.runtime.engine.generation import PromptText
from fmgguf.runtime.runner.process import RunnerProcess, crash_error, describe_exit, last_words
from fmgguf.runtime.runner.protocol import (
    ChannelTimeout,
    Frame,
    LoadReply,
    error_from_wire,
    from_wire,
    to_wire,
    update_from_wire,
)

__all__ = ["CANCEL_GRACE_S", "EngineProxy", "RunnerProcess", "crash_error", "describe_exit", "last_words"]

log = logging.getLogger(__name__)

#: seconds a runner has to stop after a cancel (it stops at the next token) before it counts as hung
CANCEL_GRACE_S = 10.0
#: how often a waiting stream looks at its cancel flag
_POLL_S = 0.5


class _StreamCancel:
    """One stream's cancel on its way to the runner: the cancel frame goes out once; a runner whose
    stream has not ended :data:`CANCEL_GRACE_S` later is killed as hung (a timer, only once cancelled)."""

    def __init__(self, runner: RunnerProcess, rid: int) -> None:
        self.runner, self.rid = runner, rid
        self.ended = False
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def fire(self) -> None:
        with self._lock:
            if self.ended or self._timer is not None:
                return
            self._timer = timer = threading.Timer(CANCEL_GRACE_S, self._expired)
            timer.daemon = True
        self.runner.cancel(self.rid)
        timer.start()

    def end(self) -> None:
        with self._lock:
            self.ended, timer = True, self._timer
        if timer is not None:
            timer.cancel()

    def _expired(self) -> None:
        with self._lock:
            if self.ended:
                return
        self.runner.hung("generating", CANCEL_GRACE_S)


class EngineProxy:
    """What the manager needs of an engine (:class:`~fmgguf.runtime.engine.engine_api.EngineAPI`), served by a runner."""

    isolation = "process"
    tokenizes_in_stream = True

    def __init__(self, runner: RunnerProcess, path: Path, options: LoadOptions, reply: LoadReply) -> None:
        self.runner = runner
        self.path, self.options = path, options
        self.n_ctx, self.n_ctx_train = reply.n_ctx, reply.n_ctx_train
        self.metadata: dict[str, str] = dict(reply.metadata)
        self.bos_id, self.eos_id, self.add_bos = reply.bos_id, reply.eos_id, reply.add_bos
        self.bos_text, self.eos_text = reply.bos_text, reply.eos_text
        self.buffers: dict[str, int] = dict(reply.buffers)
        self.load_s = reply.load_s
        self.load_log: list[str] = []
        self._memory = reply.memory
        self._fim = {k: int(v) for k, v in reply.fim_token_ids.items()}
        #: streams the runner generates at once, as it says itself (it was asked for ``slots``); the
        #: manager sends it no more than that, so a FIM request waits in the manager's queue, where it
        #: goes first, not in the runner's
        self.slots = max(1, reply.slots)
        #: slots beside those that only priority (FIM) streams take
        self.lanes = max(0, reply.lanes)
        #: the draft model the runner loaded beside it (speculative decoding), None: none
        self.draft_name = reply.draft_name
        self._closed = False

    @classmethod
    def start(cls, path: Path, options: LoadOptions, *, progress: Progress | None = None,
              label: str | None = None, slots: int = 1) -> "EngineProxy":
        """A new runner process with ``path`` loaded (errors of the load come back as themselves)."""
        runner = RunnerProcess(label or Path(path).name)

        def on_frame(msg: Frame) -> None:
            if progress is not None and "progress" in msg:
                try:
                    progress(str(msg["progress"][0]), float(msg["progress"][1]))
                except Exception:  # noqa: BLE001 - a caller's progress bar must not fail the load
                    log.debug("progress callback failed", exc_info=True)

        try:
            raw = runner.request("load", "loading the model", on_frame, path=str(path), options=to_wire(options),
                                 slots=int(slots))
        except RunnerCrashedError:
            runner.close(timeout=1)
            raise
        except BaseException:
            runner.kill()
            raise
        assert isinstance(raw, dict)
        return cls(runner, Path(path), options, from_wire(LoadReply, raw))

    # --- facts -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.runner.pid

    @property
    def closed(self) -> bool:
        return self._closed or not self.runner.alive

    @property
    def alive(self) -> bool:
        return not self._closed and self.runner.alive

    def failure(self) -> RunnerCrashedError | None:
        """The runner's death, worded (None while it lives)."""
        if self._closed or self.runner.alive:
            return None
        return self.runner.crashed("idle")

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template") or None

    def memory_bytes(self) -> int:
        return self._memory

    def fim_token_ids(self) -> dict[str, int]:
        return dict(self._fim)

    # --- tokens ----------------------------------------------------------------------------------
    def _call(self, name: str, *args: object, **kwargs: object) -> object:
        if self._closed:
            raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
        return self.runner.request("call", "reading its vocabulary", name=name, args=list(args), kwargs=kwargs)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        out = self._call("tokenize", text, add_bos=add_bos, special=special)
        assert isinstance(out, list)
        return [int(t) for t in out]

    def special_token_id(self, text: str) -> int | None:
        out = self._call("special_token_id", text)
        return None if out is None else int(str(out))

    def token_text(self, token: int) -> str:
        return str(self._call("token_text", int(token)))

    def is_eog(self, token: int) -> bool:
        return bool(self._call("is_eog", int(token)))

    # --- generation ------------------------------------------------------------------------------
    def stream(self, tokens: Sequence[int] | PromptText, stats: GenerationStats, *,
               cancel: threading.Event | None = None, priority: bool = False, **kwargs: object) -> Iterator[str]:
        """Start generating in the runner and return its text pieces; ``stats`` gets the runner's
        numbers when the stream ends. ``tokens`` may be a PromptText (tokenized in the runner);
        ``constraint`` (a grammar) travels as its fields.
        What fails before the first token (a prompt longer than the context) raises here, as in-process."""
        if self._closed:
            raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
        runner, doing = self.runner, "generating"
        if runner.dead is not None:
            raise runner.dead
        prompt = to_wire(tokens) if dataclasses.is_dataclass(tokens) else {"tokens": [int(t) for t in tokens]}
        rid = runner.send("stream", doing, prompt=prompt, started=stats.started, kwargs=to_wire(kwargs),
                          priority=bool(priority))
        try:
            first = runner.recv_for(rid, doing)
            if "error" in first:
                raise error_from_wire(first["error"])
        except BaseException:
            runner.forget(rid)
            raise
        stats.prompt_tokens = int(first.get("started", 0))
        return self._pieces(rid, stats, cancel)

    def _pieces(self, rid: int, stats: GenerationStats, cancel: threading.Event | None) -> Iterator[str]:
        stop = _StreamCancel(self.runner, rid)
        unhook = self._pass_cancel(cancel, stop)
        ended = False
        try:
            while True:
                msg = self.runner.recv_for(rid, "generating")
                if "piece" in msg:
                    yield msg["piece"]
                elif "ok" in msg:
                    ended = True
                    update_from_wire(stats, msg["ok"])
                    return
                elif "error" in msg:
                    ended = True
                    raise error_from_wire(msg["error"])
        finally:
            stop.end()
            unhook()
            if not ended:
                self._abandon(rid, stats)
            self.runner.forget(rid)

    @staticmethod
    def _pass_cancel(cancel: threading.Event | None, stop: "_StreamCancel") -> Callable[[], None]:
        """Pass ``cancel`` on to the runner when it is set, while this thread blocks reading frames
        (the fast path: one blocking read per frame). A :class:`CancelFlag` calls back as it is set;
        a plain Event gets a thread that waits on it. Returns what stops the passing on."""
        if cancel is None:
            return lambda: None
        if isinstance(cancel, CancelFlag):
            return cancel.on_set(stop.fire)

        def watch() -> None:
            while not stop.ended:
                if cancel.wait(_POLL_S):
                    stop.fire()
                    return

        threading.Thread(target=watch, name=f"fmgguf-runner-cancel-{stop.rid}", daemon=True).start()
        return lambda: None

    def _next_frame(self, rid: int, deadline: float) -> Frame:
        """The next frame of stream ``rid``; a runner silent past ``deadline`` is killed (RunnerCrashedError)."""
        while True:
            try:
                return self.runner.recv_for(rid, "stopping a generation", timeout=_POLL_S)
            except ChannelTimeout:
                if time.monotonic() > deadline:
                    raise self.runner.hung("stopping a generation", CANCEL_GRACE_S) from None

    def _abandon(self, rid: int, stats: GenerationStats) -> None:
        """A stream closed before its end: stop it in the runner and read up to its last frame."""
        runner = self.runner
        if runner.dead is not None:
            return
        runner.cancel(rid)
        deadline = time.monotonic() + CANCEL_GRACE_S
        try:
            while True:
                msg = self._next_frame(rid, deadline)
                if "ok" in msg:
                    update_from_wire(stats, msg["ok"])
                    return
                if "error" in msg:
                    return
        except RunnerCrashedError:
            return  # recorded on the runner; the manager sees it on the next use

    # --- teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.runner.close()

    def kill(self) -> None:
        self._closed = True
        self.runner.kill()

    def __enter__(self) -> "EngineProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
