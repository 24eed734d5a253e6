"""Speculative decoding (n-gram drafts checked in the slot scheduler's batch) on a real tiny model:
the same text as plain decoding, with drafts really accepted; the draft's rejected tail leaves the
KV cache (a later request reusing the cache gets the same text); modes are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.drafting import SHORT_MATCH_DRAFT, NgramTable, check_mode
from fmgguf.runtime.engine.engine import Engine, GenerationStats, LoadOptions

#: a prompt with repeats to look up
PROMPT = "def add(a, b):\n    return a + b\n\n" * 6 + "class Stack:\n    def push(self, x):\n"


@pytest.fixture(scope="module")
def engine(qwen_path: Path):
    with Engine(qwen_path, LoadOptions(n_ctx=1024, parallel=2)) as e:
        yield e


def _run(engine: Engine, prompt: str, **kw) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    text = "".join(engine.stream(engine.tokenize(prompt, add_bos=engine.add_bos), stats, **kw))
    return text, stats


@pytest.mark.slow
def test_greedy_text_with_ngram_drafts_is_the_text_without(engine: Engine) -> None:
    plain, ps = _run(engine, PROMPT, max_tokens=96, temperature=0)
    assert ps.drafted_tokens == 0 and ps.completion_tokens == 96
    # the table is shared across requests: the second drafted run looks up the first one's output
    runs = [_run(engine, PROMPT, max_tokens=96, temperature=0, speculative="ngram") for _ in range(2)]
    assert [t for t, _ in runs] == [plain, plain]
    assert [s.completion_tokens for _, s in runs] == [96, 96]
    assert runs[1][1].accepted_tokens >= 48, "drafts were not accepted: the check proves nothing"
    assert all(s.accepted_tokens <= s.drafted_tokens for _, s in runs)
    # a differently ending prompt on the same slot reuses the cache drafted into: same text as without
    other = PROMPT + "    def pop(self):\n"
    assert _run(engine, other, max_tokens=40, temperature=0, speculative="ngram")[0] == \
        _run(engine, other, max_tokens=40, temperature=0)[0]


@pytest.mark.slow
def test_sampling_above_temperature_zero_checks_drafts_too(engine: Engine) -> None:
    """Above temperature 0 the check samples the slot's chain at each drafted position and keeps the
    draft while it agrees: the rejection rule for a one-token draft (the distribution is unchanged)."""
    kw = dict(max_tokens=40, temperature=0.7, seed=11)
    _run(engine, PROMPT, speculative="ngram", **kw)  # its output goes into the table: the same seed follows it
    text, stats = _run(engine, PROMPT, speculative="ngram", **kw)
    assert stats.completion_tokens == 40 and stats.drafted_tokens > 0
    assert 0 < stats.accepted_tokens <= stats.drafted_tokens


@pytest.mark.slow
def test_max_tokens_holds_with_drafts(engine: Engine) -> None:
    _run(engine, PROMPT, max_tokens=50, temperature=0, speculative="ngram")
    for n in (1, 7, 13):
        text, stats = _run(engine, PROMPT, max_tokens=n, temperature=0, speculative="ngram")
        assert stats.completion_tokens == n and stats.finish_reason == "length"


def test_modes() -> None:
    assert check_mode(None) == "off" and check_mode("NGRAM") == "ngram" and check_mode("off") == "off"
    with pytest.raises(InvalidRequestError, match="not a mode"):
        check_mode("lookahead")


def test_ngram_table_drafts_long_after_a_long_match_short_after_a_short_one() -> None:
    t = NgramTable()
    body = list(range(100, 140))  # 40 distinct tokens
    t.add(body, 0)
    assert t.draft([7] + body[:12], 20) == body[12:32]  # a 12-token match: as long as asked
    assert t.draft([7, 8] + body[:6], 20) == body[6:6 + SHORT_MATCH_DRAFT]  # a 6-token match: cut short
    assert t.draft([7, 8] + body[:5], 20) == []  # five tokens are too few to guess from (code repeats them)
    t.add([1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 9], 0)
    assert t.draft([1, 2, 3, 4, 5, 6], 1) == [9]  # the latest occurrence wins


def test_the_setting_is_checked(tmp_path: Path) -> None:
    from fmgguf.errors import ConfigError
    from fmgguf.settings import Settings

    assert Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_SPECULATIVE": "NGram"}).speculative == "ngram"
    assert Settings.load(env={"FMGGUF_HOME": str(tmp_path)}).speculative == "off"
    with pytest.raises(ConfigError, match="FMGGUF_SPECULATIVE"):
        Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_SPECULATIVE": "fast"})
