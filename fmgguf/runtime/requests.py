"""What a generation request asks the model for: the prompt (plain text, a chat rendered with the
model's template, or FIM tokens), the sampling options, and the result built from the engine's
numbers when its stream ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.engine import GenerationStats
from fmgguf.runtime.engine.engine_api import EngineAPI
from fmgguf.runtime.engine.generation import GenerationResult, PromptText
from fmgguf.runtime.runner.loading import LoadedModel
from fmgguf.runtime.runner.residency import Resident

if TYPE_CHECKING:
    from fmgguf.runtime.engine.constraints import Constraint
    from fmgguf.runtime.prompt.fim_stop import FimCutter
    from fmgguf.runtime.tools.tools import ToolRequest

#: a prompt for the engine: token ids, or text it tokenizes itself; the stop strings it adds; a grammar
Prompt = tuple["list[int] | PromptText", list[str], "Constraint | None"]
Build = Callable[[EngineAPI, Resident], Prompt]
#: a FIM request's second ask (:mod:`fmgguf.runtime.prompt.fim_again`): None where it has none
Again = Callable[[EngineAPI, Resident], "Prompt | None"]
#: sampling options beyond the common ones
EXTRA_SAMPLING = frozenset({"top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "constraint",
                            "speculative"})


@dataclass(frozen=True)
class Ask:
    """One generation request as the manager gets it."""

    build: Build
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    #: top_k, min_p, penalties, a grammar ``constraint`` (:class:`~fmgguf.runtime.engine.constraints.Constraint`)
    sampling: Mapping[str, object] = field(default_factory=dict)
    #: FIM: ahead of other requests for the same model
    priority: bool = False
    #: FIM: the prompt asked once more when the middle skipped the gap
    again: Again | None = None

    @classmethod
    def of(cls, build: Build, max_tokens: int | None, temperature: float, top_p: float,
           stop: Sequence[str] | str | None, seed: int | None, sampling: Mapping[str, object],
           priority: bool = False) -> "Ask":
        unknown = set(sampling) - EXTRA_SAMPLING
        if unknown:
            raise InvalidRequestError(f"unknown option(s): {', '.join(sorted(unknown))}",
                                      fix=f"use max_tokens, temperature, top_p, stop, seed, {', '.join(sorted(EXTRA_SAMPLING))}")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return cls(build, max_tokens, temperature, top_p, stops, seed, dict(sampling), priority)


def plain(prompt: str) -> Build:
    def build(engine: EngineAPI, _r: Resident) -> Prompt:
        if engine.tokenizes_in_stream:  # a runner: one round trip, not two
            return PromptText(prompt, engine.add_bos), [], None
        return engine.tokenize(prompt, add_bos=engine.add_bos, special=True), [], None
    return build


def chat(messages: Sequence[Mapping[str, object]], tools: "ToolRequest | None" = None) -> Build:
    """The chat rendered with the model's template; ``tools`` (functions and/or a response format) go
    into the template and become a grammar (:mod:`fmgguf.runtime.tools.tool_grammar`)."""
    from fmgguf.runtime.prompt.prompts import normalize_messages, render_chat
    from fmgguf.runtime.tools.tool_grammar import format_constraint, tool_constraint

    msgs = normalize_messages(messages)

    def build(engine: EngineAPI, r: Resident) -> Prompt:
        family = r.spec.card.chat_template if r.spec.card is not None else None
        prompt = render_chat(msgs, template=engine.chat_template, family=family,
                             bos_text=engine.bos_text, eos_text=engine.eos_text, tools=tools)
        constraint = None
        if tools is not None:
            constraint = tool_constraint(tools, prompt.tool_format)
            if constraint is None and tools.response_format is not None:
                constraint = format_constraint(tools.response_format)
        return engine.tokenize(prompt.text, add_bos=engine.add_bos, special=True), list(prompt.stop), constraint
    return build


def fim(prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
        max_chars: int | None = None) -> Build:
    """The FIM prompt (:mod:`fmgguf.runtime.prompt.fim_prompt`), refused by the one FIM rule where the model can't."""
    from fmgguf.runtime.prompt.fim_prompt import fim_prompt
    from fmgguf.runtime.prompt.fim_rule import fim_verdict

    def build(engine: EngineAPI, r: Resident) -> Prompt:
        verdict = fim_verdict(r.spec.card, name=r.info.id, lookup=engine.special_token_id)
        verdict.check()
        tokens, stops = fim_prompt(engine, verdict.card_fim(), r.info.fim_ids, r.info.id, prefix, suffix, extra,
                                   filename, max_chars, in_stream=engine.tokenizes_in_stream,
                                   family=r.spec.card.chat_template if r.spec.card is not None else None)
        return tokens, stops, None
    return build


def fim_again(prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = (), filename: str | None = None,
              max_chars: int | None = None) -> Again:
    """The second ask of a chat fill whose middle skipped the gap (:mod:`fmgguf.runtime.prompt.fim_again`);
    it builds None where there is none."""
    from fmgguf.runtime.prompt.fim_prompt import fim_again_prompt
    from fmgguf.runtime.prompt.fim_rule import fim_verdict

    def build(engine: EngineAPI, r: Resident) -> Prompt | None:
        verdict = fim_verdict(r.spec.card, name=r.info.id, lookup=engine.special_token_id)
        family = r.spec.card.chat_template if r.spec.card is not None else None
        got = fim_again_prompt(engine, verdict.card_fim(), r.info.id, prefix, suffix, extra,
                               filename, max_chars, in_stream=engine.tokenizes_in_stream, family=family)
        return None if got is None else (got[0], got[1], None)
    return build


def result(text: str, stats: GenerationStats, started: float, info: LoadedModel,
           cutter: "FimCutter | None" = None) -> GenerationResult:
    """The result of a stream that ended (its numbers from ``stats``; a FIM ``cutter`` says why it stopped)."""
    end = stats.finished_at or time.perf_counter()
    first = stats.first_token_at or end
    n = stats.completion_tokens
    rate = (n - 1) / (end - first) if n > 1 and end > first else (n / (end - started) if end > started else 0.0)
    reason = stats.finish_reason or "cancelled"
    why = None if cutter is None else cutter.reason or ("eos" if reason == "stop" else reason)
    finish = "stop" if cutter is not None and cutter.stopped else reason
    return GenerationResult(text=text, prompt_tokens=stats.prompt_tokens, completion_tokens=n,
                            ttft_s=round(first - started, 6), tokens_per_s=round(rate, 3),
                            total_s=round(end - started, 6), finish_reason=finish,
                            model_id=info.id, quant=info.quant, cached_tokens=stats.cached_tokens, stop_reason=why,
                            restored_tokens=stats.restored_tokens, stop_sequence=stats.stop_sequence,
                            drafted_tokens=stats.drafted_tokens, accepted_tokens=stats.accepted_tokens)
