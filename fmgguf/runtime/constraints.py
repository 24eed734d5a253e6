"""What a generation's output must look like: a GBNF grammar, applied from the first token or lazily
from the moment one of its trigger strings appears in the output."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constraint:
    gbnf: str
    triggers: tuple[str, ...] = ()
