"""The engine's side of the host-RAM prompt cache (runtime.engine.prompt_cache): saving a slot's KV state
before a new request throws most of it away, and restoring the saved state that shares the longest
prefix with a new prompt into the slot, through llama.cpp's ``llama_state_seq_get_data`` /
``llama_state_seq_set_data`` on that slot's sequence.

Called by the slot scheduler once per request, before it keeps what the slot's cache shares with the
prompt (``Scheduler._reuse``), which then cuts a restored state back to the prefix the new prompt
shares with it: nothing after the shared part of a cached conversation survives into another one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fmgguf.runtime.engine.kv_reuse import KV_REUSE_MIN
from fmgguf.runtime.engine.llama_lib import lib
from fmgguf.runtime.engine.prompt_cache import PromptCache

if TYPE_CHECKING:
    from fmgguf.runtime.engine.llama_lib import llama_context_p, llama_memory_t


class PromptStates:
    """A :class:`PromptCache` of one model's slot states."""

    def __init__(self, capacity_bytes: int) -> None:
        self.cache = PromptCache(capacity_bytes)

    def prepare(self, ctx: llama_context_p, mem: llama_memory_t, seq: int, held: list[int], tokens: Sequence[int],
                live: int) -> tuple[list[int] | None, int]:
        """Before sequence ``seq`` (holding ``held``, of which ``live`` tokens serve ``tokens``) takes a
        new prompt: keep its state in host RAM when most of it would go, and restore the best cached
        state when it brings more than ``live``. Returns (what the sequence holds now, or None when
        unchanged; the prompt tokens the restored state brings)."""
        if held and live < len(held) // 2 and not self.cache.holds(held):
            self.save(ctx, seq, held)
        entry, shared = self.cache.best(tokens)
        if entry is None or shared < live + KV_REUSE_MIN:
            self.cache.miss()
            return None, 0
        if not self.restore(ctx, mem, seq, entry.data):
            self.cache.miss()
            return [], 0  # the sequence was cleared for the restore
        self.cache.take(entry)
        return list(entry.tokens), min(shared, len(tokens) - 1)

    def save(self, ctx: llama_context_p, seq: int, held: list[int]) -> bool:
        mod = lib()
        size = int(mod.llama_state_seq_get_size(ctx, seq))
        if not self.cache.wants(len(held), size):
            return False
        buf = (ctypes.c_uint8 * size)()
        if int(mod.llama_state_seq_get_data(ctx, buf, size, seq)) != size:
            return False
        return self.cache.put(held, buf)

    @staticmethod
    def restore(ctx: llama_context_p, mem: llama_memory_t, seq: int, data: ctypes.Array) -> bool:
        mod = lib()
        mod.llama_memory_seq_rm(mem, seq, -1, -1)
        return int(mod.llama_state_seq_set_data(ctx, data, ctypes.sizeof(data), seq)) != 0
