"""What a generation request asks the model for: the prompt (plain text, a chat rendered with the
model's template, or FIM tokens), the sampling options, and the result built from the engine's
numbers when its stream ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine import GenerationStats
from fmgguf.runtime.engine_api import EngineAPI
from fmgguf.runtime.generation import GenerationResult, PromptText
from fmgguf.runtime.loading import LoadedModel
from fmgguf.runtime.runner.residency import Resident

#: a prompt for the engine: token ids, or text it tokenizes itself; and the stop strings it adds
Prompt = tuple["list[int] | PromptText", list[str]]
Build = Callable[[EngineAPI, Resident], Prompt]
#: sampling options beyond the common ones
EXTRA_SAMPLING = frozenset({"top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "constraint"})


@dataclass(frozen=True)
class Ask:
    """One generation request as the manager gets it."""

    build: Build
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    #: top_k, min_p, penalties, a grammar ``constraint`` (:class:`~fmgguf.runtime.constraints.Constraint`)
    sampling: Mapping[str, object] = field(default_factory=dict)
    #: FIM: ahead of other requests for the same model
    priority: bool = False

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
            return PromptText(prompt, engine.add_bos), []
        return engine.tokenize(prompt, add_bos=engine.add_bos, special=True), []
    return build


def chat(messages: Sequence[Mapping[str, object]]) -> Build:
    from fmgguf.runtime.prompts import normalize_messages, render_chat

    msgs = normalize_messages(messages)

    def build(engine: EngineAPI, r: Resident) -> Prompt:
        family = r.spec.card.chat_template if r.spec.card is not None else None
        prompt = render_chat(msgs, template=engine.chat_template, family=family,
                             bos_text=engine.bos_text, eos_text=engine.eos_text)
        return engine.tokenize(prompt.text, add_bos=engine.add_bos, special=True), list(prompt.stop)
    return build


def fim(prefix: str, suffix: str) -> Build:
    from fmgguf.runtime.prompts import build_fim_tokens, resolve_fim_tokens

    def build(engine: EngineAPI, r: Resident) -> Prompt:
        card = r.spec.card
        if card is not None and card.fim is not None and not card.fim.supported:
            resolve_fim_tokens(gguf_ids={}, lookup=lambda _t: None, card_fim=card.fim, model_name=card.id)
        ids = resolve_fim_tokens(gguf_ids=dict(r.info.fim_ids) or gguf_fim_ids(engine.metadata),
                                 lookup=engine.special_token_id, card_fim=card.fim if card else None,
                                 vocab_ids=engine.fim_token_ids(), model_name=r.info.id)
        pre = engine.tokenize(prefix, add_bos=False, special=False) if prefix else []
        suf = engine.tokenize(suffix, add_bos=False, special=False) if suffix else []
        return build_fim_tokens(pre, suf, ids, engine.bos_id if engine.add_bos else None), []
    return build


def gguf_fim_ids(metadata: Mapping[str, str]) -> dict[str, int]:
    out = {}
    for role, keys in (("pre", ("fim_pre", "prefix")), ("suf", ("fim_suf", "suffix")), ("mid", ("fim_mid", "middle"))):
        for k in keys:
            v = metadata.get(f"tokenizer.ggml.{k}_token_id")
            if v is not None and str(v).lstrip("-").isdigit() and int(v) >= 0:
                out[role] = int(v)
                break
    return out


def result(text: str, stats: GenerationStats, started: float, info: LoadedModel) -> GenerationResult:
    """The result of a stream that ended (its numbers from ``stats``)."""
    end = stats.finished_at or time.perf_counter()
    first = stats.first_token_at or end
    n = stats.completion_tokens
    rate = (n - 1) / (end - first) if n > 1 and end > first else (n / (end - started) if end > started else 0.0)
    return GenerationResult(text=text, prompt_tokens=stats.prompt_tokens, completion_tokens=n,
                            ttft_s=round(first - started, 6), tokens_per_s=round(rate, 3),
                            total_s=round(end - started, 6), finish_reason=stats.finish_reason or "cancelled",
                            model_id=info.id, quant=info.quant, cached_tokens=stats.cached_tokens)
