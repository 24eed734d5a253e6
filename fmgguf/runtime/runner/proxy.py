"""The parent's side of a runner: :class:`RunnerProcess` (the child, its socket and its stderr ring
buffer) and :class:`EngineProxy`, which offers the manager the generation surface of
:class:`~fmgguf.runtime.engine.Engine` while llama.cpp runs in the child.

When the child dies (abort, segfault, OOM kill) the call in flight raises
:class:`~fmgguf.errors.RunnerCrashedError` naming the model, the signal and llama.cpp's last log
lines; the proxy is dead from then on and the manager decides about restarting.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fmgguf.errors import ModelNotLoadedError, RunnerCrashedError
from fmgguf.runtime.constraints import Constraint
from fmgguf.runtime.runner.protocol import (
    Channel,
    ChannelClosed,
    ChannelTimeout,
    error_from_wire,
    to_wire,
    update_from_wire,
)

log = logging.getLogger(__name__)

#: stderr lines kept per runner (llama.cpp's log, Python's last words, ggml's assert message)
LOG_LINES = 200
#: log lines quoted in a crash error
TAIL_LINES = 4
#: seconds a runner has to stop after a cancel (it stops at the next token) before it counts as hung
CANCEL_GRACE_S = 10.0
#: how often a waiting stream looks at its cancel flag
_POLL_S = 0.5
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}
_llama_log = logging.getLogger("fmgguf.llama_cpp")


class RunnerProcess:
    """One runner child process and the protocol spoken with it (one request at a time)."""

    def __init__(self, label: str) -> None:
        self.label = label
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        import fmgguf

        root = str(Path(fmgguf.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("GGML_NO_BACKTRACE", "1")  # ggml would attach gdb to print a stack: slow, and noise
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "fmgguf.runtime.runner.child", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env, start_new_session=True)
        finally:
            child.close()
        self.pid = self.proc.pid
        self.channel = Channel(parent)
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.dead: RunnerCrashedError | None = None
        self._ids = itertools.count(1)
        self._stderr = threading.Thread(target=self._read_stderr, name=f"fmgguf-runner-log-{self.pid}", daemon=True)
        self._stderr.start()

    def _read_stderr(self) -> None:
        """Keep the runner's stderr; llama.cpp's lines go on to our ``fmgguf.llama_cpp`` logger, as in-process."""
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if not line:
                continue
            name, _, rest = line.partition(" ")
            level, _, text = rest.partition(" ")
            if name == "fmgguf.llama_cpp" and level in _LEVELS:
                self.log.append(text)
                _llama_log.log(_LEVELS[level], "%s", text)
            else:
                self.log.append(line)
                log.debug("[runner %s] %s", self.pid, line)

    @property
    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    # --- requests --------------------------------------------------------------------------------
    def send(self, op: str, doing: str, **fields: Any) -> int:
        rid = next(self._ids)
        try:
            self.channel.send({"id": rid, "op": op, **fields})
        except ChannelClosed:
            raise self.crashed(doing) from None
        return rid

    def recv_for(self, rid: int, doing: str, timeout: float | None = None) -> dict[str, Any]:
        """The next frame answering request ``rid`` (frames of an abandoned request are skipped);
        ChannelTimeout after ``timeout`` seconds without a frame."""
        while True:
            try:
                msg = self.channel.recv(timeout)
            except (ChannelClosed, ValueError):
                raise self.crashed(doing) from None
            if msg.get("re") == rid:
                return msg

    def request(self, op: str, doing: str, on_frame: Callable[[dict[str, Any]], None] | None = None,
                **fields: Any) -> Any:
        if self.dead is not None:
            raise self.dead
        rid = self.send(op, doing, **fields)
        while True:
            msg = self.recv_for(rid, doing)
            if "ok" in msg:
                return msg["ok"]
            if "error" in msg:
                raise error_from_wire(msg["error"])
            if on_frame is not None:
                on_frame(msg)

    def cancel(self, rid: int) -> None:
        try:
            self.channel.send({"op": "cancel", "target": rid})
        except ChannelClosed:
            pass  # the next receive reports the crash

    # --- death -----------------------------------------------------------------------------------
    def crashed(self, doing: str) -> RunnerCrashedError:
        """The error for a runner that stopped answering (it is made to exit if it has not)."""
        if self.dead is not None:
            return self.dead
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the socket broke but the process hangs: end it
            self.proc.kill()
            rc = self.proc.wait()
        self._stderr.join(timeout=2)
        self.channel.close()
        self.dead = crash_error(self.label, rc, doing, list(self.log), self.pid)
        return self.dead

    def hung(self, doing: str, waited: float) -> RunnerCrashedError:
        """Kill a runner that did not stop within ``waited`` seconds of a cancel; the error for it."""
        if self.dead is None:  # set first: the reader that wakes up on the EOF reports this error
            self.dead = RunnerCrashedError(
                f"the runner for {self.label} stopped answering while {doing} (no token {waited:.0f} s after a "
                "cancel) and was killed", fix="the next request starts it again; if it hangs again, try another "
                "quant or a shorter context", model=self.label, signal=None, exit_code=None, pid=self.pid)
            self.proc.kill()
            self.proc.wait()
        return self.dead

    def close(self, timeout: float = 5.0) -> None:
        """Ask the runner to free the model and exit; kill it if it does not within ``timeout``."""
        if self.dead is None and self.proc.poll() is None:
            try:
                self.request("close", "unloading")
            except Exception:  # noqa: BLE001 - closing a runner that died on the way is fine
                log.debug("runner %s did not close cleanly", self.pid, exc_info=True)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.channel.close()
        self._stderr.join(timeout=2)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.close(timeout=5)


def describe_exit(rc: int | None) -> tuple[str, str | None]:
    """("killed by SIGABRT", "SIGABRT") or ("exit code 3", None)."""
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"killed by {name}", name
    return f"exit code {rc}", None


_LAST_WORDS = ("GGML_ASSERT", "error", "terminate", "what()", "abort", "fatal", "Traceback", "Fatal Python")


def last_words(lines: Sequence[str]) -> list[str]:
    """The log lines worth quoting: the last :data:`TAIL_LINES`, with an earlier assert or error
    line first when the tail does not have one."""
    kept: list[str] = []
    for ln in lines:
        ln = ln.strip()
        cut = ln.find("/llama.cpp/")  # the build's temp dir says nothing
        ln = (ln[cut + 1:] if cut > 0 and " " not in ln[:cut] else ln)[:240]
        if ln and (not kept or kept[-1] != ln):
            kept.append(ln)
    tail = kept[-TAIL_LINES:]
    if not any(w in ln for ln in tail for w in _LAST_WORDS):
        hit = next((ln for ln in reversed(kept[:-TAIL_LINES]) if any(w in ln for w in _LAST_WORDS)), None)
        if hit is not None:
            tail = [hit, "..."] + tail[1:]
    return tail


def crash_error(label: str, rc: int | None, doing: str, lines: Sequence[str], pid: int | None) -> RunnerCrashedError:
    how, sig = describe_exit(rc)
    tail = last_words(lines)
    said = f"; its last log lines: {' | '.join(tail)}" if tail else ""
    if sig == "SIGKILL":
        fix = ("it was killed from outside, most often by the kernel's out-of-memory killer (see `dmesg`): free "
               "memory, or use a smaller quant or a shorter context; the next request starts it again")
    else:
        fix = ("llama.cpp gave up on this model (a file that lies about its shapes, or no memory for the "
               "compute buffers): check it with `fmgguf inspect FILE`, re-download it or try another quant; "
               "the next request starts it again, and three crashes in a row mark it broken")
    return RunnerCrashedError(f"the runner for {label} died ({how}) while {doing}{said}", fix=fix,
                              model=label, signal=sig, exit_code=rc, pid=pid)


class EngineProxy:
    """What the manager needs of an :class:`~fmgguf.runtime.engine.Engine`, served by a runner process."""

    isolation = "process"
    #: ``stream`` also takes a :class:`~fmgguf.runtime.generation.PromptText` (tokenized in the runner)
    tokenizes_in_stream = True

    def __init__(self, runner: RunnerProcess, path: Path, options: Any, facts: dict[str, Any]) -> None:
        self.runner = runner
        self.path, self.options = path, options
        self.pid = runner.pid
        self.n_ctx, self.n_ctx_train = int(facts["n_ctx"]), int(facts["n_ctx_train"])
        self.metadata: dict[str, str] = dict(facts["metadata"])
        self.bos_id, self.eos_id, self.add_bos = int(facts["bos_id"]), int(facts["eos_id"]), bool(facts["add_bos"])
        self.bos_text, self.eos_text = facts["bos_text"], facts["eos_text"]
        self.buffers: dict[str, int] = dict(facts["buffers"])
        self.load_s = float(facts["load_s"])
        self.load_log: list[str] = []
        self._memory = int(facts["memory"])
        self._fim = {k: int(v) for k, v in facts["fim_token_ids"].items()}
        self._closed = False

    @classmethod
    def start(cls, path: Path, options: Any, *, progress: Callable[[str, float], None] | None = None,
              label: str | None = None) -> "EngineProxy":
        """A new runner process with ``path`` loaded (errors of the load come back as themselves)."""
        runner = RunnerProcess(label or Path(path).name)

        def on_frame(msg: dict[str, Any]) -> None:
            if progress is not None and "progress" in msg:
                try:
                    progress(str(msg["progress"][0]), float(msg["progress"][1]))
                except Exception:  # noqa: BLE001 - a caller's progress bar must not fail the load
                    log.debug("progress callback failed", exc_info=True)

        try:
            facts = runner.request("load", "loading the model", on_frame, path=str(path), options=to_wire(options))
        except RunnerCrashedError:
            runner.close(timeout=1)
            raise
        except BaseException:
            runner.kill()
            raise
        return cls(runner, Path(path), options, facts)

    # --- facts -----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed or not self.runner.alive

    @property
    def alive(self) -> bool:
        return not self._closed and self.runner.alive

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template") or None

    def memory_bytes(self) -> int:
        return self._memory

    def fim_token_ids(self) -> dict[str, int]:
        return dict(self._fim)

    # --- tokens ----------------------------------------------------------------------------------
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
        return self.runner.request("call", "reading its vocabulary", name=name, args=list(args), kwargs=kwargs)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return list(self._call("tokenize", text, add_bos=add_bos, special=special))

    def special_token_id(self, text: str) -> int | None:
        return self._call("special_token_id", text)

    def token_text(self, token: int) -> str:
        return str(self._call("token_text", int(token)))

    def is_eog(self, token: int) -> bool:
        return bool(self._call("is_eog", int(token)))

    # --- generation ------------------------------------------------------------------------------
    def stream(self, tokens: Any, stats: Any, *, cancel: threading.Event | None = None,
               constraint: Constraint | None = None, **kwargs: Any) -> Iterator[str]:
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
        if constraint is not None:
            kwargs["constraint"] = constraint
        rid = runner.send("stream", doing, prompt=prompt, started=stats.started, kwargs=to_wire(kwargs))
        first = runner.recv_for(rid, doing)
        if "error" in first:
            raise error_from_wire(first["error"])
        stats.prompt_tokens = int(first.get("started", 0))
        return self._pieces(rid, stats, cancel)

    def _pieces(self, rid: int, stats: Any, cancel: threading.Event | None) -> Iterator[str]:
        done = threading.Event()
        if cancel is not None:  # a blocking read per frame is the fast path; a side thread passes cancels on
            threading.Thread(target=self._watch, args=(rid, cancel, done), name=f"fmgguf-runner-cancel-{self.pid}",
                             daemon=True).start()
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
            done.set()
            if not ended:
                self._abandon(rid, stats)

    def _watch(self, rid: int, cancel: threading.Event, done: threading.Event) -> None:
        """Pass a cancel on to the runner; kill it if the stream has not ended :data:`CANCEL_GRACE_S` later."""
        while not done.is_set():
            if cancel.wait(_POLL_S):
                if done.is_set():
                    return
                self.runner.cancel(rid)
                if not done.wait(CANCEL_GRACE_S):
                    self.runner.hung("generating", CANCEL_GRACE_S)
                return

    def _next_frame(self, rid: int, deadline: float) -> dict[str, Any]:
        """The next frame of stream ``rid``; a runner silent past ``deadline`` is killed (RunnerCrashedError)."""
        while True:
            try:
                return self.runner.recv_for(rid, "stopping a generation", timeout=_POLL_S)
            except ChannelTimeout:
                if time.monotonic() > deadline:
                    raise self.runner.hung("stopping a generation", CANCEL_GRACE_S) from None

    def _abandon(self, rid: int, stats: Any) -> None:
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
