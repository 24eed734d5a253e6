"""The engine's side of the host-RAM prompt cache (runtime.prompt_cache): saving a context's KV state
before a request throws most of it away, and restoring the saved state that shares the longest prefix
with a new prompt, through llama.cpp's ``llama_state_seq_get_data`` / ``llama_state_seq_set_data``.

Called once per request, before the engine keeps the common prefix of what the context holds
(``Engine._keep_common_prefix``), which then cuts a restored state back to the prefix the new prompt
shares with it: nothing after the shared part of a cached conversation survives into another one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from fmgguf.runtime.engine import KV_REUSE_MIN, lib
from fmgguf.runtime.prompt_cache import PromptCache, common_prefix

#: sequence id of the single-sequence context
_SEQ = 0


class PromptStates:
    """A :class:`PromptCache` of one model's context states."""

    def __init__(self, capacity_bytes: int) -> None:
        self.cache = PromptCache(capacity_bytes)

    def prepare(self, llm: Any, tokens: Sequence[int]) -> int:
        """Make the context start from the best state for ``tokens``; returns the prompt tokens a
        restored state brings (0: the context's own state stays)."""
        held = [int(t) for t in llm.input_ids[: int(llm.n_tokens)]]
        live = common_prefix(held, tokens)
        entry, shared = self.cache.best(tokens)
        if live < len(held) // 2 and not self.cache.holds(held):  # most of it would go: keep it for later
            self.save(llm, held)
        if entry is None or shared < live + KV_REUSE_MIN or not self.restore(llm, entry.tokens, entry.data):
            self.cache.miss()
            return 0
        self.cache.take(entry)
        return min(shared, len(tokens) - 1)

    def save(self, llm: Any, held: list[int]) -> bool:
        mod, ctx = lib(), llm._ctx.ctx
        size = int(mod.llama_state_seq_get_size(ctx, _SEQ))
        if not self.cache.wants(len(held), size):
            return False
        buf = (ctypes.c_uint8 * size)()
        if int(mod.llama_state_seq_get_data(ctx, buf, size, _SEQ)) != size:
            return False
        return self.cache.put(held, buf)

    @staticmethod
    def restore(llm: Any, tokens: tuple[int, ...], data: ctypes.Array) -> bool:
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        if int(lib().llama_state_seq_set_data(llm._ctx.ctx, data, ctypes.sizeof(data), _SEQ)) == 0:
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        return True
