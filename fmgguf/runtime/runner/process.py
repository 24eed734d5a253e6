"""A runner child process as the parent sees it: :class:`RunnerProcess` (the child, its socket, its
stderr ring buffer, several requests in flight at once) and the wording of a runner's death.

Frames come back tagged with the id of the request they answer. Whoever waits for a frame reads the
socket itself while no other thread does (one stream alone pays no thread hop per token); a frame
for another request goes into that request's box and wakes its reader. When the child dies every
request in flight raises the same :class:`~fmgguf.errors.RunnerCrashedError`.
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from pathlib import Path

from fmgguf.errors import RunnerCrashedError
from fmgguf.runtime.engine.load_options import bound_omp_spin
from fmgguf.runtime.runner.protocol import Channel, ChannelClosed, ChannelTimeout, Frame, error_from_wire

log = logging.getLogger(__name__)

#: stderr lines kept per runner (llama.cpp's log, Python's last words, ggml's assert message)
LOG_LINES = 200
#: log lines quoted in a crash error
TAIL_LINES = 4
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}
_llama_log = logging.getLogger("fmgguf.llama_cpp")


class RunnerProcess:
    """One runner child process and the protocol spoken with it (requests multiplexed by id)."""

    def __init__(self, label: str) -> None:
        self.label = label
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        import fmgguf

        root = str(Path(fmgguf.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("GGML_NO_BACKTRACE", "1")  # ggml would attach gdb to print a stack: slow, and noise
        bound_omp_spin(env)  # an idle runner's worker threads stop spinning soon after its last token
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
        self._cv = threading.Condition()
        self._boxes: dict[int, deque[Frame]] = {}
        self._reading = False
        self._eof = False
        self._death = threading.Lock()
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
    def send(self, op: str, doing: str, **fields: object) -> int:
        """Send request ``op``; its id (its answers queue up until :meth:`forget`)."""
        rid = next(self._ids)
        with self._cv:
            self._boxes[rid] = deque()
        try:
            self.channel.send({"id": rid, "op": op, **fields})
        except ChannelClosed:
            self.forget(rid)
            raise self.crashed(doing) from None
        return rid

    def forget(self, rid: int) -> None:
        """Drop request ``rid``'s box: later frames for it are read and discarded."""
        with self._cv:
            self._boxes.pop(rid, None)

    def recv_for(self, rid: int, doing: str, timeout: float | None = None) -> Frame:
        """The next frame answering request ``rid``; ChannelTimeout after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                while True:
                    box = self._boxes.get(rid)
                    if box:
                        return box.popleft()
                    if self._eof or self.dead is not None:
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise ChannelTimeout()
                    if not self._reading:
                        self._reading = True
                        break
                    self._cv.wait(left)
                dead = self._eof or self.dead is not None
            if dead:
                raise self.crashed(doing)
            self._read_one(left)

    def _read_one(self, timeout: float | None) -> None:
        """Read one frame off the socket (this thread holds the reading turn) into its request's box."""
        msg: Frame | None = None
        try:
            msg = self.channel.recv(timeout)
        except ChannelTimeout:
            pass
        except (ChannelClosed, ValueError):
            with self._cv:
                self._eof = True
        finally:
            with self._cv:
                self._reading = False
                if msg is not None:
                    box = self._boxes.get(int(msg.get("re", -1)))
                    if box is not None:
                        box.append(msg)
                self._cv.notify_all()

    def request(self, op: str, doing: str, on_frame: Callable[[Frame], None] | None = None,
                **fields: object) -> object:
        """Send ``op`` and wait for its answer (``on_frame`` sees the frames before it)."""
        if self.dead is not None:
            raise self.dead
        rid = self.send(op, doing, **fields)
        try:
            while True:
                msg = self.recv_for(rid, doing)
                if "ok" in msg:
                    return msg["ok"]
                if "error" in msg:
                    raise error_from_wire(msg["error"])
                if on_frame is not None:
                    on_frame(msg)
        finally:
            self.forget(rid)

    def cancel(self, rid: int) -> None:
        try:
            self.channel.send({"op": "cancel", "target": rid})
        except ChannelClosed:
            pass  # the next receive reports the crash

    # --- death -----------------------------------------------------------------------------------
    def crashed(self, doing: str) -> RunnerCrashedError:
        """The error for a runner that stopped answering (it is made to exit if it has not); the
        first caller words it, every request in flight gets the same one."""
        with self._death:
            if self.dead is not None:
                return self.dead
            try:
                rc = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # the socket broke but the process hangs: end it
                self.proc.kill()
                rc = self.proc.wait()
            self._stderr.join(timeout=2)
            self.dead = crash_error(self.label, rc, doing, list(self.log), self.pid)
        self._wake_all()
        return self.dead

    def hung(self, doing: str, waited: float) -> RunnerCrashedError:
        """Kill a runner that did not stop within ``waited`` seconds of a cancel; the error for it."""
        with self._death:
            if self.dead is None:  # set first: the readers that wake up on the EOF report this error
                self.dead = RunnerCrashedError(
                    f"the runner for {self.label} stopped answering while {doing} (no token {waited:.0f} s after "
                    "a cancel) and was killed", fix="the next request starts it again; if it hangs again, try "
                    "another quant or a shorter context", model=self.label, signal=None, exit_code=None, pid=self.pid)
                self.proc.kill()
                self.proc.wait()
        self._wake_all()
        return self.dead

    def _wake_all(self) -> None:
        with self._cv:
            self._eof = True
            self._cv.notify_all()

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
