"""Whether a draft model's draft pays: measured costs and the expected speed-up of a draft length.

A draft model costs a decode of its own for every drafted token, and the target's batch grows by a
row for each; what comes back is the accepted tokens. On a GPU, or with a draft ten times smaller
than its target, that pays handsomely; on a CPU with a draft not much cheaper than the target it
can cost speed. :class:`DraftCosts` keeps moving averages, measured as the scheduler runs, of

- ``step``: seconds of a target decode with one generating slot and nothing else in the batch;
- ``row``: the extra seconds each drafted row adds to such a decode;
- ``draft``: seconds per drafted token on the draft model (its catch-up with the slot included),

The extra seconds per drafted row are also kept by draft size (1, 2-3, 4-7, ... rows): on a CPU a few
rows cost nearly a decode each, dozens far less per row (Qwen2.5-Coder-0.5B Q4_K_M, one thread, this
2-core box: 7 rows 7.5 decodes, 33 rows 18, 45 rows 15), and a size's own measure is used where there is one.

:meth:`DraftCosts.best_length` picks the draft length with the best expected speed-up for a slot
whose drafted tokens are accepted at ``rate`` (each token taken as accepted with that chance, after
the one before it): ``(1 + rate + rate^2 + ... + rate^k) * step / (step + k * (row + draft))``.
Below :data:`MIN_GAIN` (``LoadOptions.draft_min_gain``) it drafts nothing; a minimum of 0 drafts
whatever the costs (the tests' tiny models, whose draft costs what the target does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: a draft length is worth it when it is expected to be at least this much faster than no draft
MIN_GAIN = 1.05
#: weight of a new measurement in the moving averages
ALPHA = 0.2
#: an n-gram draft no larger than this class (7 tokens) is tried while no size is measured
FIRST_CLASS = 3
#: guessed cost of a drafted row one size class beyond the largest measured, against that class's
PER_CLASS = 0.7


def size_class(rows: int) -> int:
    """The class of a draft of ``rows`` rows: 1, 2-3, 4-7, 8-15, ... (powers of two)."""
    return max(1, int(rows)).bit_length()


@dataclass
class DraftCosts:
    step: float = 0.0
    row: float = 0.0
    draft: float = 0.0
    #: extra seconds per drafted row, by :func:`size_class` of the draft
    rows: dict[int, float] = field(default_factory=dict)

    @staticmethod
    def _mix(old: float, new: float) -> float:
        return new if old <= 0 else (1 - ALPHA) * old + ALPHA * new

    def observe_step(self, seconds: float, drafted_rows: int) -> None:
        """A target decode of one generating slot with ``drafted_rows`` drafted rows (and no prompt rows)."""
        if drafted_rows == 0:
            self.step = self._mix(self.step, seconds)
        elif self.step > 0:
            per_row = max(0.0, seconds - self.step) / drafted_rows
            self.row = self._mix(self.row, per_row)
            size = size_class(drafted_rows)
            self.rows[size] = self._mix(self.rows.get(size, 0.0), per_row)

    def observe_draft(self, seconds: float, tokens: int) -> None:
        """A draft-model call took ``seconds`` for ``tokens`` drafted (a call that drafted none still cost)."""
        self.draft = self._mix(self.draft, seconds / max(tokens, 1))

    @property
    def measured(self) -> bool:
        return self.step > 0 and self.draft > 0

    def gain(self, length: int, rate: float, draft: float | None = None, row: float | None = None) -> float:
        """Expected decode speed with drafts of ``length`` tokens over speed without drafts (``draft``:
        seconds to draft a token, None: the draft model's measure; ``row``: a drafted row's, None: measured)."""
        # 1 + rate + ... + rate^length, in closed form: the length loops call this for every length
        tokens = float(length + 1) if rate == 1.0 else (1.0 - rate ** (length + 1)) / (1.0 - rate)
        if row is None:
            row = self.rows.get(size_class(length), self.row)
        return tokens * self.step / (self.step + length * (row + (self.draft if draft is None else draft)))

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

    def copy_length(self, most: int, rate: float, min_gain: float = MIN_GAIN) -> int:
        """:meth:`best_length` for a draft that costs nothing to make (looked up in the n-gram table).
        Sizes are tried one class beyond the largest measured at a time (that is how they get measured),
        weighed with a cost guessed from the measured ones, so a slot that is not copying tries none."""
        if most <= 0 or self.step <= 0 or min_gain <= 0:
            return max(most, 0)
        top = max(self.rows, default=FIRST_CLASS - 1)
        guesses = {size: self.row_guess(size) for size in range(1, top + 2)}
        best, best_gain = 0, min_gain
        for k in range(1, most + 1):
            size = size_class(k)
            if size > top + 1:
                break
            row = guesses[size]
            if row is None:  # nothing measured yet: the first draft measures
                best = k
                continue
            g = self.gain(k, min(rate, 0.99), draft=0.0, row=row)
            if g > best_gain:
                best, best_gain = k, g
        return best

    def row_guess(self, size: int) -> float | None:
        """Extra seconds per drafted row for a draft of size class ``size``: measured, else the next
        larger measured class's (rows get cheaper as drafts grow), else the largest measured one's
        falling by :data:`PER_CLASS` a class; None while nothing is measured."""
        if size in self.rows:
            return self.rows[size]
        larger = [c for c in self.rows if c > size]
        if larger:
            return self.rows[min(larger)]
        if not self.rows:
            return None
        top = max(self.rows)
        return self.rows[top] * PER_CLASS ** (size - top)
