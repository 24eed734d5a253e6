"""The runner protocol: length-prefixed JSON frames over a Unix socket pair, dataclasses on the
wire field by field, and errors that cross the pipe as the same :mod:`fmgguf.errors` class.

A request is ``{"id": N, "op": NAME, ...}``. The child answers with frames carrying ``"re": N``:
any number of ``{"progress": [stage, fraction]}`` (load) or ``{"piece": text}`` (stream), then one
``{"ok": value}`` or ``{"error": {...}}``. ``{"op": "cancel", "target": N}`` gets no answer: it
stops stream ``N`` at its next token.

Dataclasses (``LoadOptions``, ``GenerationStats``, ...) travel as their fields, and are rebuilt
from the fields the receiving side knows, so a field added to one of them flows through here
without a change to this module.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fmgguf import errors
from fmgguf._util import JsonObject

_HEADER = struct.Struct(">I")
#: a frame larger than this is a bug or a hostile peer, not a message
MAX_FRAME = 64 * 1024 * 1024

T = TypeVar("T")
#: one decoded frame (JSON at the pipe's edge)
Frame = JsonObject


@dataclass(frozen=True)
class LoadReply:
    """What the runner says about the model it loaded (the answer to ``load``), rebuilt by
    :func:`from_wire` on the parent's side."""

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
    memory: int
    fim_token_ids: Mapping[str, int]
    pid: int
    #: streams the runner generates at once (1: one after the other), and FIM lane slots beside them
    slots: int = 1
    lanes: int = 0
    #: the draft model loaded beside it (speculative decoding), None: none
    draft_name: str | None = None


class ChannelClosed(Exception):
    """The other end went away (EOF or a broken socket)."""


class ChannelTimeout(Exception):
    """Nothing arrived within the timeout (the channel is intact: call ``recv`` again)."""


class Channel:
    """Frames over one connected stream socket; ``send`` is thread-safe, ``recv`` has one reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._buf = bytearray()  # what one recv brought beyond the frame asked for (streamed pieces queue up)

    def send(self, message: Mapping[str, object]) -> None:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            with self._send_lock:
                self.sock.sendall(_HEADER.pack(len(data)) + data)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame; ChannelTimeout after ``timeout`` seconds without one (None: wait)."""
        if self.sock.gettimeout() != timeout:
            self.sock.settimeout(timeout)
        self._fill(_HEADER.size)
        (size,) = _HEADER.unpack_from(self._buf)
        if size > MAX_FRAME:
            raise ChannelClosed(f"frame of {size} bytes")
        self._fill(_HEADER.size + size)
        data = bytes(self._buf[_HEADER.size:_HEADER.size + size])
        del self._buf[:_HEADER.size + size]
        return json.loads(data.decode("utf-8"))

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except TimeoutError:
                raise ChannelTimeout() from None  # what was read so far stays in the buffer
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not chunk:
                raise ChannelClosed("end of stream")
            self._buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def to_wire(obj: object) -> object:
    """JSON-ready data: dataclasses as their fields, tuples as lists, Paths as strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_wire(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_wire(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_wire(cls: type[T], data: Mapping[str, object]) -> T:
    """``cls`` rebuilt from the fields it knows (unknown ones are dropped; tuple fields become tuples)."""
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs = {}
    for name, value in data.items():
        f = known.get(name)
        if f is None:
            continue
        if isinstance(value, list) and "tuple" in str(f.type):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def update_from_wire(target: object, data: Mapping[str, object]) -> None:
    """Copy the known fields of ``data`` onto the mutable dataclass ``target``."""
    names = {f.name for f in dataclasses.fields(target)}  # type: ignore[arg-type]
    for name, value in data.items():
        if name in names:
            setattr(target, name, value)


def error_to_wire(exc: BaseException) -> JsonObject:
    if isinstance(exc, errors.FmggufError):
        details = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, type(None)))}
        return {"type": type(exc).__name__, "message": exc.message, "fix": exc.fix, "details": details}
    return {"type": "EngineError", "message": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "fix": "see the runner log; reload the model and try again", "details": {}}


def error_from_wire(data: Mapping[str, object]) -> errors.FmggufError:
    """The same error class the runner raised (EngineError for one this side does not know)."""
    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.FmggufError)):
        cls = errors.EngineError
    try:
        return cls(data.get("message") or "", fix=data.get("fix"), **dict(data.get("details") or {}))
    except TypeError:
        return errors.EngineError(data.get("message") or "", fix=data.get("fix"))
