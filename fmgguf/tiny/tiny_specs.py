"""Shapes, tokenizers, chat templates and FIM tokens of the tiny test models.

Every matrix row length (``ne0``: n_embd, n_ff, n_head * head_dim, ranks) is a multiple of 256
where the real model's is, so Q4_K_M really produces Q4_K/Q6_K blocks instead of falling back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fmgguf.errors import InvalidRequestError

ARCHES: tuple[str, ...] = ("llama", "qwen2", "starcoder2", "gemma3", "deepseek2")
SIZES: tuple[str, ...] = ("unit", "bench")

# --- chat templates (Jinja, as llama-cpp-python renders them) ----------------------------------
_LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' }}{% endif %}"
    "{% endfor %}"
)
_GEMMA = (
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n'"
    " + message['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
_ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction\\n' + message['content'] + '\\n\\n' }}"
    "{% else %}{{ '### Response\\n' + message['content'] + '<|endoftext|>\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response\\n' }}{% endif %}"
)
_DEEPSEEK = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{% else %}{{ message['content'] + '\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

#: catalog chat_template family -> Jinja text (None: keep the vocab file's own template)
TEMPLATES: dict[str, str | None] = {"chatml": None, "llama2": _LLAMA2, "gemma": _GEMMA,
                                    "alpaca-instruction": _ALPACA, "deepseek-v2": _DEEPSEEK}

#: Qwen2.5's added tokens that the (Qwen1.5-era) qwen2 vocab file only has as [PADnnnnnn] slots
QWEN25_EXTRA_TOKENS: dict[int, str] = {
    151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>", 151663: "<|repo_name|>", 151664: "<|file_sep|>",
}

#: vocab -> FIM token texts (prefix, suffix, middle, pad, repo, sep); None where the vocab has none
FIM_TOKENS: dict[str, dict[str, str] | None] = {
    "qwen2": {"pre": "<|fim_prefix|>", "suf": "<|fim_suffix|>", "mid": "<|fim_middle|>",
              "pad": "<|fim_pad|>", "rep": "<|repo_name|>", "sep": "<|file_sep|>"},
    "starcoder": {"pre": "<fim_prefix>", "suf": "<fim_suffix>", "mid": "<fim_middle>",
                  "pad": "<fim_pad>", "rep": "<repo_name>", "sep": "<file_sep>"},
    "deepseek-coder": {"pre": "<｜fim▁begin｜>", "suf": "<｜fim▁hole｜>", "mid": "<｜fim▁end｜>"},
    "llama-spm": None,
}


@dataclass(frozen=True)
class TinySpec:
    arch: str
    size: str
    vocab: str
    chat_template: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    context_length: int = 4096
    tied: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    #: gemma3: sliding window (llama.cpp's default pattern: 5 local layers of every 6)
    sliding_window: int | None = None
    # deepseek2 (MLA + MoE)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    rope_dim: int = 0
    v_head_dim: int = 0
    n_dense_lead: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_exp: int = 0

    @property
    def fim(self) -> dict[str, str] | None:
        return FIM_TOKENS[self.vocab]

    def key(self) -> dict:
        return dataclasses.asdict(self)


_BASE = {
    "llama": dict(vocab="llama-spm", chat_template="llama2", tied=False, norm_eps=1e-5),
    "qwen2": dict(vocab="qwen2", chat_template="chatml", rope_base=1000000.0),
    "starcoder2": dict(vocab="starcoder", chat_template="alpaca-instruction", norm_eps=1e-5, rope_base=100000.0),
    "gemma3": dict(vocab="llama-spm", chat_template="gemma", sliding_window=256),
    "deepseek2": dict(vocab="deepseek-coder", chat_template="deepseek-v2", tied=False),
}

_SHAPES = {
    # unit: a few MB of layers (the embedding table of the vocab dominates the file)
    ("llama", "unit"): dict(n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512),
    ("qwen2", "unit"): dict(n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512),
    ("starcoder2", "unit"): dict(n_layer=2, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=1024),
    ("gemma3", "unit"): dict(n_layer=6, n_embd=256, n_head=2, n_head_kv=1, head_dim=128, n_ff=512),
    ("deepseek2", "unit"): dict(n_layer=2, n_embd=256, n_head=2, n_head_kv=1, head_dim=192, n_ff=512,
                                q_lora_rank=256, kv_lora_rank=256, rope_dim=64, v_head_dim=128, n_dense_lead=1,
                                n_expert=4, n_expert_used=2, n_expert_shared=1, n_ff_exp=256),
    # bench: 50-150M parameters, fast enough on 2 CPU cores
    ("llama", "bench"): dict(n_layer=8, n_embd=768, n_head=12, n_head_kv=4, head_dim=64, n_ff=2048),
    ("qwen2", "bench"): dict(n_layer=8, n_embd=512, n_head=8, n_head_kv=2, head_dim=64, n_ff=1536),
    ("starcoder2", "bench"): dict(n_layer=8, n_embd=768, n_head=12, n_head_kv=4, head_dim=64, n_ff=3072),
    ("gemma3", "bench"): dict(n_layer=12, n_embd=768, n_head=4, n_head_kv=1, head_dim=256, n_ff=2048),
    ("deepseek2", "bench"): dict(n_layer=6, n_embd=768, n_head=8, n_head_kv=1, head_dim=192, n_ff=2048,
                                 q_lora_rank=512, kv_lora_rank=256, rope_dim=64, v_head_dim=128, n_dense_lead=1,
                                 n_expert=8, n_expert_used=2, n_expert_shared=1, n_ff_exp=512),
}


def tiny_spec(arch: str, size: str = "unit") -> TinySpec:
    if arch not in ARCHES:
        raise InvalidRequestError(f"no tiny model for architecture {arch!r}", fix=f"use one of: {', '.join(ARCHES)}")
    if size not in SIZES:
        raise InvalidRequestError(f"unknown tiny model size {size!r}", fix=f"use one of: {', '.join(SIZES)}")
    return TinySpec(arch=arch, size=size, **_BASE[arch], **_SHAPES[(arch, size)])
