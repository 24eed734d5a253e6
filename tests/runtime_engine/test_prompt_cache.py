"""The host-RAM prompt cache: LRU by bytes, longest-prefix lookup, the volatile-line normaliser, and on a
real (tiny) llama.cpp model: a conversation's state comes back after an unrelated request took the
context, and a cached prefix never leaks the cached conversation into another one (ggml-org/llama.cpp#27148:
after the cached prefix, a different continuation generates exactly what an uncached context generates)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from fmgguf.runtime.engine.prompt_cache import PromptCache, common_prefix, normalize_volatile


def _buf(n: int) -> ctypes.Array:
    return (ctypes.c_uint8 * n)()


def test_lru_by_bytes_keeps_the_recently_used_entries() -> None:
    cache = PromptCache(capacity_bytes=3000, min_tokens=2)
    a, b, c = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    assert cache.put(a, _buf(1000)) and cache.put(b, _buf(1000)) and cache.put(c, _buf(1000))
    entry, n = cache.best([1, 2, 3, 99])
    assert entry is not None and entry.tokens == (1, 2, 3) and n == 3
    cache.take(entry)  # a is now the most recently used: b goes first
    assert cache.put([10, 11, 12], _buf(1000))
    assert cache.holds(a) and not cache.holds(b) and cache.holds(c)
    stats = cache.stats()
    assert stats.entries == 3 and stats.bytes == 3000 and stats.evicted == 1 and stats.hits == 1


def test_lookup_takes_the_longest_shared_prefix_and_skips_what_does_not_fit() -> None:
    cache = PromptCache(capacity_bytes=10_000, min_tokens=2)
    cache.put([1, 2, 3, 4, 5], _buf(100))
    cache.put([1, 2, 9, 9], _buf(100))
    entry, n = cache.best([1, 2, 3, 4, 7, 7])
    assert entry is not None and entry.tokens[:4] == (1, 2, 3, 4) and n == 4
    assert cache.best([8, 8]) == (None, 0)
    assert not cache.put([5, 6, 7], _buf(20_000))  # bigger than the whole cache
    assert not cache.put([5], _buf(10))  # shorter than min_tokens
    cache.put([1, 2, 3, 4, 5, 6, 7], _buf(100))  # supersedes its own prefix [1..5]
    assert not cache.holds([1, 2, 3, 4, 5]) and len(cache) == 2


def test_common_prefix_in_slices() -> None:
    a = list(range(3000))
    assert common_prefix(a, a) == 3000
    assert common_prefix(a, a[:1234] + [-1] + a[1235:]) == 1234
    assert common_prefix(a, []) == 0


def test_claude_codes_billing_line_is_normalised() -> None:
    one = "x-anthropic-billing-header: cc_version=2.1.332.a1b; cc_entrypoint=sdk-cli; cch=3f9a1;\nYou are Claude Code."
    two = "x-anthropic-billing-header: cc_version=2.1.332.a1b; cc_entrypoint=sdk-cli; cch=77e02;\nYou are Claude Code."
    assert normalize_volatile(one) == normalize_volatile(two) == "You are Claude Code."
    assert normalize_volatile("nothing volatile here") == "nothing volatile here"


# --- on a real llama.cpp context -------------------------------------------------------------------
SYSTEM = ("You are a careful coding agent working in a repository. Read files before editing them, keep "
          "changes small, run the tests, and explain what you changed. ") * 12


def _run(engine: object, text: str, n: int = 12) -> tuple[str, object]:
    from fmgguf.runtime.engine.engine import GenerationStats

    stats = GenerationStats()
    toks = engine.tokenize(text, add_bos=engine.add_bos)  # type: ignore[attr-defined]
    out = "".join(engine.stream(toks, stats, max_tokens=n, temperature=0, seed=1))  # type: ignore[attr-defined]
    return out, stats


def test_a_conversation_comes_back_from_the_cache_and_never_leaks(qwen_path: Path) -> None:
    from fmgguf.runtime.engine.engine import Engine, LoadOptions

    a = SYSTEM + "\nUser: write a parser for ini files in Python."
    b = SYSTEM + "\nUser: explain the off-by-one bug in this loop: for i in range(len(x) + 1)."
    other = "An unrelated request: " + "complete this list of fruit: apple, pear, plum, " * 20
    # one slot, so the unrelated request must take conversation a's place (with free slots it would not)
    with Engine(qwen_path, LoadOptions(n_ctx=2048, parallel=1, prompt_cache_bytes=256 * 1024**2)) as cached, \
            Engine(qwen_path, LoadOptions(n_ctx=2048, parallel=1)) as plain:
        _run(cached, a)
        _run(cached, other)  # takes the context: conversation a's state goes to host RAM
        assert len(cached.prompt_states.cache) == 1
        got, stats = _run(cached, b)
        shared = common_prefix(cached.tokenize(a, add_bos=cached.add_bos), cached.tokenize(b, add_bos=cached.add_bos))
        assert stats.restored_tokens == shared > 200  # the shared system prompt came from the cache...
        assert stats.cached_tokens == shared
        _run(plain, a)  # ...and b then decodes exactly as in a context that never saw the cache
        want, plain_stats = _run(plain, b)
        assert plain_stats.restored_tokens == 0 and plain_stats.cached_tokens == shared
        assert got == want
        with Engine(qwen_path, LoadOptions(n_ctx=2048, parallel=1)) as fresh:  # a fresh context: the whole prompt decoded
            fresh_out, fresh_stats = _run(fresh, b)
        assert fresh_stats.cached_tokens == 0 and got == fresh_out
        assert cached.prompt_cache_stats()["hits"] == 1
