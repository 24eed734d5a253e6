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
    assert t.draft([7] + body[:12], 20) == (body[12:32], 12)  # a 12-token match: as long as asked
    assert t.draft([7, 8] + body[:6], 20) == (body[6:6 + SHORT_MATCH_DRAFT], 6)  # a 6-token match: cut short
    assert t.draft([7, 8] + body[:5], 20) == ([], 0)  # five tokens are too few to guess from (code repeats them)
    t.add([1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 9], 0)
    assert t.draft([1, 2, 3, 4, 5, 6], 1) == ([9], 6)  # the latest occurrence wins


def test_the_setting_is_checked(tmp_path: Path) -> None:
    from fmgguf.errors import ConfigError
    from fmgguf.settings import Settings

    assert Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_SPECULATIVE": "NGram"}).speculative == "ngram"
    assert Settings.load(env={"FMGGUF_HOME": str(tmp_path)}).speculative == "off"
    with pytest.raises(ConfigError, match="FMGGUF_SPECULATIVE"):
        Settings.load(env={"FMGGUF_HOME": str(tmp_path), "FMGGUF_SPECULATIVE": "fast"})


def test_drafted_rows_are_weighed_against_a_decode() -> None:
    """n-gram drafts cost nothing to make, but each drafted row costs compute: on a CPU a handful of rows
    cost about a decode each (a short draft loses even when all of it is taken), dozens far less."""
    from fmgguf.runtime.engine.draft_costs import DraftCosts

    c = DraftCosts()
    c.observe_step(0.020, 0)
    assert c.copy_length(32, 0.99) == 7  # nothing measured: a first, small draft measures
    c.observe_step(0.020 + 6 * 0.022, 6)  # six rows cost more than six decodes
    assert c.copy_length(6, 0.99) == 0  # never pays, even all taken
    assert 8 <= c.copy_length(32, 0.99) <= 15  # one size beyond the measured, guessed cheaper per row
    c.observe_step(0.020 + 32 * 0.0107, 32)  # 32 rows: about half a decode each
    assert c.copy_length(48, 0.99) >= 8  # a slot that copies drafts more than a few rows
    assert c.copy_length(48, 0.75) == 0  # one that does not, not at all


def test_a_draft_not_worth_its_rows_is_watched_and_still_teaches_the_rate() -> None:
    from fmgguf.runtime.engine.drafting import DraftLength

    st = DraftLength()
    before = st.copies[12].rate()
    history = list(range(10))
    st.watch([5, 6, 7], len(history), 12)
    st.follow(history + [5, 6])  # still on track: not scored yet
    assert st.watched and st.copies[12].rate() == before
    st.follow(history + [5, 6, 7])  # all three came: three taken, none broken
    assert not st.watched and st.copies[12].hits > 3 and st.copies[12].misses == 0
    st.watch([8, 9], 13, 12)
    st.follow(history + [5, 6, 7, 8, 1])  # broken off at the second token
    assert not st.watched and st.copies[12].misses == 1.0 and st.copies[12].rate() < before
    assert st.copies[6].rate() == before  # the other order's rate is its own


@pytest.mark.slow
def test_measured_costs_stop_drafts_that_do_not_pay(engine: Engine) -> None:
    """With drafted rows measured at five decodes each, a request that could draft (its prompt repeats)
    drafts nothing, and its text is the same."""
    from fmgguf.runtime.engine.draft_costs import DraftCosts

    plain, _ = _run(engine, PROMPT, max_tokens=40, temperature=0)
    drafter = engine._slots.drafter
    saved = drafter.costs
    drafter.costs = DraftCosts(step=1.0, rows={size: 5.0 for size in range(1, 8)})
    try:
        text, stats = _run(engine, PROMPT, max_tokens=40, temperature=0, speculative="ngram")
    finally:
        drafter.costs = saved
    assert text == plain and stats.drafted_tokens == 0
    text, stats = _run(engine, PROMPT, max_tokens=40, temperature=0, speculative="ngram")
    assert text == plain and stats.drafted_tokens > 0  # measured as they are (a tiny model's rows are cheap)
