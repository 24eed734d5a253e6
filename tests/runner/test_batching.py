"""A runner child serves several streams at once over the unchanged protocol: frames per request id,
interleaved, a cancel per id that leaves the others running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fmgguf.runtime.engine import LoadOptions
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


def _start(r: RunnerProcess, prompt: str, **kw: Any) -> int:
    toks = r.request("call", "tokenizing", name="tokenize", args=[prompt], kwargs={"add_bos": False})
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
    alone = {}
    for p in PROMPTS:
        rid = _start(runner, p, **kw)
        texts, _, _ = _collect(runner, [rid])
        alone[p] = texts[rid]
    rids = [_start(runner, p, **kw) for p in PROMPTS]
    texts, ends, order = _collect(runner, rids)
    assert all("ok" in ends[r] for r in rids)
    assert [texts[r] for r in rids] == [alone[p] for p in PROMPTS]
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches >= len(rids)  # the pieces came interleaved, not one stream after the other


def test_cancel_of_one_stream_leaves_the_others(runner: RunnerProcess) -> None:
    kw = {"max_tokens": 60, "temperature": 0.8, "seed": 9}
    rids = [_start(runner, p, **kw) for p in PROMPTS[:3]]
    texts, ends, _ = _collect(runner, rids, cancel={rids[1]: 2})
    stats = {r: ends[r]["ok"] for r in rids}
    assert stats[rids[1]]["finish_reason"] == "cancelled" and stats[rids[1]]["completion_tokens"] < 60
    assert all(stats[r]["finish_reason"] in ("length", "stop") for r in (rids[0], rids[2]))
    assert runner.request("stats", "reading stats")["loaded"]
