"""Whether a draft model's draft pays: measured costs and the expected speed-up of a draft length.

A draft model costs a decode of its own for every drafted token, and the target's batch grows by a
row for each; what comes back is the accepted tokens. On a GPU, or with a draft ten times smaller
than its target, that pays handsomely; on a CPU with a draft not much cheaper than the target it
can cost speed. :class:`DraftCosts` keeps moving averages, measured as the scheduler runs, of

- ``step``: seconds of a target decode with one generating slot and nothing else in the batch;
- ``row``: the extra seconds each drafted row adds to such a decode;
- ``draft``: seconds per drafted token on the draft model (its catch-up with the slot included),

and :meth:`DraftCosts.best_length` picks the draft length with the best expected speed-up for a slot
whose drafted tokens are accepted at ``rate`` (each token taken as accepted with that chance, after
the one before it): ``(1 + rate + rate^2 + ... + rate^k) * step / (step + k * (row + draft))``.
Below :data:`MIN_GAIN` (``LoadOptions.draft_min_gain``) it drafts nothing; a minimum of 0 drafts
whatever the costs (the tests' tiny models, whose draft costs what the target does).
"""

from __future__ import annotations

from dataclasses import dataclass

#: a draft length is worth it when it is expected to be at least this much faster than no draft
MIN_GAIN = 1.05
#: weight of a new measurement in the moving averages
ALPHA = 0.2


@dataclass
class DraftCosts:
    step: float = 0.0
    row: float = 0.0
    draft: float = 0.0

    @staticmethod
    def _mix(old: float, new: float) -> float:
        return new if old <= 0 else (1 - ALPHA) * old + ALPHA * new

    def observe_step(self, seconds: float, drafted_rows: int) -> None:
        """A target decode of one generating slot with ``drafted_rows`` drafted rows (and no prompt rows)."""
        if drafted_rows == 0:
            self.step = self._mix(self.step, seconds)
        elif self.step > 0:
            self.row = self._mix(self.row, max(0.0, seconds - self.step) / drafted_rows)

    def observe_draft(self, seconds: float, tokens: int) -> None:
        """A draft-model call took ``seconds`` for ``tokens`` drafted (a call that drafted none still cost)."""
        self.draft = self._mix(self.draft, seconds / max(tokens, 1))

    @property
    def measured(self) -> bool:
        return self.step > 0 and self.draft > 0

    def gain(self, length: int, rate: float) -> float:
        """Expected decode speed with drafts of ``length`` tokens over speed without drafts."""
        tokens = sum(rate ** i for i in range(length + 1))
        return tokens * self.step / (self.step + length * (self.row + self.draft))

    def best_length(self, most: int, rate: float, min_gain: float = MIN_GAIN) -> int:
        """The draft length up to ``most`` with the best expected gain; 0 when none reaches ``min_gain``
        (``most`` while nothing is measured yet, drafting being how it gets measured, or with no minimum)."""
        if not self.measured or min_gain <= 0:
            return most
        best, best_gain = 0, min_gain
        for k in range(1, most + 1):
            g = self.gain(k, min(rate, 0.99))
            if g > best_gain:
                best, best_gain = k, g
        return best
