"""A generation's tokens turned into the text a caller sees: UTF-8 safe pieces (a character split
over two tokens comes out whole), and stop strings cut off, with any tail that could still become
one held back until it cannot."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextOut:
    """Feed it each token's bytes; it says what text to emit and whether a stop string ended it."""

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in (stops or []) if s]
        self._hold = max((len(s) for s in self.stops), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._pending = ""
        #: the stop string that ended the text (None until one did)
        self.stopped_by: str | None = None

    def feed(self, data: bytes) -> tuple[str, bool]:
        """(text to emit now, True when a stop string was found: nothing after it is emitted)."""
        text = self._decoder.decode(data)
        if not text:
            return "", False
        if not self.stops:
            return text, False
        pending = self._pending + text
        cut = find_stop(pending, self.stops)
        if cut is not None:
            self._pending = ""
            self.stopped_by = next(s for s in self.stops if pending.find(s) == cut)
            return pending[:cut], True
        keep = stop_prefix_len(pending, self.stops, self._hold)
        self._pending = pending[len(pending) - keep:] if keep else ""
        return pending[: len(pending) - keep], False

    def flush(self) -> str:
        """What was held back (a possible stop string's start, a dangling byte sequence)."""
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return tail


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def stop_prefix_len(text: str, stops: Sequence[str], hold: int) -> int:
    """Length of the longest tail of ``text`` that could still become a stop string."""
    for n in range(min(hold - 1, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
