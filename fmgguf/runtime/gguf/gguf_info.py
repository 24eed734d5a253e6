"""What a GGUF header holds, once parsed and validated (see :mod:`fmgguf.runtime.gguf.gguf_file`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypedDict, Union

from fmgguf._util import json_int


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array too long to keep (e.g. the vocabulary): its element type and length."""

    type: str
    count: int

    def __len__(self) -> int:
        return self.count


#: one metadata value as the header holds it: a scalar, a string, a (kept) array of either, or the
#: type and length of an array too long to keep
MetaValue = Union[int, float, str, "list[int | float]", "list[str]", GGUFArray]


class _SummaryBase(TypedDict):
    path: str
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    n_layer: int
    context_length: int | None
    n_embd: int
    n_head: int
    n_vocab: int | None
    file_type: int | None
    n_tensors: int
    n_params: int
    tensor_bytes: int
    quant_mix: dict[str, dict[str, int]]
    chat_template: bool
    fim_tokens: dict[str, int]
    #: the scalar metadata (JSON-safe: a NaN or infinity as its repr)
    metadata: dict[str, str | int | float]


class GGUFSummary(_SummaryBase, total=False):
    """:meth:`GGUFInfo.summary`; ``fmgguf inspect`` adds what llama.cpp would refuse and the FIM verdict."""

    problems: list[dict[str, str]]
    fim: bool
    fim_reason: str


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (row length) first
    type: str
    offset: int  # relative to the data section
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The block index of a `blk.N.*` tensor, else None."""
        if self.name.startswith("blk."):
            head = self.name[4:].split(".", 1)[0]
            if head.isdigit():
                return int(head)
        return None


@dataclass
class GGUFInfo:
    path: str
    file_size: int
    version: int
    alignment: int
    data_offset: int
    metadata: dict[str, MetaValue]
    tensors: list[TensorInfo] = field(repr=False)

    # --- the numbers everyone asks for ---------------------------------------------------------
    @property
    def arch(self) -> str:
        return str(self.metadata["general.architecture"])

    def key(self, suffix: str, default: object = None) -> object:
        """``<arch>.<suffix>`` from the metadata."""
        return self.metadata.get(f"{self.arch}.{suffix}", default)

    @property
    def name(self) -> str | None:
        v = self.metadata.get("general.name")
        return v if isinstance(v, str) else None

    @property
    def n_layer(self) -> int:
        return json_int(self.key("block_count"))

    @property
    def n_ctx_train(self) -> int | None:
        v = self.key("context_length")
        return json_int(v) if v is not None else None

    @property
    def n_embd(self) -> int:
        return json_int(self.key("embedding_length"))

    @property
    def n_head(self) -> int:
        v = self.key("attention.head_count", 0)
        return json_int(max(v) if isinstance(v, list) else v)

    @property
    def n_vocab(self) -> int | None:
        toks = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(toks, (list, GGUFArray)):
            return len(toks)
        v = self.key("vocab_size")
        return json_int(v) if v is not None else None

    @property
    def file_type(self) -> int | None:
        v = self.metadata.get("general.file_type")
        return json_int(v) if v is not None else None

    @property
    def chat_template(self) -> str | None:
        v = self.metadata.get("tokenizer.chat_template")
        return v if isinstance(v, str) else None

    @property
    def fim_tokens(self) -> dict[str, int]:
        """FIM token ids the GGUF declares (pre/suf/mid/pad/rep/sep), by role."""
        out = {}
        for role in ("pre", "suf", "mid", "pad", "rep", "sep"):
            for key in (f"tokenizer.ggml.fim_{role}_token_id",):
                if isinstance(v := self.metadata.get(key), int):
                    out[role] = v
        # older files: prefix/suffix/middle ids
        for role, key in (("pre", "tokenizer.ggml.prefix_token_id"), ("suf", "tokenizer.ggml.suffix_token_id"),
                          ("mid", "tokenizer.ggml.middle_token_id")):
            if role not in out and isinstance(v := self.metadata.get(key), int):
                out[role] = v
        return out

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total

    def quant_mix(self) -> dict[str, dict[str, int]]:
        """ggml type -> {tensors, bytes}, largest first."""
        mix: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            row = mix.setdefault(t.type, {"tensors": 0, "bytes": 0})
            row["tensors"] += 1
            row["bytes"] += t.n_bytes
        return dict(sorted(mix.items(), key=lambda kv: -kv[1]["bytes"]))

    def summary(self) -> GGUFSummary:
        """What `fmgguf inspect` shows (JSON-safe)."""
        scalars = {k: repr(v) if isinstance(v, float) and not math.isfinite(v) else v  # strict JSON: no NaN
                   for k, v in self.metadata.items()
                   if not isinstance(v, (list, GGUFArray)) and k != "tokenizer.chat_template"}
        return {
            "path": self.path, "file_size": self.file_size, "gguf_version": self.version,
            "architecture": self.arch, "name": self.name, "n_layer": self.n_layer,
            "context_length": self.n_ctx_train, "n_embd": self.n_embd, "n_head": self.n_head,
            "n_vocab": self.n_vocab, "file_type": self.file_type, "n_tensors": len(self.tensors),
            "n_params": self.n_params, "tensor_bytes": self.tensor_bytes, "quant_mix": self.quant_mix(),
            "chat_template": self.chat_template is not None, "fim_tokens": self.fim_tokens,
            "metadata": scalars,
        }
