"""Which of a slot's cached tokens a new prompt can keep: the common prefix, then llama.cpp's cache
reuse (``--cache-reuse``): where text was removed from the prompt (an editor's oldest context chunk
dropped, the window over a long file moved), runs of at least :data:`KV_REUSE_MIN` cached tokens
that the prompt has next are moved down in the KV cache instead of being decoded again.

At least the last prompt token is always decoded again: its logits choose the first new token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: the shortest run of cached tokens moved in the KV cache rather than decoded again
KV_REUSE_MIN = 64


@dataclass(frozen=True)
class ReusePlan:
    #: leading tokens the cache and the prompt share
    prefix: int
    #: (cache position, prompt position, length) of each run moved down, in order
    moves: tuple[tuple[int, int, int], ...]
    #: leading prompt tokens the cache holds once the moves are done
    kept: int


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    for x, y in zip(a[:limit], b[:limit], strict=False):
        if x != y:
            break
        n += 1
    return n


def plan_reuse(cache: Sequence[int], tokens: Sequence[int], can_shift: bool) -> ReusePlan:
    limit = len(tokens) - 1
    n = common_prefix(cache, tokens, min(len(cache), limit)) if limit > 0 else 0
    held = len(cache)
    if n == 0 or not can_shift or held - n < KV_REUSE_MIN or limit - n < KV_REUSE_MIN:
        return ReusePlan(n, (), n)
    moves: list[tuple[int, int, int]] = []
    head_c = head_p = n
    while head_c < held and head_p < limit:
        m = 0
        while head_c + m < held and head_p + m < limit and cache[head_c + m] == tokens[head_p + m]:
            m += 1
        if m < KV_REUSE_MIN:
            head_c += 1
            continue
        moves.append((head_c, head_p, m))
        head_c, head_p = head_c + m, head_p + m
    return ReusePlan(n, tuple(moves), head_p)
