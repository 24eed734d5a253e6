"""Speculative decoding in the slot scheduler's decode loop: n-gram drafting and its checking.

A :class:`Drafter` belongs to one :class:`~fmgguf.runtime.engine.slots.Scheduler`. Its :class:`NgramTable`
holds, for the n-grams (n = 12, 6) of every request's prompt and output, the token that followed
the most recent occurrence; the table is shared across the slots (one request's file helps another
that edits it). Each step, :meth:`Drafter.plan` gives a generating slot a draft: the tokens the table
predicts after its last tokens, chained one lookup at a time. The scheduler puts the slot's last
token plus the draft into the batch with logits for each; after the decode :meth:`Drafter.verify`
samples the slot's own sampler chain at each position in order and stops at the first token that
differs from the draft. So at temperature 0 the longest greedy-agreeing prefix is kept, plus the
model's own next token; at temperature > 0 this *is* the standard rejection rule for a draft that
puts all its probability on one token (accept with probability p(x), else draw from p without x),
so the output distribution is unchanged, and a seeded run draws the same numbers as without drafts.
The rejected tail leaves the KV cache (``llama_memory_seq_rm``).

A request in ``draft`` mode gets its draft from the engine's draft model instead
(:mod:`fmgguf.runtime.engine.draft_model`, greedy, one draft-model decode for all such slots per
token) and is checked the same way; its draft is kept to :data:`MAX_MODEL_DRAFT` tokens.

Tuning (:class:`DraftLength`): the draft grows while whole drafts are accepted and shrinks to what
was accepted otherwise; when the acceptance rate drops low the slot stops drafting for a while (a
pause that doubles each time). No slot drafts while every slot is busy: under load the batch is
full of other slots' tokens already and drafts would only cost throughput.

An n-gram draft is also weighed against what drafted rows cost, as measured
(:mod:`fmgguf.runtime.engine.draft_costs`): on a CPU a handful of drafted rows costs about a decode
each, so a short draft loses even when it is all accepted, and a long one pays only where the slot
is copying. Where a draft is not worth its rows it is *watched* instead: the tokens the model goes on
to generate are compared with it, at no cost, so the slot's copy rate (:class:`CopyRate`, one for
drafts from a 12-token match and one for those from a 6-token match) still learns when the model
starts copying again.

Reference: llama.cpp's common/ngram-*.cpp and speculative.cpp (``--spec-type ngram-simple``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.draft_costs import DraftCosts
from fmgguf.runtime.engine.draft_model import DraftAsk, is_recurrent  # noqa: F401 - the scheduler reads it here
from fmgguf.runtime.engine.sampling import argmax_rows

if TYPE_CHECKING:
    from fmgguf.runtime.engine.draft_model import DraftModel
    from fmgguf.runtime.engine.slot_requests import Request
    from fmgguf.runtime.engine.slots import Scheduler, Slot

#: n-gram orders looked up, longest first. Code repeats short n-grams everywhere (indentation,
#: ``self.``, ``item.``): a 3-gram guess is wrong often enough to cost more than it saves (new code on
#: Qwen2.5-Coder-0.5B: 0.90x with 3-grams, 1.07x without; the rename edit 2.33x either way), while a
#: 12-token match is almost always followed by what followed it before (llama.cpp's ngram-simple
#: matches 12 tokens, ngram-mod 24).
ORDERS = (12, 6)
#: a draft whose first token comes from a shorter match than ORDERS[0] is cut to this many tokens
SHORT_MATCH_DRAFT = 6
#: entries per order before the table starts over (bounds memory: ~100 MB at most)
TABLE_LIMIT = 500_000
#: On a CPU a batch of k rows costs far less than k single-token decodes but far more than one, so
#: long drafts only pay where they are accepted: the length doubles after a whole draft is taken.
MAX_DRAFT, MIN_DRAFT, FIRST_DRAFT = 64, 2, 16
#: acceptance rate (moving average) under which a slot pauses drafting
LOW_ACCEPTANCE = 0.3
#: tokens drafted per step over all slots
STEP_BUDGET = 64
#: a draft model's drafts stay shorter: each of their tokens costs a decode of the draft model
MAX_MODEL_DRAFT = 16
#: every this many steps one step goes without a draft model's draft, to measure a plain decode again
REMEASURE_STEPS = 128
#: a draft model's probe (its first draft after a pause) is this short: it measures, it is not meant to pay
PROBE_DRAFT = 4
#: the longest pause of a draft model's drafts (tokens), and the one where drafts would not pay even if
#: every token were taken (on a CPU, a draft model not much cheaper than its target)
MAX_COST_PAUSE = 256


def check_mode(value: str | None) -> str:
    """``value`` as a speculative mode: off | ngram | draft | draft:<model id> (None: off)."""
    from fmgguf.settings import speculative_mode

    mode = speculative_mode(value)
    if mode is not None:
        return mode
    raise InvalidRequestError(f"speculative {value!r} is not a mode",
                              fix="use off, ngram, draft (the catalog's draft model) or draft:<model id>")


def default_mode(asked: str | None, setting: str | None, draft_name: str | None) -> str:
    """A request's mode: what it asked for, else the ``speculative`` setting, where a draft-model
    setting means off for a model loaded without a draft (it has no pair)."""
    if asked:
        return check_mode(asked)
    mode = check_mode(setting)
    if mode.startswith("draft"):  # the draft loaded with the model is the one the setting named
        return "off" if draft_name is None else "draft"
    return mode


def request_mode(value: str | None, draft_name: str | None) -> str:
    """The mode a request runs with (off | ngram | draft) on an engine whose draft model is ``draft_name``."""
    mode = check_mode(value)
    if not mode.startswith("draft"):
        return mode
    if draft_name is None:
        raise InvalidRequestError(f"speculative {value!r}: this model was loaded without a draft model",
                                  fix="load it with --speculative draft:<model id> (or FMGGUF_SPECULATIVE), "
                                      "or ask for speculative ngram")
    wanted = mode[6:]
    if wanted.endswith(".gguf"):  # a file's draft is named by its stem
        wanted = PureWindowsPath(wanted).stem  # (splits at / and \ alike)
    if wanted and wanted != draft_name and not draft_name.startswith(wanted + ":"):
        raise InvalidRequestError(f"speculative {value!r}: the draft model loaded with this model is {draft_name}",
                                  fix=f"ask for draft:{draft_name} (or draft), or load the model with "
                                      f"--speculative {mode}")
    return "draft"


class NgramTable:
    """n-gram → the token that followed it last, for n in :data:`ORDERS`."""

    def __init__(self) -> None:
        self.maps: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in ORDERS}

    def add(self, tokens: list[int], start: int) -> None:
        """Index the n-grams of ``tokens`` whose next token is at ``start`` or later."""
        for n, table in self.maps.items():
            if len(table) > TABLE_LIMIT:
                table.clear()
            for i in range(max(start, n), len(tokens)):
                table[tuple(tokens[i - n:i])] = tokens[i]

    def next_token(self, history: list[int]) -> tuple[int | None, int]:
        """The token that followed the longest n-gram match at the end of ``history``, and the match's
        order ((None, 0): no match)."""
        for n in ORDERS:
            if len(history) >= n:
                nxt = self.maps[n].get(tuple(history[-n:]))
                if nxt is not None:
                    return nxt, n
        return None, 0

    def draft(self, history: list[int], length: int) -> tuple[list[int], int]:
        """Up to ``length`` tokens predicted after ``history``, each from the longest n-gram found, and the
        order of the match the first one came from (0: no draft); a draft that starts from a short match
        stops at :data:`SHORT_MATCH_DRAFT` tokens."""
        window = history[-ORDERS[0]:]
        out: list[int] = []
        first = 0
        while len(out) < length:
            nxt, order = self.next_token(window)
            if nxt is None:
                break
            if not out:
                first = order
                if order < ORDERS[0]:
                    length = min(length, SHORT_MATCH_DRAFT)
            out.append(nxt)
            window = window[1:] + [nxt] if len(window) >= ORDERS[0] else window + [nxt]
        return out, first


@dataclass
class CopyRate:
    """Draft tokens taken and drafts broken off, recent drafts weighing more; a prior of four tokens
    taken, so that a new slot drafts."""

    hits: float = 4.0
    misses: float = 0.0

    def rate(self) -> float:
        """The chance that the next drafted token is taken."""
        return self.hits / (self.hits + self.misses)

    def count(self, taken: int, broken: bool) -> None:
        self.hits = 0.8 * self.hits + taken
        self.misses = 0.8 * self.misses + (1.0 if broken else 0.0)


@dataclass
class DraftLength:
    """One slot's draft length and its pause after low acceptance."""

    length: int = FIRST_DRAFT
    rate: float = 1.0
    pause: int = 0
    next_pause: int = 8
    #: tokens of the slot's history already in the table
    indexed: int = 0
    #: the next draft is drafted whatever the costs say (after a pause), and the next such pause
    probe: bool = False
    cost_pause: int = 8
    #: n-gram drafts: how often they are taken, by the order of the match they start from, the order of
    #: the draft being checked, and a draft being watched instead of checked (from ``watch_at``, its order)
    copies: dict[int, CopyRate] = field(default_factory=lambda: {n: CopyRate() for n in ORDERS})
    order: int = 0
    watched: list[int] = field(default_factory=list)
    watch_at: int = 0
    watch_order: int = 0

    def watch(self, draft: list[int], at: int, order: int) -> None:
        """Compare ``draft`` with the tokens generated from position ``at`` on (unless one is watched)."""
        if not self.watched:
            self.watched, self.watch_at, self.watch_order = list(draft), at, order

    def follow(self, history: list[int]) -> None:
        """Score the watched draft against what was generated since: at its end or its first wrong token."""
        if not self.watched:
            return
        came = history[self.watch_at:]
        same = 0
        while same < min(len(came), len(self.watched)) and came[same] == self.watched[same]:
            same += 1
        if same < len(came) or same == len(self.watched):
            self.copies[self.watch_order].count(same, same < len(self.watched))
            self.watched = []

    def update(self, drafted: int, accepted: int) -> None:
        # a miss (a renamed word, say) halves the length at most: the copy usually goes on right after it
        self.length = min(MAX_DRAFT, self.length * 2) if accepted == drafted else \
            max(MIN_DRAFT, accepted + 1, self.length // 2)
        self.rate = 0.7 * self.rate + 0.3 * (accepted / drafted)
        if self.order in self.copies:
            self.copies[self.order].count(accepted, accepted < drafted)
        if self.rate < LOW_ACCEPTANCE:
            self.pause, self.next_pause = self.next_pause, min(self.next_pause * 2, 256)
            self.rate, self.length = 0.6, FIRST_DRAFT // 2
        elif accepted == drafted:
            self.next_pause = 8


class Drafter:
    """The n-gram drafting of one scheduler (see the module docstring)."""

    def __init__(self, sched: Scheduler, recurrent: bool) -> None:
        self.sched = sched
        self.table = NgramTable()
        #: recurrent state cannot drop a rejected tail: such models never draft
        self.enabled = not recurrent
        self.state: dict[int, DraftLength] = {}
        #: the engine's draft model (None: only n-gram drafting)
        self.model: DraftModel | None = sched.engine.draft
        #: what a draft model's drafts cost, measured (:mod:`fmgguf.runtime.engine.draft_costs`)
        self.costs = DraftCosts()
        self.min_gain = float(sched.engine.options.draft_min_gain)
        #: this step's generating slots and drafted rows (set by plan, read by observe)
        self._shape = (0, 0)
        self._steps = 0

    def start(self, slot: Slot) -> None:
        self.state[slot.seq] = DraftLength()

    def plan(self, decoding: list[Slot], busy: int, slots: int) -> int:
        """Set ``slot.draft`` for the decoding slots that should draft; returns the tokens drafted."""
        for s in decoding:
            s.draft = []
        if not self.enabled or (busy >= slots and slots > 1):
            return 0
        budget = STEP_BUDGET
        asks: dict[int, Slot] = {}
        wants: list[DraftAsk] = []
        for s in decoding:
            req = s.req
            if req is None or req.speculative == "off" or s.next_token is None or budget <= 0:
                continue
            want, history = self._want(s, req, budget)
            if want <= 0:
                continue
            if req.speculative == "ngram":
                s.draft = self._copy_draft(self.state[s.seq], history, want)
                budget -= len(s.draft)
            elif self.model is not None:
                asks[s.seq] = s
                wants.append(DraftAsk(s.seq, history, want))
                budget -= want
        self._draw(asks, wants)
        drafted = sum(len(s.draft) for s in decoding)
        self._shape = (len(decoding), drafted)
        return drafted

    def _copy_draft(self, st: DraftLength, history: list[int], want: int) -> list[int]:
        """The n-gram draft for a slot, cut to the length its copy rate and the measured costs say pays;
        a draft that does not pay at all is watched instead."""
        draft, order = self.table.draft(history, want)
        if not draft:
            return []
        k = self.costs.copy_length(len(draft), st.copies[order].rate(), self.min_gain)
        if k == 0:
            st.watch(draft, len(history), order)
        else:
            st.order = order
        return draft[:k]

    def _draw(self, asks: dict[int, Slot], wants: list[DraftAsk]) -> None:
        """The draft model's drafts for ``wants``, timed; a step now and then goes without (see REMEASURE_STEPS)."""
        if not wants or self.model is None:
            return
        self._steps += 1
        if self._steps % REMEASURE_STEPS == 1 and len(asks) == 1:
            return
        started = time.perf_counter()
        drafts = self.model.draft(wants)
        if self.model.caught_up <= 2 * len(wants):  # a first catch-up with a whole prompt is no per-token cost
            self.costs.observe_draft(time.perf_counter() - started, sum(len(t) for t in drafts.values()))
        for seq, tokens in drafts.items():
            asks[seq].draft = tokens
            if tokens:  # a probe ends with a draft (not while the draft model still catches up)
                self.state[seq].probe = False

    def observe(self, rows: int, seconds: float) -> None:
        """A target decode of ``rows`` rows took ``seconds``: kept when it held one generating slot and its
        draft only (the costs a draft model's draft is weighed against)."""
        slots, drafted = self._shape
        if slots == 1 and rows == 1 + drafted:
            self.costs.observe_step(seconds, drafted)

    def _want(self, s: Slot, req: Request, budget: int) -> tuple[int, list[int]]:
        """How many tokens to draft for slot ``s`` now (0: none), and its history (indexed for n-grams)."""
        st = self.state.setdefault(s.seq, DraftLength())
        history = s.cache + [s.next_token]  # type: ignore[list-item]
        if req.speculative == "ngram":
            self.table.add(history, max(st.indexed, 1))
            st.indexed = len(history)
            st.follow(history)
        if st.pause > 0:
            st.pause -= 1
            return 0, history
        left = s.limit - req.stats.completion_tokens - 1  # the draft never runs past max_tokens
        room = self.sched.n_ctx - len(history)
        if req.speculative != "draft":
            return min(st.length, MAX_DRAFT, left, room - 1, budget), history
        want = min(st.length, MAX_MODEL_DRAFT, left, room - 1, budget)
        if st.probe:  # the first draft after a pause is a probe (a short one): the acceptance may have changed
            return min(want, PROBE_DRAFT), history
        worth = self.costs.best_length(want, st.rate, self.min_gain) if want > 0 else 0
        if want > 0 and worth == 0:  # not expected to pay now: pause (longer each time), then probe again
            if self.costs.best_length(want, 1.0, self.min_gain) == 0:  # not even all taken: costs changing only
                st.cost_pause = MAX_COST_PAUSE
            st.pause, st.cost_pause, st.probe = st.cost_pause, min(st.cost_pause * 2, MAX_COST_PAUSE), True
        elif worth > 0:
            st.cost_pause = 8
        return worth, history

    def verify(self, s: Slot, req: Request, idx: int) -> list[int]:
        """The tokens the slot takes after a decode that checked its draft (batch indices ``idx``..):
        the accepted draft tokens and the model's own next one. The rejected tail leaves the cache."""
        draft, s.draft = s.draft, []
        sched, sampler = self.sched, s.sampler
        assert sampler is not None
        got: list[int] = []
        # greedy: one numpy argmax over the rows instead of a sampler call for each
        picks = argmax_rows(sched.mod, sched.ctx, idx, len(draft) + 1, sampler.n_vocab) \
            if sampler.stateless_greedy else None
        for j in range(len(draft) + 1):
            tok = picks[j] if picks is not None else sampler.sample(sched.ctx, idx + j)
            got.append(tok)
            if j == len(draft) or tok != draft[j] or sched.engine.is_eog(tok):
                break
        accepted = len(got) - 1
        if accepted < len(draft):
            start = len(s.cache) - len(draft) + accepted
            sched.mod.llama_memory_seq_rm(sched.mem, s.seq, start, -1)
            del s.cache[start:]
        req.stats.drafted_tokens += len(draft)
        req.stats.accepted_tokens += accepted
        self.state.setdefault(s.seq, DraftLength()).update(len(draft), accepted)
        return got
