"""The runner process: one :class:`~fmgguf.runtime.engine.engine.Engine` (one llama.cpp model) behind the
runner protocol. Started by :class:`~fmgguf.runtime.runner.process.RunnerProcess` as
``python -m fmgguf.runtime.runner.child FD`` with one end of a socket pair as ``FD``.

A reader thread takes requests off the socket: a ``cancel`` acts at once, a ``stream`` is handed
to the engine's slot scheduler at once (and answered from its thread: pieces, then the stats), so
several streams run at once, batched in one llama.cpp context; the rest queue for the main thread,
one at a time. When the parent goes away the socket ends and the runner exits.
llama.cpp's log goes to stderr, which the parent keeps in a ring buffer for crash reports.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.runtime.runner.protocol import Channel, ChannelClosed, LoadReply, error_to_wire, from_wire, to_wire

if TYPE_CHECKING:
    from fmgguf.runtime.engine.engine import Engine, GenerationStats

#: engine methods the parent may call by name (plain arguments and results)
CALLS = frozenset({"tokenize", "special_token_id", "token_text", "fim_token_ids", "memory_bytes", "is_eog"})
#: what an op returns when its answer goes out later, from another thread (a stream's last frame)
LATER = object()


class ChannelSink:
    """A stream's frames straight from the scheduler's thread: ``piece`` frames, then ``ok`` (the
    stats) or ``error``. The socket buffers: the slot never waits for the parent."""

    def __init__(self, runner: "Runner", rid: int, stats: GenerationStats) -> None:
        self.runner, self.rid, self.stats = runner, rid, stats

    def ready(self) -> bool:
        return True

    def piece(self, text: str) -> None:
        self._send({"re": self.rid, "piece": text})

    def end(self, error: BaseException | None) -> None:
        self.runner.cancels.pop(self.rid, None)
        if error is not None:
            self._send({"re": self.rid, "error": error_to_wire(error)})
        else:
            self._send({"re": self.rid, "ok": to_wire(self.stats)})

    def _send(self, frame: JsonObject) -> None:
        try:
            self.runner.channel.send(frame)
        except ChannelClosed:
            os._exit(0)  # the parent is gone


class Runner:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.engine: "Engine | None" = None
        self.jobs: queue.Queue[JsonObject] = queue.Queue()
        self.cancels: dict[int, threading.Event] = {}

    def read_loop(self) -> None:
        while True:
            try:
                msg = self.channel.recv()
            except (ChannelClosed, ValueError):
                os._exit(0)  # the parent is gone: nobody can use this model any more
            if msg.get("op") == "cancel":
                event = self.cancels.get(int(msg.get("target", -1)))
                if event is not None:
                    event.set()
                continue
            if msg.get("op") == "stream":  # started here: no hop through the main thread before the first token
                self.start_stream(msg)
                continue
            self.jobs.put(msg)

    def start_stream(self, msg: JsonObject) -> None:
        """Hand a ``stream`` to the slot scheduler from the reader thread (its frames come from the
        scheduler's thread); what fails before that (no model, a prompt too long) is its one error frame."""
        rid = int(msg["id"])
        try:
            self.op_stream(msg)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as an error frame
            self.cancels.pop(rid, None)
            try:
                self.channel.send({"re": rid, "error": error_to_wire(exc)})
            except ChannelClosed:
                os._exit(0)

    def serve(self) -> None:
        threading.Thread(target=self.read_loop, name="fmgguf-runner-reader", daemon=True).start()
        while True:
            msg = self.jobs.get()
            rid = msg.get("id")
            try:
                handler = getattr(self, "op_" + str(msg.get("op")), None)
                if handler is None:
                    raise ValueError(f"unknown runner op {msg.get('op')!r}")
                result = handler(msg)
                if result is LATER:
                    continue
                reply: JsonObject = {"re": rid, "ok": to_wire(result)}
            except Exception as exc:  # noqa: BLE001 - every failure goes back as an error frame
                reply = {"re": rid, "error": error_to_wire(exc)}
            try:
                self.channel.send(reply)
            except ChannelClosed:
                os._exit(0)
            if msg.get("op") == "close":
                os._exit(0)

    # --- operations ----------------------------------------------------------------------------
    def op_load(self, msg: JsonObject) -> LoadReply:
        from fmgguf.runtime.engine.engine import Engine, LoadOptions

        rid = msg["id"]

        def progress(stage: str, fraction: float) -> None:
            self.channel.send({"re": rid, "progress": [stage, fraction]})

        engine = Engine(msg["path"], from_wire(LoadOptions, msg["options"]), progress=progress)
        self.engine = engine
        return LoadReply(n_ctx=engine.n_ctx, n_ctx_train=engine.n_ctx_train, metadata=engine.metadata,
                         bos_id=engine.bos_id, eos_id=engine.eos_id, add_bos=engine.add_bos,
                         bos_text=engine.bos_text, eos_text=engine.eos_text, buffers=engine.buffers,
                         load_s=engine.load_s, memory=engine.memory_bytes(), fim_token_ids=engine.fim_token_ids(),
                         pid=os.getpid(), slots=engine.slots, lanes=engine.lanes,
                         draft_name=engine.draft_name)

    def op_call(self, msg: JsonObject) -> object:
        name = str(msg.get("name"))
        if name not in CALLS:
            raise ValueError(f"the runner does not offer {name!r}")
        return getattr(self._engine(), name)(*msg.get("args", []), **msg.get("kwargs", {}))

    def op_stream(self, msg: JsonObject) -> object:
        """Start a generation beside the others; its frames come from the scheduler (:class:`ChannelSink`)."""
        from fmgguf.runtime.engine.constraints import Constraint
        from fmgguf.runtime.engine.engine import GenerationStats

        rid = int(msg["id"])
        stats = GenerationStats(started=float(msg.get("started") or time.perf_counter()))
        cancel = self.cancels.setdefault(rid, threading.Event())
        engine, prompt = self._engine(), msg["prompt"]
        tokens = prompt.get("tokens")
        if tokens is None:  # a PromptText: tokenized here, in the same round trip
            tokens = engine.tokenize(prompt["text"], add_bos=bool(prompt["add_bos"]), special=bool(prompt["special"]))
        kwargs = dict(msg.get("kwargs", {}))
        if isinstance(kwargs.get("constraint"), dict):
            kwargs["constraint"] = from_wire(Constraint, kwargs["constraint"])
        req = engine.request(tokens, stats, ChannelSink(self, rid, stats), cancel=cancel,
                             priority=bool(msg.get("priority")), **kwargs)
        self.channel.send({"re": rid, "started": len(req.tokens)})  # errors before the first token end here
        engine.submit(req)
        return LATER

    def op_stats(self, _msg: JsonObject) -> JsonObject:
        rss = 0
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return {"pid": os.getpid(), "rss": rss, "loaded": self.engine is not None}

    def op_close(self, _msg: JsonObject) -> bool:
        engine, self.engine = self.engine, None  # a stream arriving now finds no model, not a closing one
        if engine is not None:
            engine.close()
        return True

    def _engine(self) -> "Engine":
        if self.engine is None:
            from fmgguf.errors import ModelNotLoadedError

            raise ModelNotLoadedError("the runner has no model loaded", fix="load the model again")
        return self.engine


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it closes us
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("fmgguf.llama_cpp").setLevel(logging.INFO)
    sock = socket.socket(fileno=int(args[0]))
    Runner(Channel(sock)).serve()


if __name__ == "__main__":
    main()
