"""One generation's sampler: llama.cpp's sampler chain built from the parameters the dialects
accept, plus a grammar (:class:`~fmgguf.runtime.engine.constraints.Constraint`) from the first token or
lazily after a trigger string. llama.cpp is reached through :func:`fmgguf.runtime.engine.llama_lib.lib`.

The chain follows llama.cpp's common sampler order: penalties, top-k, top-p, min-p, temperature, then
a seeded draw; at temperature 0 (or below) it is greedy. The grammar is kept beside the chain and checked
the way llama.cpp's common sampler does: the chain picks from the raw logits, the grammar checks that
one token, and only a token the grammar refuses makes it filter the whole vocabulary and pick again
(filtering Qwen's 152k tokens every step cost about as much as the decode itself).
"""

from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.engine.constraints import Constraint
from fmgguf.runtime.engine.grammar import trigger_pattern

if TYPE_CHECKING:
    from fmgguf.runtime.engine.llama_lib import LlamaLib, llama_context_p, llama_sampler_p, llama_vocab_p

#: tokens the repeat/presence/frequency penalties look back over (llama.cpp's penalty_last_n default)
PENALTY_LAST_N = 64


@dataclass(frozen=True)
class SamplingParams:
    """How one generation picks its tokens (the defaults are the engine's long-standing ones)."""

    temperature: float = 0.2
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: None: a random seed
    seed: int | None = None

    def check(self) -> "SamplingParams":
        if self.repeat_penalty is not None and self.repeat_penalty <= 0:
            raise InvalidRequestError(f"repeat_penalty {self.repeat_penalty} must be above 0",
                                      fix="use 1.0 for none, or a value like 1.1")
        return self


class Sampler:
    """A llama.cpp sampler chain for one generation; :meth:`sample` picks (and accepts) a token."""

    def __init__(self, mod: LlamaLib, vocab: llama_vocab_p, params: SamplingParams,
                 constraint: Constraint | None = None) -> None:
        self._mod = mod
        self._grammar: llama_sampler_p | None = None
        self.n_vocab = int(mod.llama_vocab_n_tokens(vocab))
        self._cands: np.ndarray | None = None
        chain = mod.llama_sampler_chain_init(mod.llama_sampler_chain_default_params())
        if not chain:
            raise InvalidRequestError("llama.cpp could not make a sampler", fix="check the sampling parameters")
        self._chain = chain
        penalties = (params.repeat_penalty not in (None, 1.0) or bool(params.frequency_penalty)
                     or bool(params.presence_penalty))
        #: temperature 0 with no grammar and no penalties: the chain keeps no state and its token is
        #: the logits row's first maximum, so a caller may take it straight from the logits (:func:`argmax_rows`)
        self.stateless_greedy = (params.temperature is None or params.temperature <= 0) and constraint is None \
            and not penalties
        try:
            self._add_sampling(params, self.n_vocab)
            if constraint is not None:
                self._grammar = self._make_grammar(vocab, constraint)
        except BaseException:
            self.close()
            raise

    def _add(self, smpl: llama_sampler_p) -> None:
        self._mod.llama_sampler_chain_add(self._chain, smpl)  # the chain owns it from here

    def _make_grammar(self, vocab: llama_vocab_p, constraint: Constraint) -> llama_sampler_p:
        mod = self._mod
        gbnf, root = constraint.gbnf.encode("utf-8"), b"root"
        if constraint.triggers:
            patterns = (ctypes.c_char_p * 1)(trigger_pattern(tuple(constraint.triggers)).encode("utf-8"))
            smpl = mod.llama_sampler_init_grammar_lazy_patterns(vocab, gbnf, root, patterns, 1, None, 0)
        else:
            smpl = mod.llama_sampler_init_grammar(vocab, gbnf, root)
        if not smpl:
            raise InvalidRequestError("the grammar does not parse (llama.cpp's GBNF)",
                                      fix="check the grammar (its root rule must be `root`); llama.cpp's log says "
                                          "where it failed")
        return smpl

    def _add_sampling(self, p: SamplingParams, n_vocab: int) -> None:
        mod = self._mod
        repeat = float(p.repeat_penalty if p.repeat_penalty is not None else 1.0)
        freq, present = float(p.frequency_penalty or 0.0), float(p.presence_penalty or 0.0)
        if repeat != 1.0 or freq != 0.0 or present != 0.0:
            self._add(mod.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, repeat, freq, present))
        if p.temperature is None or p.temperature <= 0:
            self._add(mod.llama_sampler_init_greedy())
            return
        if p.top_k and p.top_k > 0:
            self._add(mod.llama_sampler_init_top_k(int(p.top_k)))
        if p.top_p is not None and 0 < p.top_p < 1:
            self._add(mod.llama_sampler_init_top_p(float(p.top_p), 1))
        if p.min_p is not None and p.min_p > 0:
            self._add(mod.llama_sampler_init_min_p(float(p.min_p), 1))
        self._add(mod.llama_sampler_init_temp(float(p.temperature)))
        seed = int(p.seed) if p.seed is not None else random.randint(0, 2**31 - 1)
        self._add(mod.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: llama_context_p, index: int) -> int:
        """The token for the logits at batch ``index`` of the last decode (accepted into the chain)."""
        mod = self._mod
        if self._grammar is None:
            return int(mod.llama_sampler_sample(self._chain, ctx, index))
        token = self._pick(ctx, index, grammar=False)
        if not self._fits(token):
            token = self._pick(ctx, index, grammar=True)
        mod.llama_sampler_accept(self._grammar, token)
        mod.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, ctx: llama_context_p, index: int, grammar: bool) -> int:
        """The chain's choice over the logits at ``index``, filtered by the grammar first if asked."""
        mod, n = self._mod, self.n_vocab
        if self._cands is None:
            self._cands = np.zeros(n, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        cands = self._cands
        cands["id"] = np.arange(n, dtype=np.int32)
        cands["logit"] = np.ctypeslib.as_array(mod.llama_get_logits_ith(ctx, index), shape=(n,))
        cands["p"] = 0.0
        arr = mod.llama_token_data_array(cands.ctypes.data_as(ctypes.POINTER(mod.llama_token_data)), n, -1, False)
        if grammar:
            mod.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        mod.llama_sampler_apply(self._chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    def _fits(self, token: int) -> bool:
        """Whether the grammar allows ``token`` next (a one-token candidate list it may set to -inf)."""
        mod = self._mod
        one = (mod.llama_token_data * 1)(mod.llama_token_data(token, 1.0, 0.0))
        arr = mod.llama_token_data_array(one, 1, -1, False)
        mod.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return bool(one[0].logit != float("-inf"))

    def close(self) -> None:
        chain, self._chain = self._chain, None
        if chain:
            self._mod.llama_sampler_free(chain)
        grammar, self._grammar = self._grammar, None
        if grammar:
            self._mod.llama_sampler_free(grammar)


def argmax_rows(mod: LlamaLib, ctx: llama_context_p, first: int, count: int, n_vocab: int) -> list[int]:
    """The greedy token of each logits row at batch indices ``first`` .. ``first + count - 1`` of the
    last decode (rows that were asked logits for), read with numpy over llama.cpp's own buffer: the
    first maximum, as llama.cpp's greedy sampler picks it, without a sampler call per row."""
    row_bytes = n_vocab * ctypes.sizeof(ctypes.c_float)
    start = ctypes.cast(mod.llama_get_logits_ith(ctx, first), ctypes.c_void_p).value
    end = ctypes.cast(mod.llama_get_logits_ith(ctx, first + count - 1), ctypes.c_void_p).value
    if not start or not end:
        raise InvalidRequestError("llama.cpp kept no logits for a drafted position", fix="report this as a bug")
    if end - start == (count - 1) * row_bytes:  # llama.cpp keeps the rows in batch order: one array
        rows = np.ctypeslib.as_array(ctypes.cast(start, ctypes.POINTER(ctypes.c_float)), shape=(count, n_vocab))
        return [int(t) for t in rows.argmax(axis=1)]
    out = []
    for i in range(count):
        row = np.ctypeslib.as_array(mod.llama_get_logits_ith(ctx, first + i), shape=(n_vocab,))
        out.append(int(row.argmax()))
    return out
