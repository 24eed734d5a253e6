"""The one rule for "can this model fill in the middle?", used by the CLI, the server, `inspect`,
`import-gguf` and the benchmark (through ``ModelManager.fill_in_middle``).

- A catalog card decides when it has a ``fim`` block (``supported: true|false``; the tokens it names).
  ``import-gguf`` writes one (from the vocabulary, or from ``--fim/--no-fim``), so an imported model
  answers the same everywhere without reading its file again.
- A file with no card (loaded by path), or an imported entry written before cards carried a ``fim``
  block, is FIM-capable when its vocabulary holds a known FIM token set
  (:data:`fmgguf.runtime.prompt.prompts.KNOWN_FIM_TOKENS`, by text, as llama.cpp finds them).
- Any other card without a ``fim`` block says no.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import FIMNotSupportedError, GGUFError, InvalidRequestError
from fmgguf.runtime.prompt.prompts import KNOWN_FIM_TOKENS

if TYPE_CHECKING:
    from fmgguf.catalog import FIM, ModelCard
    from fmgguf.settings import Settings

from fmgguf.download.store import LOCAL_REPO_PREFIX

FIM_FIX = "pick a model whose `fmgguf info ID` says FIM: yes, or use plain completion (`fmgguf run`)"


@dataclass(frozen=True)
class FimVerdict:
    """Whether a model does FIM, the one-line reason, and who decided ("card" or "vocabulary")."""

    able: bool
    reason: str
    by: str
    #: the token texts (prefix, suffix, middle) and order, where known
    tokens: tuple[str, str, str | None] | None = None
    order: str = "PSM"
    #: the card's prompt style (``tokens`` or ``chat``)
    prompt: str = "tokens"

    def refusal(self) -> FIMNotSupportedError:
        return FIMNotSupportedError(self.reason, fix=FIM_FIX)

    def check(self) -> None:
        if not self.able:
            raise self.refusal()

    def card_fim(self) -> "FIM | None":
        """The verdict as a card's ``fim`` block (what the prompt renderers take), None without tokens."""
        from fmgguf.catalog import FIM

        if self.tokens is None:
            return None
        pre, suf, mid = self.tokens
        return FIM(prefix=pre, suffix=suf, middle=mid, order="SPM" if self.order == "SPM" else "PSM",
                   supported=self.able, note=self.reason, prompt="chat" if self.prompt == "chat" else "tokens")


def needs_vocabulary(card: "ModelCard | None") -> bool:
    """Whether the rule must read the model's vocabulary (no card, or an imported card without a ``fim`` block)."""
    return card is None or (card.fim is None and imported(card))


def imported(card: "ModelCard") -> bool:
    """An entry import-gguf (or a bundle import) created: every variant lives in the local store only."""
    return all(v.repo.startswith(LOCAL_REPO_PREFIX) for v in card.variants.values())


def fim_verdict(card: "ModelCard | None", *, name: str | None = None,
                lookup: Callable[[str], int | None] | None = None, path: Path | str | None = None) -> FimVerdict:
    """The rule. ``lookup(text)``: a loaded model's token id for ``text`` (or None); ``path``: the GGUF,
    whose vocabulary is read when no loaded model is at hand. Both only matter when no card decides."""
    who = name or (card.id if card is not None else "this model")
    if card is not None and card.fim is not None:
        return _from_card(who, card.fim)
    if card is not None and not imported(card):
        return FimVerdict(False, f"{who} was not trained for fill-in-the-middle (its catalog card gives no FIM format)",
                          "card")
    found = vocab_fim_set(lookup) if lookup is not None else file_fim_set(Path(path)) if path is not None else None
    if found is None:
        where = "in its vocabulary" if lookup is not None or path is not None else "found: no vocabulary to read"
        return FimVerdict(False, f"{who} was not trained for fill-in-the-middle (no known FIM token set {where})",
                          "vocabulary")
    return FimVerdict(True, f"{who}'s vocabulary has the FIM tokens {' '.join(t for t in found if t)}", "vocabulary",
                      found, "SPM" if found[0] == "[PREFIX]" else "PSM")


def card_verdict(card: "ModelCard", settings: "Settings") -> FimVerdict:
    """The rule for a catalog card, reading the installed file's vocabulary where the card leaves it open
    (an entry imported before import-gguf wrote ``fim`` blocks): every listing answers like a request."""
    path = None
    if needs_vocabulary(card):
        from fmgguf.download.records import StoreRecords

        records = StoreRecords(settings.store_dir)
        rec = next((r for r in (records.get(card.id, q) for q in card.quants) if r is not None and r.files), None)
        path = Path(rec.files[0].path) if rec is not None else None
    return fim_verdict(card, path=path)


def _from_card(who: str, fim: "FIM") -> FimVerdict:
    tokens = (fim.prefix, fim.suffix, fim.middle) if fim.prefix else None
    if fim.supported:
        return FimVerdict(True, f"{who}'s catalog card says it does fill-in-the-middle", "card", tokens, fim.order,
                          fim.prompt)
    note = f" ({fim.note})" if fim.note else ""
    return FimVerdict(False, f"{who} was not trained for fill-in-the-middle{note}", "card", tokens, fim.order)


def vocab_fim_set(lookup: Callable[[str], int | None]) -> tuple[str, str, str | None] | None:
    """The first known FIM token set whose every token is in a loaded model's vocabulary."""
    for pre, suf, mid in KNOWN_FIM_TOKENS:
        if lookup(pre) is not None and lookup(suf) is not None and (mid is None or lookup(mid) is not None):
            return pre, suf, mid
    return None


def file_fim_set(path: Path) -> tuple[str, str, str | None] | None:
    """The same, read from a GGUF file's header (no model loaded); cached per file version."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _file_fim_set(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_fim_set(path: str, _size: int, _mtime_ns: int) -> tuple[str, str, str | None] | None:
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    try:
        header_end = read_gguf(path, check=False).data_offset
        with open(path, "rb") as f:
            head = f.read(header_end)
    except (GGUFError, OSError):
        return None

    def has(text: str) -> bool:  # a vocabulary entry: the exact string, length-prefixed as GGUF stores it
        raw = text.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw in head

    for pre, suf, mid in KNOWN_FIM_TOKENS:
        if has(pre) and has(suf) and (mid is None or has(mid)):
            return pre, suf, mid
    return None


def import_fim_block(path: Path, override: bool | None) -> dict[str, str | bool | None]:
    """The ``fim`` block ``import-gguf`` writes into the new card: the vocabulary's FIM token set, and
    whether it does FIM (``--fim/--no-fim``, else whether that set exists). ``--fim`` needs the tokens."""
    tokens = file_fim_set(path)
    if override is True and tokens is None:
        raise InvalidRequestError(f"--fim: {path.name} has no known fill-in-the-middle token set in its vocabulary",
                                  fix="import it without --fim (it is then refused for FIM everywhere, with this reason)")
    if override is None:
        able = tokens is not None
        note = ("found its FIM tokens in the vocabulary at import" if able else
                "no known FIM token set in its vocabulary at import (import-gguf --fim cannot add one)")
    else:
        able = override
        note = "import-gguf --fim" if override else "import-gguf --no-fim"
    pre, suf, mid = tokens if tokens is not None else ("", "", None)
    return {"prefix": pre, "suffix": suf, "middle": mid, "order": "SPM" if pre == "[PREFIX]" else "PSM",
            "supported": able, "note": note}
