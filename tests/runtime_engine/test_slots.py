"""Continuous batching on a real tiny model: several streams of one engine at once, each with its own
sampler, prefix reuse per slot, the FIM lane, cancel per slot, grammars."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fmgguf.runtime.engine.constraints import Constraint
from fmgguf.runtime.engine.engine import Engine, GenerationStats, LoadOptions

pytestmark = pytest.mark.slow  # a minute on 2 busy cores: every test drives several generations

PROMPTS = ["def add(a, b):", "import os\nimport sys\n", "class Stack:\n    def push(self, x):",
           "for i in range(10):\n    print("]


@pytest.fixture(scope="module")
def engine(qwen_path: Path):
    with Engine(qwen_path, LoadOptions(n_ctx=1024, parallel=4)) as e:
        yield e


def _run(engine: Engine, prompt: str, **kw) -> tuple[str, GenerationStats]:
    stats = GenerationStats()
    toks = engine.tokenize(prompt, add_bos=engine.add_bos)
    text = "".join(engine.stream(toks, stats, **kw))
    return text, stats


def _together(engine: Engine, prompts: list[str], **kw) -> list[tuple[str, GenerationStats]]:
    out: list = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        start.wait()
        out[i] = _run(engine, prompts[i], **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _overlapped(results: list[tuple[str, GenerationStats]]) -> bool:
    """Whether the generations really ran at the same time (each started before another ended)."""
    spans = [(s.first_token_at, s.finished_at) for _, s in results]
    return all(any(a < e2 and a2 < e for (a2, e2) in spans if (a2, e2) != (a, e)) for a, e in spans)


def test_greedy_text_is_the_same_alone_and_beside_three_others(engine: Engine) -> None:
    alone = [_run(engine, p, max_tokens=24, temperature=0)[0] for p in PROMPTS]
    together = _together(engine, PROMPTS, max_tokens=24, temperature=0)
    assert _overlapped(together)
    assert [t for t, _ in together] == alone
    assert all(s.finish_reason in ("length", "stop") for _, s in together)


def test_seeded_sampling_is_per_slot(engine: Engine) -> None:
    kw = {"max_tokens": 20, "temperature": 0.9, "seed": 7, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    alone = _run(engine, PROMPTS[0], **kw)[0]
    together = _together(engine, [PROMPTS[0]] * 4, **kw)
    assert all(t == alone for t, _ in together)


def test_penalties_change_greedy_output(engine: Engine) -> None:
    plain = _run(engine, "x = x + x + x", max_tokens=30, temperature=0)[0]
    penalised = _run(engine, "x = x + x + x", max_tokens=30, temperature=0, repeat_penalty=1.5,
                     presence_penalty=1.0, frequency_penalty=1.0)[0]
    assert plain != penalised


def test_each_slot_keeps_its_prefix(engine: Engine) -> None:
    a, b = "def alpha(x):\n" * 12, "class Beta:\n    pass\n" * 12
    _run(engine, a, max_tokens=2, temperature=0)
    _run(engine, b, max_tokens=2, temperature=0)
    _, again_a = _run(engine, a + "# more\n", max_tokens=2, temperature=0)
    _, again_b = _run(engine, b + "# more\n", max_tokens=2, temperature=0)
    n_a = len(engine.tokenize(a, add_bos=engine.add_bos))
    assert again_a.cached_tokens >= n_a - 1  # another prompt in between did not evict it
    assert again_b.cached_tokens >= len(engine.tokenize(b, add_bos=engine.add_bos)) - 1


def test_priority_request_starts_while_the_slots_are_busy(qwen_path: Path) -> None:
    with Engine(qwen_path, LoadOptions(n_ctx=2048, parallel=2)) as e:
        long_kw = {"max_tokens": 400, "temperature": 0.8, "seed": 1}
        stop = threading.Event()
        streams = [e.stream(e.tokenize(p, add_bos=e.add_bos), GenerationStats(), cancel=stop, **long_kw)
                   for p in PROMPTS[:2]]
        assert all(next(s) for s in streams)  # both slots taken (each waits for its reader)
        queued_stats = GenerationStats()
        queued = e.stream(e.tokenize(PROMPTS[3], add_bos=e.add_bos), queued_stats, cancel=stop, **long_kw)
        waiter = threading.Thread(target=lambda: next(queued, None), daemon=True)
        waiter.start()
        done: list = []
        fim = threading.Thread(target=lambda: done.append(_run(e, "def fim(", max_tokens=3, temperature=0,
                                                                priority=True)), daemon=True)
        fim.start()
        fim.join(30)
        assert done, "the priority request found no slot"
        stats = done[0][1]
        assert stats.finish_reason in ("length", "stop") and stats.completion_tokens >= 1
        assert queued_stats.first_token_at is None  # the FIM request went ahead of the queued one
        stop.set()
        for s in streams:
            s.close()
        waiter.join(10)
        assert queued_stats.finish_reason == "cancelled"


def test_cancel_frees_the_slot_within_a_step(engine: Engine) -> None:
    cancel = threading.Event()
    stats = GenerationStats()
    stream = engine.stream(engine.tokenize(PROMPTS[1], add_bos=engine.add_bos), stats, max_tokens=900,
                           temperature=0.8, seed=3, cancel=cancel)
    next(stream)
    cancel.set()
    rest = list(stream)
    assert stats.finish_reason == "cancelled" and len(rest) <= 2
    deadline = time.monotonic() + 2
    while engine._slots.active and time.monotonic() < deadline:  # noqa: SLF001 - the scheduler's own count
        time.sleep(0.01)
    assert engine._slots.active == 0  # noqa: SLF001


def test_closing_a_stream_early_cancels_it(engine: Engine) -> None:
    stats = GenerationStats()
    stream = engine.stream(engine.tokenize(PROMPTS[2], add_bos=engine.add_bos), stats, max_tokens=900,
                           temperature=0.8, seed=4)
    next(stream)
    stream.close()
    assert stats.finish_reason == "cancelled" and stats.completion_tokens < 900


def test_grammar_constrains_from_the_first_token(engine: Engine) -> None:
    gbnf = 'root ::= ("yes" | "no") " " [0-9] [0-9]'
    for p in PROMPTS:
        text, stats = _run(engine, p, max_tokens=12, temperature=0.7, seed=5, constraint=Constraint(gbnf))
        assert text.split(" ")[0] in ("yes", "no") and len(text) == len(text.split(" ")[0]) + 3, text
        assert text[-2:].isdigit()


def test_lazy_grammar_waits_for_its_trigger(engine: Engine) -> None:
    free = _run(engine, PROMPTS[0], max_tokens=16, temperature=0)[0]
    lazy = _run(engine, PROMPTS[0], max_tokens=16, temperature=0,
                constraint=Constraint('root ::= "<<never>>" [a-z]+', triggers=("<<never>>",)))[0]
    assert lazy == free


def test_a_bad_grammar_is_a_clear_error(engine: Engine) -> None:
    from fmgguf.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        _run(engine, PROMPTS[0], max_tokens=4, constraint=Constraint("root ::= ("))
    assert _run(engine, PROMPTS[0], max_tokens=2, temperature=0)[1].completion_tokens >= 1


def test_a_slot_decodes_one_piece_ahead_of_its_reader_and_no_more(engine: Engine) -> None:
    """The slot does not wait for its reader to take each piece (it would sit out every other batch),
    but a reader that stops reading holds it within one piece."""
    stats = GenerationStats()
    stream = engine.stream(engine.tokenize(PROMPTS[0], add_bos=engine.add_bos), stats, max_tokens=200, temperature=0)
    first = next(stream)
    sink = engine._slots.slots  # noqa: SLF001 - the scheduler's own slots
    deadline = time.monotonic() + 20
    busy = next(s for s in sink if s.req is not None)
    while len(busy.req.sink._items) < 2 and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(busy.req.sink._items) == 2  # noqa: SLF001 - one queued while the next was decoded, then it waits
    assert stats.finished_at is None
    assert first and len(list(stream)) >= 2
