"""A draft model for speculative decoding: a small model of the target's vocabulary, resident in the
same process as the target, drafting for every slot of the target's scheduler.

The draft model has its own llama.cpp context with one sequence per target slot. Before it drafts
for a slot it catches up with the slot's tokens: the common prefix of what its sequence holds and
the slot's history stays, the rest is decoded (a first draft decodes the whole prompt; rejected
draft tokens from the last step simply fall out of the common prefix). Then it decodes greedily
one token per step for every drafting slot at once, and a slot's draft ends where the draft model
is unsure (top probability under ``LoadOptions.draft_p_min``, llama-server's ``--draft-p-min``), at a token the
target's vocabulary lacks, or at the length asked. The target checks the draft in its own batch
(:meth:`fmgguf.runtime.engine.drafting.Drafter.verify`), so the text never depends on the draft.

:func:`check_vocabularies` refuses a pair whose vocabularies differ, by llama.cpp's rule
(common/speculative.cpp): same tokenizer type and special tokens, sizes within
:data:`VOCAB_SIZE_SLACK` (padding rows), and the same text for every token both have.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmgguf.errors import EngineError, InvalidRequestError
from fmgguf.runtime.engine.load_options import LoadOptions, context_params, load_llama, model_params, n_slots

if TYPE_CHECKING:
    from fmgguf.runtime.engine.llama_lib import LlamaContext, LlamaLib, LlamaModel, llama_model_p, llama_vocab_p
    from fmgguf.runtime.engine.llama_log import BufferSizes, LogRouter

log = logging.getLogger(__name__)

#: vocabularies may differ in size by this many (padding) entries (llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE)
VOCAB_SIZE_SLACK = 128
#: the first token ids are control tokens that families renumber freely: not compared
VOCAB_CHECK_START = 5
#: the draft's probability of a token is taken among this many likeliest tokens (llama-server's draft sampler)
TOP_K = 10
#: prompt tokens a sequence catches up with in one step (the scheduler's prompt chunk while others decode)
CATCH_UP_STEP = 128


@dataclass(frozen=True)
class DraftAsk:
    """One slot's request for a draft: its sequence, every token it holds, and the most to draft."""

    seq: int
    history: Sequence[int]
    want: int


class DraftModel:
    """The draft model, its context and the tokens each of its sequences holds."""

    def __init__(self, mod: LlamaLib, path: str | Path, target: LoadOptions, *, n_gpu_layers: int = 0) -> None:
        self.path = Path(path)
        #: its name in messages and requests (``draft:<name>``): the caller's, else the file's stem
        self.name = target.draft_name or self.path.stem
        self.mod = mod
        # on the device the fit plan chose (its whole weight on one entry of tensor_split), never spread
        opts = replace(target, n_gpu_layers=n_gpu_layers, draft_path=None, rpc_servers=None,
                       tensor_split=target.draft_tensor_split if n_gpu_layers else None, prompt_cache_bytes=0)
        kw = opts.llama_kwargs()
        self._split: ctypes.Array[ctypes.c_float] | None = None
        self.model: LlamaModel | None = None
        self.ctx_obj: LlamaContext | None = None
        try:
            params, self._split = model_params(mod, kw)
            self.model, self.ctx_obj = load_llama(mod, self.path, params, context_params(mod, kw))
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise EngineError(f"llama.cpp could not load the draft model {self.path}: {exc}",
                              fix=f"check it with `fmgguf inspect {self.path}` and the memory with `fmgguf fit`, "
                                  "or load without it (--speculative ngram or off)") from None
        self.ctx = self.ctx_obj.ctx
        self.mem = mod.llama_get_memory(self.ctx)
        self.vocab = self.model.vocab
        self.n_vocab = int(mod.llama_vocab_n_tokens(self.vocab))
        self.n_ctx = int(mod.llama_n_ctx(self.ctx))
        self.n_batch = max(1, int(mod.llama_n_batch(self.ctx)))
        self.n_seq = n_slots(target.parallel)
        self.p_min = float(target.draft_p_min)
        self.batch = mod.llama_batch_init(self.n_batch, 0, 1)
        #: the tokens each sequence of the draft context holds, positions 0..len-1
        self.cache: dict[int, list[int]] = {}
        #: drafting needs no more than the target's vocabulary: ids at or past it end a draft
        self.limit_vocab = self.n_vocab
        #: what llama.cpp reported allocating for it (set by the engine, from the load log)
        self.buffers: BufferSizes = {}
        #: tokens the last draft() decoded to catch up with the slots, and the most one call decoded
        self.caught_up = self.caught_up_most = 0

    # --- drafting ------------------------------------------------------------------------------
    def draft(self, asks: Sequence[DraftAsk]) -> dict[int, list[int]]:
        """Each ask's draft (possibly empty); a llama.cpp failure drops the draft caches and drafts nothing."""
        asks = [a for a in asks if a.want > 0 and a.history]
        if not asks:
            return {}
        asks = self._make_room(asks)
        try:
            rows = self._catch_up(asks)
            return self._extend(asks, rows)
        except EngineError as exc:
            log.warning("draft model: %s; its caches are dropped", exc)
            self.mod.llama_memory_seq_rm(self.mem, -1, -1, -1)
            self.cache.clear()
            return {}

    def _make_room(self, asks: Sequence[DraftAsk]) -> list[DraftAsk]:
        """The asks that fit in the draft context; sequences not drafting now give their caches up
        when the asks would not fit beside them."""
        asking = {a.seq for a in asks}
        need = sum(len(a.history) + a.want for a in asks)
        held = sum(len(c) for s, c in self.cache.items() if s not in asking)
        if need + held > self.n_ctx:
            for seq in [s for s in self.cache if s not in asking]:
                self.mod.llama_memory_seq_rm(self.mem, seq, -1, -1)
                del self.cache[seq]
        fits, used = [], 0
        for a in asks:
            if len(fits) < self.n_batch and used + len(a.history) + a.want <= self.n_ctx:
                fits.append(a)
                used += len(a.history) + a.want
            elif a.seq in self.cache:  # left out this step: its cache goes too, so the others fit
                self.mod.llama_memory_seq_rm(self.mem, a.seq, -1, -1)
                del self.cache[a.seq]
        return fits

    def _catch_up(self, asks: Sequence[DraftAsk]) -> dict[int, int]:
        """Bring each sequence to its history (the last token always decoded again, for its logits);
        returns each caught-up sequence's logits row in the final decode. A sequence further behind
        than :data:`CATCH_UP_STEP` tokens (a new prompt) takes that many now and drafts in a later step,
        so one step never stalls the other slots for a whole prompt."""
        body: list[tuple[int, int, int, bool]] = []  # (seq, pos, token, logits)
        lasts: list[tuple[int, int, int, bool]] = []
        for a in asks:
            keep = _common_prefix(self.cache.get(a.seq, []), a.history, len(a.history) - 1)
            if not self.mod.llama_memory_seq_rm(self.mem, a.seq, keep, -1):
                self.mod.llama_memory_seq_rm(self.mem, a.seq, -1, -1)
                keep = 0
            last = len(a.history) - 1
            if last - keep > CATCH_UP_STEP:
                body += [(a.seq, p, int(a.history[p]), False) for p in range(keep, keep + CATCH_UP_STEP)]
                self.cache[a.seq] = [int(t) for t in a.history[:keep + CATCH_UP_STEP]]
                continue
            body += [(a.seq, p, int(a.history[p]), False) for p in range(keep, last)]
            lasts.append((a.seq, last, int(a.history[last]), True))
            self.cache[a.seq] = [int(t) for t in a.history]
        # the last tokens go last, so their logits all come from the final decode
        pending = body + lasts
        self.caught_up = len(pending)
        self.caught_up_most = max(self.caught_up_most, self.caught_up)
        if not pending:
            return {}
        split = max(len(pending) - self.n_batch, 0)  # the final decode takes the last n_batch entries
        for at in range(0, split, self.n_batch):
            self._decode(pending[at:min(at + self.n_batch, split)])
        final = pending[split:]
        self._decode(final)
        return {seq: i for i, (seq, _, _, logits) in enumerate(final) if logits}

    def _extend(self, asks: Sequence[DraftAsk], rows: dict[int, int]) -> dict[int, list[int]]:
        """Greedy draft tokens, one decode per step for every sequence still drafting."""
        out: dict[int, list[int]] = {a.seq: [] for a in asks if a.seq in rows}
        want = {a.seq: a.want for a in asks}
        live = dict(rows)
        while live:
            step: list[tuple[int, int, int, bool]] = []
            for seq, row in live.items():
                token, p = self._pick(row)
                if p < self.p_min or token >= self.limit_vocab:
                    continue
                out[seq].append(token)
                if len(out[seq]) < want[seq]:
                    step.append((seq, len(self.cache[seq]), token, True))
            if not step:
                break
            self._decode(step)
            for seq, _, token, _ in step:
                self.cache[seq].append(token)
            live = {seq: i for i, (seq, _, _, _) in enumerate(step)}
        return out

    def _pick(self, row: int) -> tuple[int, float]:
        """The greedy token of a logits row of the last decode, and its probability among the
        :data:`TOP_K` likeliest tokens (as llama-server's draft sampler has it: top-k, then softmax)."""
        ptr = self.mod.llama_get_logits_ith(self.ctx, row)
        if not ptr:
            raise EngineError("llama.cpp kept no logits for a draft row", fix="report this as a bug")
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        best = int(logits.argmax())
        top = np.partition(logits, -TOP_K)[-TOP_K:] if self.n_vocab > TOP_K else logits
        return best, 1.0 / float(np.exp(top - logits[best]).sum())

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (seq, pos, token, logits) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if logits else 0
        b.n_tokens = len(entries)
        rc = int(self.mod.llama_decode(self.ctx, b))
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc} on the draft model", fix="load a shorter context")

    # --- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        if self.batch is not None:
            self.mod.llama_batch_free(self.batch)
            self.batch = None
        ctx, model = self.ctx_obj, self.model
        self.ctx_obj = self.model = None
        if ctx is not None:
            ctx.close()
        if model is not None:
            model.close()


def open_draft(mod: LlamaLib, options: LoadOptions, target_model: llama_model_p, target_vocab: llama_vocab_p,
               target_name: str, router: LogRouter) -> DraftModel:
    """The draft model of ``options.draft_path`` (``mod``: the engine's llama_cpp), its buffers read from
    llama.cpp's load log (``router``: the engine's log router); refused unless its vocabulary is the target's."""
    from fmgguf.runtime.engine.llama_log import LoadListener

    listener = LoadListener(None)
    router.add(listener)
    try:
        draft = DraftModel(mod, options.draft_path, options,  # type: ignore[arg-type]
                           n_gpu_layers=options.draft_gpu_layers)
    finally:
        router.remove(listener)
    draft.buffers = listener.buffers()
    try:
        if is_recurrent(mod, draft.model.model) or is_recurrent(mod, target_model):
            raise InvalidRequestError(f"{target_name} or its draft {draft.path.name} keeps a recurrent state, which "
                                      "cannot drop a rejected draft", fix="use --speculative ngram or off for it")
        draft.limit_vocab = check_vocabularies(target_vocab, draft.vocab, draft.mod, target_name,
                                               draft.name)
    except BaseException:
        draft.close()
        raise
    return draft


def _common_prefix(a: Sequence[int], b: Sequence[int], cap: int) -> int:
    n = min(len(a), len(b), max(cap, 0))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_vocabularies(target: llama_vocab_p, draft: llama_vocab_p, mod: LlamaLib, target_name: str,
                       draft_name: str) -> int:
    """Refuse a draft whose vocabulary is not the target's (llama.cpp's rule); returns the number of
    token ids both have (a draft token at or past it ends the draft)."""
    def refuse(why: str) -> InvalidRequestError:
        return InvalidRequestError(f"draft model {draft_name} cannot draft for {target_name}: {why}",
                                   fix="choose a draft of the same family and tokenizer (e.g. Qwen2.5-Coder-0.5B "
                                       "for the larger Qwen2.5-Coder models), or use --speculative ngram")

    if int(mod.llama_vocab_type(target)) != int(mod.llama_vocab_type(draft)):
        raise refuse("their tokenizers are of different types")
    for added, token, name in ((mod.llama_vocab_get_add_bos, mod.llama_vocab_bos, "BOS"),
                               (mod.llama_vocab_get_add_eos, mod.llama_vocab_eos, "EOS")):
        adds = bool(added(target))
        if adds != bool(added(draft)) or (adds and int(token(target)) != int(token(draft))):
            raise refuse(f"their {name} tokens differ")
    nt, nd = int(mod.llama_vocab_n_tokens(target)), int(mod.llama_vocab_n_tokens(draft))
    if abs(nt - nd) > VOCAB_SIZE_SLACK:
        raise refuse(f"their vocabularies have {nt} and {nd} tokens")
    for i in range(VOCAB_CHECK_START, min(nt, nd)):
        a, b = mod.llama_vocab_get_text(target, i), mod.llama_vocab_get_text(draft, i)
        if a != b:
            raise refuse(f"token {i} is {_show(a)} in one and {_show(b)} in the other")
    return min(nt, nd)


def _show(text: bytes | None) -> str:
    return repr((text or b"").decode("utf-8", "replace"))


def is_recurrent(mod: LlamaLib, model: llama_model_p) -> bool:
    """Whether the model keeps a recurrent state (which cannot drop a rejected draft)."""
    return bool(mod.llama_model_is_recurrent(model)) or bool(mod.llama_model_is_hybrid(model))
