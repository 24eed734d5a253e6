"""A bounded host-RAM cache of KV states keyed by their token sequence, for agents.

Agents resend a 10-20k-token system prompt on every turn and in every new conversation; between two
turns of one conversation other requests (a title request, an editor's completion) take the model's
context. The engine saves the context's KV state here when a request is about to throw most of it away,
and restores the entry that shares the longest prefix with a new prompt when that beats what the
context holds, so only the new part of the prompt is decoded.

- Entries are LRU by bytes: storing past ``capacity_bytes`` drops the least recently used ones.
- An entry is found by its longest common prefix with the new prompt; the engine restores the whole
  state and then cuts it back to that prefix, so nothing a cached conversation said after the shared
  part survives into another one (llama.cpp's RAM cache got this wrong in ggml-org/llama.cpp#27148).
- :func:`normalize_volatile` drops what changes on every request although it means nothing to the
  model (Claude Code's ``cch=`` billing hash in its first system block), before the prompt is built.

The payload is opaque here (the engine keeps llama.cpp's ``llama_state_seq_get_data`` bytes in a
ctypes buffer); this module knows nothing about llama.cpp or the decode loop.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

#: Claude Code's billing header line (``x-anthropic-billing-header: cc_version=...; cch=<hash>;``)
_BILLING_LINE = re.compile(r"^x-anthropic-billing-header:[^\n]*(?:\n|$)", re.MULTILINE)
#: a bare per-request hash elsewhere in a prompt
_CCH = re.compile(r"\bcch=[0-9A-Za-z]+;?")


def normalize_volatile(text: str) -> str:
    """``text`` without the parts that change on every request and mean nothing to the model."""
    if "cch=" not in text and "x-anthropic-billing-header" not in text:
        return text
    return _CCH.sub("", _BILLING_LINE.sub("", text)).lstrip("\n")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n, i, step = min(len(a), len(b)), 0, 512
    while i + step <= n and tuple(a[i:i + step]) == tuple(b[i:i + step]):  # slices compare in C
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class CachedState:
    """One saved context state: the tokens it holds, in order, and llama.cpp's bytes for them."""

    tokens: tuple[int, ...]
    data: ctypes.Array

    @property
    def nbytes(self) -> int:
        return ctypes.sizeof(self.data)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    stored: int
    evicted: int


class PromptCache:
    """KV states keyed by token sequence, LRU by bytes (thread-safe)."""

    def __init__(self, capacity_bytes: int, min_tokens: int = 256) -> None:
        self.capacity_bytes = max(0, int(capacity_bytes))
        #: states shorter than this are not worth a copy (a short prompt decodes quickly anyway)
        self.min_tokens = int(min_tokens)
        self._entries: OrderedDict[tuple[int, ...], CachedState] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._stored = self._evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, tokens: Sequence[int]) -> bool:
        with self._lock:
            return tuple(tokens) in self._entries

    def best(self, tokens: Sequence[int]) -> tuple[CachedState | None, int]:
        """The entry sharing the longest prefix with ``tokens`` and that length ((None, 0): none)."""
        with self._lock:
            found, length = None, 0
            for entry in self._entries.values():
                n = common_prefix(entry.tokens, tokens)
                if n > length:
                    found, length = entry, n
            return found, length

    def take(self, entry: CachedState) -> None:
        """Count a use of ``entry`` (it becomes the most recently used)."""
        with self._lock:
            if entry.tokens in self._entries:
                self._entries.move_to_end(entry.tokens)
            self._hits += 1

    def miss(self) -> None:
        with self._lock:
            self._misses += 1

    def wants(self, n_tokens: int, n_bytes: int) -> bool:
        """Whether a state of this size would be kept at all."""
        return n_tokens >= self.min_tokens and 0 < n_bytes <= self.capacity_bytes

    def put(self, tokens: Sequence[int], data: ctypes.Array) -> bool:
        """Keep ``data`` as the state for ``tokens``; least recently used entries make room. An entry
        that is a prefix of ``tokens`` is dropped: the new one serves every prompt it served."""
        entry = CachedState(tuple(tokens), data)
        if not self.wants(len(entry.tokens), entry.nbytes):
            return False
        with self._lock:
            for key in [k for k in self._entries if len(k) <= len(entry.tokens) and entry.tokens[:len(k)] == k]:
                self._bytes -= self._entries.pop(key).nbytes
            self._entries[entry.tokens] = entry
            self._bytes += entry.nbytes
            self._stored += 1
            while self._bytes > self.capacity_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes
                self._evicted += 1
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._bytes, self.capacity_bytes, self._hits, self._misses,
                              self._stored, self._evicted)
