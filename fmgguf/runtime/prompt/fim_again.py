"""Ask once more when an instruct model skipped the gap (a card's ``fim.prompt: chat``).

Through the chat, with the mark glued to the start of the line of code after the cursor, the 0.5B
Qwen2.5-Coder often writes that line again at once: it reads the mark as a tag on the line rather
than as missing code. The cutter then cuts the middle at its first line (a repeat of the suffix) and
nothing is left: 13 of the 17 single-line HumanEval gaps it failed came back empty so
(benchmarks/bench_fim_quality.py). When nothing of the middle is left, the gap is asked for
once more, in the same turn of the model, with the mark on a line of its own at the indentation the
missing line likely has (:func:`fmgguf.runtime.prompt.fim_chat.gap_indent`). The first ask stays as it
was: with the mark on its own line from the start, gaps it filled were lost to a wrong indentation or
a copied mark. A copy of the mark in the second middle is cut like a copy of the suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fmgguf.runtime.engine.engine import GenerationStats
from fmgguf.runtime.engine.engine_api import CancelFlag
from fmgguf.runtime.prompt.fim_chat import MARK
from fmgguf.runtime.prompt.fim_stop import FimCutter, cut_pieces

if TYPE_CHECKING:
    from fmgguf.runtime.engine.engine_api import EngineAPI
    from fmgguf.runtime.requests import Again as AgainBuild
    from fmgguf.runtime.requests import Prompt
    from fmgguf.runtime.runner.residency import Resident

#: starts the second ask's generation with its cancel flag and stats (None: there is none)
Again = Callable[[CancelFlag, GenerationStats], "Iterator[str] | None"]


def skipped(cutter: FimCutter, finish: str | None) -> bool:
    """Nothing of the middle is left: the model skipped the gap (its first line repeated the suffix, or
    left the block, e.g. a copy of the mark at the line start; or it ended at once)."""
    return not cutter.result and (cutter.reason in ("suffix", "indent") or (cutter.reason is None and finish == "stop"))


@dataclass
class FimRun:
    """One FIM request's generations: the cutter and stats of the one that answers (the second ask's once
    it runs), and the user's cancel flag, which reaches each generation's own flag (a cut sets only that)."""

    cutter: FimCutter
    stats: GenerationStats
    cancel: CancelFlag

    def flag(self) -> CancelFlag:
        """A cancel flag for one generation, set when the user's is."""
        own = CancelFlag()
        self.cancel.on_set(own.set)
        return own

    def pieces(self, first: Iterator[str], flag: CancelFlag, again: Again | None) -> Iterator[str]:
        """``first`` through the cutter; when it skipped the gap, the second ask's pieces through a fresh one."""
        stats = self.stats
        yield from cut_pieces(first, self.cutter, flag, lambda: stats.finish_reason)
        if again is None or self.cancel.is_set() or not skipped(self.cutter, stats.finish_reason):
            return
        flag, retry = self.flag(), GenerationStats(started=stats.started)
        second = again(flag, retry)
        if second is None:
            return
        rules = self.cutter.rules
        self.cutter = FimCutter(replace(rules, suffix_lines=(*rules.suffix_lines, MARK)))
        self.stats = retry
        try:
            yield from cut_pieces(second, self.cutter, flag, lambda: retry.finish_reason)
        finally:
            retry.prompt_tokens += stats.prompt_tokens
            retry.completion_tokens += stats.completion_tokens
            retry.cached_tokens += stats.cached_tokens


def again_of(build: AgainBuild | None, engine: EngineAPI, resident: Resident,
             go: Callable[[Prompt, CancelFlag, GenerationStats], Iterator[str]]) -> Again | None:
    """The second ask of a request as :meth:`FimRun.pieces` starts it: ``build``'s prompt through ``go``
    (the manager's start of a generation), or None (no second ask; its prompt would not fit the context)."""
    if build is None:
        return None

    def start(flag: CancelFlag, stats: GenerationStats) -> Iterator[str] | None:
        prompt = build(engine, resident)
        if prompt is None or (isinstance(prompt[0], list) and len(prompt[0]) >= engine.n_ctx):
            return None
        return go(prompt, flag, stats)
    return start

