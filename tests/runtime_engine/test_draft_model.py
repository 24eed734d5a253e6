"""Speculative decoding with a draft model (a second model of the same vocabulary in the engine):
the greedy text is the text without drafts, the drafts are really taken, a draft of another
vocabulary is refused at load, and a request asks only for the draft model that is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.draft_model import CATCH_UP_STEP
from fmgguf.runtime.engine.drafting import check_mode, default_mode, request_mode
from fmgguf.runtime.engine.engine import Engine, GenerationStats, LoadOptions

PROMPTS = ["def fib(n):\n", "class Queue:\n    def __init__(self):\n", "import os\n\ndef walk(root):\n"]


@pytest.fixture(scope="module")
def target_path() -> Path:
    from fmgguf.testing import build_tiny_model

    return build_tiny_model("qwen2", "unit", "F16", seed=0)


@pytest.fixture(scope="module")
def draft_path() -> Path:
    from fmgguf.testing import build_tiny_model

    return build_tiny_model("qwen2", "unit", "F16", seed=1)


def _run(engine: Engine, prompt: str, **kw) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    text = "".join(engine.stream(engine.tokenize(prompt, add_bos=engine.add_bos), stats, **kw))
    return text, stats


@pytest.mark.slow
def test_greedy_text_with_a_draft_model_is_the_text_without(target_path: Path, draft_path: Path) -> None:
    with Engine(target_path, LoadOptions(n_ctx=512, parallel=2)) as plain:
        expected = [_run(plain, p, max_tokens=40, temperature=0)[0] for p in PROMPTS]
    opts = LoadOptions(n_ctx=512, parallel=2, draft_path=str(draft_path), draft_name="tiny-draft",
                       draft_p_min=0.0, draft_min_gain=0.0)  # random tiny models are never sure, and their
    # drafts cost what the target does: draft anyway
    with Engine(target_path, opts) as e:
        assert e.draft_name == "tiny-draft"
        runs = [_run(e, p, max_tokens=40, temperature=0, speculative="draft") for p in PROMPTS]
        assert [t for t, _ in runs] == expected
        assert all(s.completion_tokens == 40 for _, s in runs)
        assert sum(s.drafted_tokens for _, s in runs) > 0, "the draft model drafted nothing: the check proves nothing"
        assert all(s.accepted_tokens <= s.drafted_tokens for _, s in runs)
        # off, on the same engine: no drafts
        assert _run(e, PROMPTS[0], max_tokens=10, temperature=0)[1].drafted_tokens == 0


@pytest.mark.slow
def test_a_draft_identical_to_the_target_is_accepted_whole(target_path: Path) -> None:
    """The target drafting for itself: every draft token is what the target picks (F16 weights, no
    quantized kernels: batched and single decodes agree), so nearly all are accepted, and max_tokens holds."""
    opts = LoadOptions(n_ctx=512, parallel=2, draft_path=str(target_path), draft_p_min=0.0, draft_min_gain=0.0)
    with Engine(target_path, opts) as e:
        plain = _run(e, PROMPTS[1], max_tokens=48, temperature=0)[0]
        text, stats = _run(e, PROMPTS[1], max_tokens=48, temperature=0, speculative=f"draft:{target_path.name}")
        assert text == plain and stats.completion_tokens == 48
        assert stats.drafted_tokens >= 24 and stats.accepted_tokens >= 0.9 * stats.drafted_tokens
        for n in (1, 5):
            assert _run(e, PROMPTS[1], max_tokens=n, temperature=0, speculative="draft")[1].completion_tokens == n
        # a prompt longer than a catch-up step: the draft takes it in chunks while the slot decodes on
        long_prompt = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(24))
        assert len(e.tokenize(long_prompt)) > 2 * CATCH_UP_STEP
        plain = _run(e, long_prompt, max_tokens=64, temperature=0)[0]
        text, stats = _run(e, long_prompt, max_tokens=64, temperature=0, speculative="draft")
        assert text == plain and stats.accepted_tokens >= 0.9 * stats.drafted_tokens > 0
        assert e._slots.drafter.model.caught_up_most <= CATCH_UP_STEP + 1


def test_a_draft_of_another_vocabulary_is_refused(qwen_path: Path, llama_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="cannot draft for") as err:
        Engine(qwen_path, LoadOptions(n_ctx=128, parallel=1, draft_path=str(llama_path), draft_name="tiny-llama"))
    assert "tiny-llama" in str(err.value) and "same family" in str(err.value)


def test_modes_name_the_draft_model() -> None:
    assert check_mode("draft:Qwen2.5-Coder-0.5B") == "draft:Qwen2.5-Coder-0.5B"  # ids and paths keep their case
    assert check_mode("DRAFT") == "draft"
    assert request_mode("draft", "qwen2.5-coder-0.5b-instruct:Q4_K_M") == "draft"
    assert request_mode("draft:qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct:Q4_K_M") == "draft"
    with pytest.raises(InvalidRequestError, match="loaded without a draft model"):
        request_mode("draft", None)
    assert request_mode("draft:/models/x.gguf", "x") == "draft"  # a file's draft is named by its stem
    with pytest.raises(InvalidRequestError, match="draft model loaded with this model is x"):
        request_mode("draft:y", "x")
    # the setting's draft mode on a model without a draft (the pair's small model itself) means off
    assert default_mode(None, "draft", None) == "off" and default_mode(None, "draft:x", "x") == "draft"
    assert default_mode("ngram", "draft", None) == "ngram"


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["process", "inprocess"])
def test_the_setting_loads_the_draft_beside_the_model(tmp_path: Path, target_path: Path, draft_path: Path,
                                                      isolation: str) -> None:
    """``speculative: draft:<file>`` loads the draft in the model's runner (or process); requests draft
    by default with the same greedy text, and a request may still ask for off or ngram."""
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings

    own = tmp_path / "own-copy.gguf"  # the target drafting for itself (a copy: the same file is never its draft)
    own.write_bytes(target_path.read_bytes())
    # (no minimum gain: costs measured under load would make the drafts, and so the batches, vary)
    settings = load_settings(home=tmp_path, speculative=f"draft:{own}", draft_p_min=0.0, draft_min_gain=0.0)
    m = ModelManager(settings, keep_alive=0, isolation=isolation)
    try:
        m.load_file(target_path, n_ctx=256)
        engine = m.sup.selected_resident().engine
        assert engine.draft_name == "own-copy"
        assert engine.memory_bytes() > 0
        plain = m.generate_text(PROMPTS[0], max_tokens=24, temperature=0, speculative="off")
        drafted = m.generate_text(PROMPTS[0], max_tokens=24, temperature=0)
        assert plain.drafted_tokens == 0
        assert drafted.text == plain.text and drafted.accepted_tokens > 0
        assert m.generate_text(PROMPTS[0], max_tokens=24, temperature=0, speculative="ngram").text == plain.text
    finally:
        m.close()
    with pytest.raises(Exception, match="does not exist"):
        bad = ModelManager(load_settings(home=tmp_path, speculative="draft:/nowhere/x.gguf"), keep_alive=0,
                           isolation=isolation)
        try:
            bad.load_file(target_path, n_ctx=256)
        finally:
            bad.close()


def test_draft_costs_choose_a_length_only_where_it_pays() -> None:
    from fmgguf.runtime.engine.draft_costs import DraftCosts

    assert DraftCosts().best_length(16, 0.1) == 16  # nothing measured yet: draft, and so measure
    cheap = DraftCosts(step=1.0, row=0.05, draft=0.1)  # a draft ten times cheaper than its target
    assert 3 <= cheap.best_length(16, 0.8) <= 8 and cheap.best_length(16, 0.99) >= 10
    assert cheap.gain(cheap.best_length(16, 0.8), 0.8) > 1.8
    dear = DraftCosts(step=1.0, row=0.05, draft=0.95)  # as dear as the target itself
    assert dear.best_length(16, 0.99) == 0 and dear.best_length(16, 0.5) == 0
    measured = DraftCosts()
    measured.observe_step(0.10, 0)
    measured.observe_step(0.30, 4)  # four drafted rows added 0.2 s
    measured.observe_draft(0.4, 8)
    assert (measured.step, round(measured.row, 3), measured.draft) == (0.10, 0.05, 0.05)


@pytest.mark.slow
def test_a_draft_that_does_not_pay_is_paused_with_the_same_text(target_path: Path) -> None:
    """Costs that say the draft does not pay even if all of it were taken (frozen here: measured ones move
    with the machine's load): the slot does not try, and pauses for the longest pause (a short probe
    then); without a minimum it drafts throughout."""
    from fmgguf.runtime.engine.draft_costs import DraftCosts

    class Frozen(DraftCosts):
        def observe_step(self, seconds: float, drafted_rows: int) -> None:
            pass

        def observe_draft(self, seconds: float, tokens: int) -> None:
            pass

    opts = LoadOptions(n_ctx=512, parallel=2, draft_path=str(target_path), draft_p_min=0.0)
    with Engine(target_path, opts) as e:
        plain = _run(e, PROMPTS[1], max_tokens=48, temperature=0)[0]
        e._slots.drafter.costs = Frozen(step=0.01, row=0.001, draft=0.05)  # a draft 5x dearer than the target
        text, dear = _run(e, PROMPTS[1], max_tokens=48, temperature=0, speculative="draft")
        e._slots.drafter.min_gain = 0.0  # no minimum: it drafts whatever the costs
        again, free = _run(e, PROMPTS[1], max_tokens=48, temperature=0, speculative="draft")
        assert text == again == plain and dear.completion_tokens == free.completion_tokens == 48
        assert dear.drafted_tokens == 0 and free.drafted_tokens >= 40
        e._slots.drafter.costs = Frozen(step=0.01, row=0.0005, draft=0.001)  # a cheap draft: it pays
        e._slots.drafter.min_gain = 1.05
        assert _run(e, PROMPTS[1], max_tokens=48, temperature=0, speculative="draft")[1].drafted_tokens >= 40


def test_which_draft_a_load_brings(tmp_path: Path, target_path: Path, draft_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """The catalog's pair for ``draft`` (a pair not downloaded: no draft, said in the log), the model or
    file named for ``draft:<ref>`` (one not downloaded: refused), never the model itself."""
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.errors import NotDownloadedError
    from fmgguf.runtime.draft_pick import fit_draft, pick_draft
    from fmgguf.settings import load_settings

    settings = load_settings(home=tmp_path)
    catalog = Catalog.load(settings)
    store = ModelDownloader(settings=settings, catalog=catalog)  # an empty store: nothing is downloaded
    seven, small = catalog.get("qwen2.5-coder-7b-instruct"), catalog.get("qwen2.5-coder-0.5b-instruct")
    assert pick_draft("ngram", target_path, seven, catalog, store) is None
    with caplog.at_level("WARNING"):
        assert pick_draft("draft", target_path, seven, catalog, store) is None
    assert "qwen2.5-coder-0.5b-instruct is not downloaded" in caplog.text
    with pytest.raises(NotDownloadedError, match="draft model qwen2.5-coder-0.5b-instruct:Q4_K_M is not downloaded"):
        pick_draft("draft:qwen2.5-coder-0.5b-instruct", target_path, seven, catalog, store)
    assert pick_draft("draft", target_path, small, catalog, store) is None  # the pair's small model has none
    named = pick_draft(f"draft:{draft_path}", target_path, None, catalog, store)
    assert named is not None and named.path == draft_path and named.name == draft_path.stem
    assert pick_draft(f"draft:{target_path}", target_path, None, catalog, store) is None
    with pytest.raises(NotDownloadedError, match="does not exist"):
        pick_draft("draft:/nowhere/x.gguf", target_path, None, catalog, store)
    # fmgguf fit counts a pair that is not downloaded from catalog numbers
    counted = fit_draft("draft", seven, catalog, store)
    assert counted is not None and counted.path is None and counted.card is small
