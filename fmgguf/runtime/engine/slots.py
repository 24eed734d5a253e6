"""Continuous batching: one llama.cpp context serves several generations at once.

The context has ``parallel`` slots plus one FIM lane slot (sequence ids of one unified KV cache,
so any one slot may grow to the whole context). A thread runs :meth:`Scheduler._loop`; each step
it retires cancelled slots, admits queued requests (priority ones first, each to the free slot
whose cached tokens it can reuse most: common prefix, then chunks moved down as llama.cpp's
``--cache-reuse`` does), gathers one token for every generating slot plus prompt chunks into one
``llama_batch`` (a long prompt is prefilled a chunk per step, so decoding slots keep going; a
priority prompt takes the whole budget), decodes once, and samples each slot with its own
sampler chain. Pieces go to each request's :class:`Sink`.

Reference: llama.cpp's tools/server/server-context.cpp (``update_slots``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmgguf.errors import ContextOverflowError, EngineError, FmggufError, ModelNotLoadedError
from fmgguf.runtime.engine.kv_reuse import plan_reuse
from fmgguf.runtime.engine.slot_requests import QueueSink, Request, Sink  # noqa: F401 - the scheduler's inputs
from fmgguf.runtime.engine.textout import TextOut

if TYPE_CHECKING:
    from fmgguf.runtime.engine.engine import Engine
    from fmgguf.runtime.engine.llama_lib import llama_batch, llama_context_p
    from fmgguf.runtime.engine.sampling import Sampler

#: prompt tokens a non-priority request may prefill in a step while other slots are decoding
PREFILL_WHILE_DECODING = 128


@dataclass(eq=False)
class Slot:
    seq: int
    lane: bool = False
    #: the tokens the KV cache holds for this sequence, positions 0..len-1
    cache: list[int] = field(default_factory=list)
    req: Request | None = None
    sampler: Sampler | None = None
    out: TextOut | None = None
    #: the next prompt token to decode (prefill), or None when generating
    prefill_at: int | None = None
    #: the sampled token to decode next (generating)
    next_token: int | None = None
    limit: int = 0
    length_finish: str = "length"
    last_used: float = 0.0
    admitted: float = 0.0
    batch_index: int = -1
    #: drafted tokens after next_token in this step's batch (speculative decoding, :mod:`.drafting`)
    draft: list[int] = field(default_factory=list)

    @property
    def free(self) -> bool:
        return self.req is None


class Scheduler:
    """The slots of one engine and the thread that drives them."""

    def __init__(self, engine: Engine, ctx: llama_context_p, n_batch: int, parallel: int) -> None:
        from fmgguf.runtime.engine.llama_lib import lib

        self.mod = lib()
        self.engine, self.ctx = engine, ctx
        self.mem = self.mod.llama_get_memory(ctx)
        self.can_shift = bool(self.mem) and bool(self.mod.llama_memory_can_shift(self.mem))
        self.n_ctx = min(int(engine.n_ctx), int(self.mod.llama_n_ctx(ctx)))
        self.n_batch = max(1, min(int(n_batch), int(self.mod.llama_n_batch(ctx))))
        lanes = [Slot(seq=parallel, lane=True)] if parallel > 1 else []
        self.slots = [Slot(seq=i) for i in range(parallel)] + lanes
        self.batch = self.mod.llama_batch_init(self.n_batch, 0, 1)
        from fmgguf.runtime.engine.drafting import Drafter, is_recurrent

        self.drafter = Drafter(self, is_recurrent(self.mod, engine.model_ptr()))
        self.queue: deque[Request] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fmgguf-slots", daemon=True)
        self.thread.start()

    # --- the callers' side ---------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        with self.cond:
            if self.stopping:
                raise ModelNotLoadedError("the model was unloaded", fix="load it again (`switch_model`)")
            self.queue.append(req)
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        """Stop the thread (requests still running end as cancelled) and free the batch."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=30)
        if self.batch is not None:
            self.mod.llama_batch_free(self.batch)
            self.batch = None

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots if not s.free)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._step():
                pass
        finally:
            for slot in self.slots:
                if slot.req is not None:
                    self._retire(slot, "cancelled")
            with self.cond:
                left, self.queue = list(self.queue), deque()
            for req in left:
                self._fail(req, None, "cancelled")

    def _step(self) -> bool:
        """One scheduling step; False once the scheduler is stopping."""
        with self.cond:
            while True:
                if self.stopping:
                    return False
                self._drop_cancelled_queued()
                if self.queue or any(s.req is not None for s in self.slots):
                    break
                self.cond.wait()
        for slot in self.slots:
            if slot.req is not None and slot.req.cancel.is_set():
                self._retire(slot, "cancelled")
        self._admit()
        n = self._fill_batch()
        if n == 0:
            with self.cond:  # every active slot waits for its consumer (or nothing to do): sleep until woken
                if not self.stopping and not self._any_ready():
                    self.cond.wait(0.05)
            return True
        started = time.perf_counter()
        rc = int(self.mod.llama_decode(self.ctx, self.batch))
        if self.drafter.enabled:  # timed to the end (a GPU decode returns before it is done): what drafts cost
            self.mod.llama_synchronize(self.ctx)
            self.drafter.observe(n, time.perf_counter() - started)
        if rc != 0:
            self._decode_failed(rc)
            return True
        self._after_decode()
        return True

    def _any_ready(self) -> bool:
        return any(s.req is not None and (s.prefill_at is not None or s.req.cancel.is_set() or s.req.sink.ready())
                   for s in self.slots)

    def _drop_cancelled_queued(self) -> None:
        for req in [r for r in self.queue if r.cancel.is_set()]:
            self.queue.remove(req)
            self._fail(req, None, "cancelled")

    # --- admission -----------------------------------------------------------------------------
    def _admit(self) -> None:
        with self.cond:
            waiting = sorted(self.queue, key=lambda r: not r.priority)  # stable: arrival order within a lane
        for req in waiting:
            slot = self._choose_slot(req)
            if slot is None:
                continue
            with self.cond:
                self.queue.remove(req)
            try:
                self._start(slot, req)
            except BaseException as exc:  # noqa: BLE001 - a bad grammar ends this request, not the loop
                slot.req = None
                self._fail(req, exc, None)

    def _choose_slot(self, req: Request) -> Slot | None:
        """The free slot this request reuses most KV of; ties go to the least recently used slot,
        and a request that reuses nothing takes an empty slot before evicting another's cache."""
        free = [s for s in self.slots if s.free and (req.priority or not s.lane)]
        if not free:
            return None
        best, best_key = None, None
        for s in free:
            reuse = plan_reuse(s.cache, req.tokens, self.can_shift).kept if s.cache else 0
            key = (reuse, s.lane, not s.cache, -s.last_used)  # a priority request prefers the lane
            if best_key is None or key > best_key:
                best, best_key = s, key
        return best

    def _start(self, slot: Slot, req: Request) -> None:
        from fmgguf.runtime.engine.sampling import Sampler

        restored = self._from_host_cache(slot, req.tokens)
        kept = self._reuse(slot, req.tokens)
        stats = req.stats
        stats.cached_tokens = kept
        stats.restored_tokens = min(restored, kept)
        room = self.n_ctx - len(req.tokens)
        mt = req.max_tokens
        slot.limit = room if not mt or mt <= 0 else min(int(mt), room)
        slot.length_finish = "length" if mt and 0 < mt <= room else "context"
        slot.sampler = Sampler(self.mod, self.engine.vocab, req.params, req.constraint)
        slot.out = TextOut(req.stop)
        slot.req, slot.prefill_at, slot.next_token = req, kept, None
        slot.admitted, slot.draft = time.perf_counter(), []
        self.drafter.start(slot)

    def _from_host_cache(self, slot: Slot, tokens: list[int]) -> int:
        """The engine's host-RAM prompt cache (agents): save the slot's state if it is about to go,
        restore a better one for ``tokens``; returns the prompt tokens a restored state brings."""
        states = self.engine.prompt_states
        if states is None:
            return 0
        live = plan_reuse(slot.cache, tokens, self.can_shift).kept if slot.cache else 0
        held, restored = states.prepare(self.ctx, self.mem, slot.seq, slot.cache, tokens, live)
        if held is not None:
            slot.cache = held
        return restored

    def _reuse(self, slot: Slot, tokens: list[int]) -> int:
        """Keep what the slot's cache shares with ``tokens`` (chunks moved down), drop the rest.
        Where the cache cannot be cut (some recurrent models) it is cleared."""
        mod, mem, seq = self.mod, self.mem, slot.seq
        plan = plan_reuse(slot.cache, tokens, self.can_shift)
        for head_c, head_p, m in plan.moves:
            mod.llama_memory_seq_rm(mem, seq, head_p, head_c)
            mod.llama_memory_seq_add(mem, seq, head_c, head_c + m, head_p - head_c)
        if plan.kept > 0 and mod.llama_memory_seq_rm(mem, seq, plan.kept, -1):
            slot.cache = list(tokens[: plan.kept])
            return plan.kept
        mod.llama_memory_seq_rm(mem, seq, -1, -1)
        slot.cache = []
        return 0

    # --- one batch -----------------------------------------------------------------------------
    def _fill_batch(self) -> int:
        """Decode tokens first, then prompt chunks (priority first); returns the batch size."""
        b, n = self.batch, 0
        decoding = [s for s in self.slots if s.req is not None and s.next_token is not None and s.req.sink.ready()]
        prefill = sorted((s for s in self.slots if s.req is not None and s.prefill_at is not None),
                         key=lambda s: (not s.req.priority, s.admitted))  # type: ignore[union-attr]
        waiting = sum(len(s.req.tokens) - s.prefill_at for s in prefill)  # type: ignore[union-attr,operator]
        busy = sum(1 for s in self.slots if s.req is not None and not s.lane)
        drafted = self.drafter.plan(decoding, busy, sum(1 for s in self.slots if not s.lane))
        room = min(self._make_room(len(decoding) + drafted + min(waiting, self.n_batch)), self.n_batch)
        for s in decoding:
            if n + 1 + len(s.draft) > room:
                s.draft = []
            if n >= room:
                break
            self._put(b, n, s.next_token, len(s.cache), s.seq, True)  # type: ignore[arg-type]
            s.cache.append(s.next_token)  # type: ignore[arg-type]
            s.next_token, s.batch_index = None, n
            n += 1
            for t in s.draft:  # the draft, logits for each: checked by the drafter after the decode
                self._put(b, n, t, len(s.cache), s.seq, True)
                s.cache.append(t)
                n += 1
        for s in prefill:
            req = s.req
            assert req is not None and s.prefill_at is not None
            budget = room - n
            if decoding and not req.priority:
                budget = min(budget, PREFILL_WHILE_DECODING)
            take = min(budget, len(req.tokens) - s.prefill_at)
            if take <= 0:
                continue
            end = s.prefill_at + take
            for i in range(s.prefill_at, end):
                self._put(b, n, req.tokens[i], i, s.seq, i == len(req.tokens) - 1)
                n += 1
            s.cache.extend(req.tokens[s.prefill_at:end])
            s.batch_index = n - 1 if end == len(req.tokens) else -1
            s.prefill_at = None if end == len(req.tokens) else end
        b.n_tokens = n
        return n

    @staticmethod
    def _put(b: llama_batch, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if logits else 0

    def _make_room(self, want: int) -> int:
        """KV cells for this step: idle slots give their caches up (least recently used first)."""
        free = self.n_ctx - sum(len(s.cache) for s in self.slots)
        if free < want:
            for s in sorted((s for s in self.slots if s.free and s.cache), key=lambda s: s.last_used):
                self.mod.llama_memory_seq_rm(self.mem, s.seq, -1, -1)
                free += len(s.cache)
                s.cache = []
                if free >= want:
                    break
        if free <= 0:  # the busy slots alone fill the context: the longest one ends, as at its own context end
            longest = max((s for s in self.slots if s.req is not None), key=lambda s: len(s.cache))
            self._retire(longest, "context")
            free = self.n_ctx - sum(len(s.cache) for s in self.slots)
        return max(free, 0)

    def _after_decode(self) -> None:
        now = None
        for s in self.slots:
            req = s.req
            if req is None or s.batch_index < 0:
                continue
            idx, s.batch_index = s.batch_index, -1
            tokens = self.drafter.verify(s, req, idx) if s.draft else [s.sampler.sample(self.ctx, idx)]  # type: ignore[union-attr]
            stats = req.stats
            if stats.first_token_at is None:
                stats.first_token_at = now = now or time.perf_counter()
            for token in tokens:
                if s.req is not req:
                    break
                self._take(s, req, token)

    def _take(self, s: Slot, req: Request, token: int) -> None:
        eng, stats = self.engine, req.stats
        if eng.is_eog(token):
            self._retire(s, "stop")
            return
        stats.completion_tokens += 1
        text, stopped = s.out.feed(eng.piece(token))  # type: ignore[union-attr]
        if text:
            req.sink.piece(text)
        if stopped:
            stats.stop_sequence = s.out.stopped_by  # type: ignore[union-attr]
            self._retire(s, "stop")
        elif stats.completion_tokens >= s.limit:
            self._retire(s, s.length_finish)
        else:
            s.next_token = token

    def _retire(self, s: Slot, finish: str) -> None:
        req = s.req
        if req is None:
            return
        tail = s.out.flush() if s.out is not None and finish != "cancelled" else ""
        if s.prefill_at is not None:  # a prompt cut short: what it decoded is a prefix and stays reusable
            s.prefill_at = None
        if s.sampler is not None:
            s.sampler.close()
        s.req, s.sampler, s.out, s.next_token, s.batch_index, s.draft = None, None, None, None, -1, []
        s.last_used = time.perf_counter()
        if tail:
            req.sink.piece(tail)
        self._fail(req, None, finish)

    @staticmethod
    def _fail(req: Request, error: BaseException | None, finish: str | None) -> None:
        req.stats.finish_reason = finish or "cancelled"
        req.stats.finished_at = time.perf_counter()
        try:
            req.sink.end(error)
        except Exception:  # noqa: BLE001, S110 - a consumer gone away must not stop the other slots
            pass

    def _decode_failed(self, rc: int) -> None:
        """llama_decode refused the batch: the slots in it end with the error; the cache of each is
        dropped (what the failed batch wrote is unknown)."""
        if rc == 1:
            error: FmggufError = ContextOverflowError("llama.cpp found no room left in the KV cache",
                                                      fix="load the model with a larger n_ctx or shorten the prompt")
        elif rc == -2:
            error = self.engine.oom_error("generation", code=str(rc))
        else:
            error = EngineError(f"llama.cpp failed while generating: llama_decode returned {rc}",
                                fix="reload the model (`unload` then load) and try again")
        in_batch = {int(self.batch.seq_id[i][0]) for i in range(int(self.batch.n_tokens))}
        for s in self.slots:
            if s.seq in in_batch and s.req is not None:
                req = s.req
                self._retire_quietly(s)
                self._fail(req, error, None)

    def _retire_quietly(self, s: Slot) -> None:
        if s.sampler is not None:
            s.sampler.close()
        self.mod.llama_memory_seq_rm(self.mem, s.seq, -1, -1)
        s.cache, s.req, s.sampler, s.out, s.next_token, s.prefill_at, s.batch_index = [], None, None, None, None, None, -1
        s.draft = []
