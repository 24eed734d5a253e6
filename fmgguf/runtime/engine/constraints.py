"""What a generation may produce: a GBNF grammar, applied from the first token or lazily from a trigger.

:class:`Constraint` is the one contract between the layers that decide *what* must come out (tool-call
arguments, structured output: :mod:`fmgguf.runtime.tools.tools`) and the decode loops that enforce it
(:meth:`fmgguf.runtime.engine.engine.Engine.stream`, the runner, the slot scheduler). It crosses the runner
pipe as its fields.

Semantics (llama.cpp's, grammar samplers included):

- ``triggers`` empty: the grammar's ``root`` must match the whole generated text, from the first token.
- ``triggers`` set (lazy): generation is free until one of the trigger strings appears in the output;
  from then on the grammar's ``root`` must match the text *from the start of that trigger* (the trigger
  itself included) to the end of the generation. Text before the trigger is never constrained.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constraint:
    #: the grammar, in llama.cpp's GBNF; its start rule is ``root``
    gbnf: str
    #: lazy grammar: the strings whose first appearance in the output starts the constrained part
    triggers: tuple[str, ...] = ()

    @property
    def lazy(self) -> bool:
        return bool(self.triggers)
