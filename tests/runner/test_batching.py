"""A runner child serves several streams at once over the unchanged protocol: frames per request id,
interleaved, a cancel per id that leaves the others running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fmgguf.runtime.engine.engine import LoadOptions
from fmgguf.runtime.runner.protocol import to_wire
from fmgguf.runtime.runner.proxy import RunnerProcess

pytestmark = pytest.mark.slow  # a minute on 2 busy cores: every test drives several generations

PROMPTS = ["def add(a, b):", "import os\n", "class Stack:", "for i in range(3):"]


@pytest.fixture(scope="module")
def runner(good_path: Path):
    r = RunnerProcess("tiny")
    r.request("load", "loading", path=str(good_path), options=to_wire(LoadOptions(n_ctx=1024, parallel=4)))
    yield r
    r.close()


def _tokens(r: RunnerProcess, prompt: str) -> list[int]:
    return r.request("call", "tokenizing", name="tokenize", args=[prompt], kwargs={"add_bos": False})


def _start(r: RunnerProcess, toks: list[int], **kw: Any) -> int:
    """Send a stream (tokenize first: ``request`` would take the frames of streams already running)."""
    return r.send("stream", "generating", prompt={"tokens": toks}, started=0.0, kwargs=kw)


def _collect(r: RunnerProcess, rids: list[int], cancel: dict[int, int] | None = None) -> tuple[dict, dict, list]:
    """Read frames until every stream in ``rids`` ended; ``cancel``: rid -> cancel it after that many pieces."""
    texts: dict[int, str] = {i: "" for i in rids}
    ends: dict[int, dict] = {}
    order: list[int] = []
    pieces = dict.fromkeys(rids, 0)
    while len(ends) < len(rids):
        msg = r.channel.recv(60)
        rid = msg.get("re")
        if rid not in texts:
            continue
        if "piece" in msg:
            texts[rid] += msg["piece"]
            pieces[rid] += 1
            order.append(rid)
            if cancel and pieces[rid] == cancel.get(rid):
                r.cancel(rid)
        elif "ok" in msg or "error" in msg:
            ends[rid] = msg
    return texts, ends, order


def test_four_streams_at_once_interleave_and_match_alone(runner: RunnerProcess) -> None:
    kw = {"max_tokens": 24, "temperature": 0}
    toks = {p: _tokens(runner, p) for p in PROMPTS}
    alone = {}
    for p in PROMPTS:
        rid = _start(runner, toks[p], **kw)
        texts, _, _ = _collect(runner, [rid])
        alone[p] = texts[rid]
    rids = [_start(runner, toks[p], **kw) for p in PROMPTS]
    texts, ends, order = _collect(runner, rids)
    assert all("ok" in ends[r] for r in rids)
    assert [texts[r] for r in rids] == [alone[p] for p in PROMPTS]
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches >= len(rids)  # the pieces came interleaved, not one stream after the other


def test_cancel_of_one_stream_leaves_the_others(runner: RunnerProcess) -> None:
    kw = {"max_tokens": 60, "temperature": 0.8, "seed": 9}
    toks = [_tokens(runner, p) for p in PROMPTS[:3]]
    rids = [_start(runner, t, **kw) for t in toks]
    texts, ends, _ = _collect(runner, rids, cancel={rids[1]: 2})
    stats = {r: ends[r]["ok"] for r in rids}
    assert stats[rids[1]]["finish_reason"] == "cancelled" and stats[rids[1]]["completion_tokens"] < 60
    assert all(stats[r]["finish_reason"] in ("length", "stop") for r in (rids[0], rids[2]))
    assert runner.request("stats", "reading stats")["loaded"]


def test_a_stream_refused_before_its_first_token_gets_one_error_frame(runner: RunnerProcess) -> None:
    """Streams start on the runner's reader thread: one that fails there (a prompt longer than the
    context) answers with its error, and the stream beside it and the next one are served."""
    good = _start(runner, _tokens(runner, PROMPTS[0]), max_tokens=8, temperature=0)
    bad = _start(runner, _tokens(runner, "x = 1\n" * 400), max_tokens=8, temperature=0)
    _, ends, _ = _collect(runner, [good, bad])
    assert ends[bad]["error"]["type"] == "ContextOverflowError"
    assert ends[good]["ok"]["finish_reason"] in ("length", "stop")
    again = _start(runner, _tokens(runner, PROMPTS[1]), max_tokens=4, temperature=0)
    assert "ok" in _collect(runner, [again])[1][again]
