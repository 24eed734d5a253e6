"""Chat or raw completion: what a bare prompt gets when the caller has not said.

The rule, used by `fmgguf run` and by any API that takes a bare prompt and has the choice:

- a model whose GGUF carries a chat template **and** that is an instruct/chat model gets the prompt
  as one user message in its template (as `ollama run` and `llama-cli` do);
- a base (completion) model, a model without a template, or an explicit raw request (``--raw``)
  completes the text as it is.

"Instruct/chat model" comes from the catalog card (``capabilities`` holds ``instruct`` or ``chat``).
A local .gguf, or a card that lists no capabilities (``fmgguf import-gguf``), is judged by its names (file name, ``general.name``,
``general.finetune``): ``instruct``, ``chat`` or ``-it`` there mean an instruct model. Base models
often ship a template too (Qwen2.5 base GGUFs do), which is why the template alone never decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard

_INSTRUCT_WORDS = re.compile(r"(instruct|chat|(?:^|[-_. ])it(?:$|[-_. ]))", re.IGNORECASE)
_CARD_CAPS = {"instruct", "chat"}


def is_instruct(card: "ModelCard | None" = None, names: Iterable[str] = ()) -> bool:
    """An instruct/chat model: by its card when the card lists capabilities, else by its names."""
    caps = {c.lower() for c in (card.capabilities if card is not None else ())}
    if caps:
        return bool(_CARD_CAPS & caps)
    return any(_INSTRUCT_WORDS.search(n or "") for n in names)


def gguf_names(file_name: str, metadata: Mapping[str, object]) -> list[str]:
    """The names a GGUF goes by: its file name (without .gguf), general.name and general.finetune."""
    stem = file_name[:-5] if file_name.lower().endswith(".gguf") else file_name
    return [stem, str(metadata.get("general.name") or ""), str(metadata.get("general.finetune") or "")]


def wants_chat(*, has_template: bool, card: "ModelCard | None" = None, names: Iterable[str] = (), raw: bool = False) -> bool:
    """True when a bare prompt should go through the chat template (see the module doc)."""
    return not raw and has_template and is_instruct(card, names)
