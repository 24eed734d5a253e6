"""A corpus of lying GGUFs: well-formed files whose metadata llama.cpp refuses or aborts on.

Each kind starts from a good tiny model (:func:`fmgguf.testing.build_tiny_model`) and changes its
metadata (or drops tensors), keeping every tensor's bytes. The file stays a valid GGUF container
(our header parser and ``gguf``'s reader both open it); what it *claims* is wrong in one way that
makes llama.cpp fail: a clean refusal at load, a ``GGML_ASSERT`` abort at load or while building the
graph, or an abort only at the first decode.

:func:`raw_llama_outcome` loads a file with raw llama.cpp (no fmgguf checks) in a child process and
decodes a few tokens, so tests prove every kind really fails llama.cpp, and the good models do not.

    from fmgguf.testing.bad_models import BAD_KINDS, build_bad_model
    path = build_bad_model("nan_rms_eps", tmp_dir)
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fmgguf.errors import InvalidRequestError
from fmgguf.runtime.gguf.gguf_info import MetaValue

# GGUF value type codes
_U32, _I32, _F32, _STRING, _ARRAY = 4, 5, 6, 8, 9
_SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

#: key -> (value, GGUF value type, element type of an array)
Metadata = dict[str, tuple[MetaValue, int, "int | None"]]


@dataclass(frozen=True)
class BadKind:
    """One way of lying. ``field``: the metadata key (or tensor) that a correct refusal names."""

    name: str
    arch: str
    field: str
    what: str
    #: "load": llama.cpp refuses or aborts loading / creating the context; "decode": only at the first decode
    fails_at: str
    set_kv: dict[str, tuple[MetaValue, int]] = field(default_factory=dict)
    drop_kv: tuple[str, ...] = ()
    drop_tensors: Callable[[str], bool] | None = None


def _kinds() -> dict[str, BadKind]:
    nan = float("nan")
    kinds = [
        BadKind("block_count_high", "qwen2", "qwen2.block_count", "block_count 40 with tensors for 2 blocks", "load",
                {"qwen2.block_count": (40, _U32)}),
        BadKind("block_count_over_max", "qwen2", "qwen2.block_count", "block_count 600, over LLAMA_MAX_LAYERS (512)",
                "load", {"qwen2.block_count": (600, _U32)}),
        BadKind("missing_block", "llama", "llama.block_count", "block_count 2 but blk.1.* tensors removed", "load",
                drop_tensors=lambda name: name.startswith("blk.1.")),
        BadKind("nan_rms_eps", "qwen2", "qwen2.attention.layer_norm_rms_epsilon", "NaN RMS-norm epsilon", "decode",
                {"qwen2.attention.layer_norm_rms_epsilon": (nan, _F32)}),
        BadKind("negative_rms_eps", "llama", "llama.attention.layer_norm_rms_epsilon", "negative RMS-norm epsilon",
                "decode", {"llama.attention.layer_norm_rms_epsilon": (-1e-5, _F32)}),
        BadKind("missing_rms_eps", "gemma3", "gemma3.attention.layer_norm_rms_epsilon", "RMS-norm epsilon removed",
                "load", drop_kv=("gemma3.attention.layer_norm_rms_epsilon",)),
        BadKind("wrong_embedding_length", "llama", "llama.embedding_length", "embedding_length 512, tensors 256 wide",
                "load", {"llama.embedding_length": (512, _U32)}),
        BadKind("wrong_ffn_length", "qwen2", "qwen2.feed_forward_length", "feed_forward_length 1024, tensors 512",
                "load", {"qwen2.feed_forward_length": (1024, _U32)}),
        BadKind("head_count_lie", "qwen2", "qwen2.attention.head_count", "8 heads of 64 in a 256-wide model", "load",
                {"qwen2.attention.head_count": (8, _U32)}),
        BadKind("head_count_kv_not_divisor", "llama", "llama.attention.head_count_kv", "3 KV heads for 4 heads",
                "load", {"llama.attention.head_count_kv": (3, _U32)}),
        BadKind("head_count_array_length", "llama", "llama.attention.head_count", "per-layer head counts for 3 of 2 "
                "blocks", "load", {"llama.attention.head_count": ([4, 4, 4], _U32)}),
        BadKind("key_length_lie", "gemma3", "gemma3.attention.key_length", "key_length 64, tensors built for 128",
                "load", {"gemma3.attention.key_length": (64, _U32), "gemma3.attention.value_length": (64, _U32),
                         "gemma3.rope.dimension_count": (64, _U32)}),
        BadKind("rope_dim_not_head", "qwen2", "qwen2.rope.dimension_count", "rope over 32 of 64 head dims (qwen2 "
                "rotates whole heads)", "load", {"qwen2.rope.dimension_count": (32, _U32)}),
        BadKind("rope_dim_too_large", "gemma3", "gemma3.rope.dimension_count", "rope over 256 dims of 128-dim heads",
                "decode", {"gemma3.rope.dimension_count": (256, _U32)}),
        BadKind("rope_dim_odd", "gemma3", "gemma3.rope.dimension_count", "rope over an odd 127 dims", "decode",
                {"gemma3.rope.dimension_count": (127, _U32)}),
        BadKind("rope_scaling_type_unknown", "qwen2", "qwen2.rope.scaling.type", "rope scaling type 'spiral'", "load",
                {"qwen2.rope.scaling.type": ("spiral", _STRING)}),
        BadKind("experts_used_over_count", "deepseek2", "deepseek2.expert_used_count", "8 experts used of 4", "load",
                {"deepseek2.expert_used_count": (8, _U32)}),
    ]
    return {k.name: k for k in kinds}


BAD_KINDS: dict[str, BadKind] = _kinds()


# --- writing -------------------------------------------------------------------------------------------
def _pack_str(text: str) -> bytes:
    raw = text.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(value: MetaValue, vtype: int, sub: int | None) -> bytes:
    if vtype == _STRING:
        return _pack_str(value)
    if vtype == _ARRAY:
        assert sub is not None
        head = struct.pack("<IQ", sub, len(value))
        if sub == _STRING:
            return head + b"".join(_pack_str(v) for v in value)
        return head + struct.pack(f"<{len(value)}{_SCALAR_FMT[sub][1]}", *value)
    return struct.pack(_SCALAR_FMT[vtype], value)


def rewrite_gguf(src: Path, dst: Path, metadata: Metadata, keep_tensor: Callable[[str], bool] = lambda _: True) -> None:
    """Write ``src``'s tensors (those ``keep_tensor`` accepts, bytes unchanged) under new ``metadata``."""
    from fmgguf.runtime.gguf.gguf_file import ggml_types, read_gguf

    info = read_gguf(src, check=False)
    type_ids = {name: tid for tid, (name, _, _) in ggml_types().items()}
    align = info.alignment
    tensors = [t for t in info.tensors if keep_tensor(t.name)]
    out = bytearray(b"GGUF" + struct.pack("<Iqq", 3, len(tensors), len(metadata)))
    for key, (value, vtype, sub) in metadata.items():
        out += _pack_str(key) + struct.pack("<I", vtype) + _pack_value(value, vtype, sub)
    offset = 0
    for t in tensors:
        out += _pack_str(t.name) + struct.pack("<I", len(t.shape)) + b"".join(struct.pack("<q", d) for d in t.shape)
        out += struct.pack("<iQ", type_ids[t.type], offset)
        offset += -(-t.n_bytes // align) * align
    out += b"\0" * (-len(out) % align)
    tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        fout.write(out)
        for t in tensors:
            fin.seek(info.data_offset + t.offset)
            fout.write(fin.read(t.n_bytes))
            fout.write(b"\0" * (-t.n_bytes % align))
    os.replace(tmp, dst)


def build_bad_model(kind: str, out_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the lying GGUF of ``kind`` (a key of :data:`BAD_KINDS`) into ``out_dir``; returns its path."""
    from fmgguf.tiny.tiny_models import build_tiny_model
    from fmgguf.tiny.vocab import read_kv

    spec = BAD_KINDS.get(kind)
    if spec is None:
        raise InvalidRequestError(f"no bad model kind {kind!r}", fix=f"use one of: {', '.join(BAD_KINDS)}")
    good = build_tiny_model(spec.arch, "unit", "F16", cache_dir=cache_dir)
    metadata: Metadata = dict(read_kv(good))
    for key in spec.drop_kv:
        metadata.pop(key)
    for key, (value, vtype) in spec.set_kv.items():
        if isinstance(value, list):
            metadata[key] = (value, _ARRAY, vtype)
        else:
            metadata[key] = (value, vtype, None)
    drop = spec.drop_tensors
    out = Path(out_dir) / f"bad-{kind}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    rewrite_gguf(good, out, metadata, (lambda n: not drop(n)) if drop else (lambda _: True))
    return out


def write_split(src: Path, out_dir: Path, metadata: Metadata | None = None) -> tuple[Path, Path]:
    """``src`` as a two-part gguf-split model (as llama.cpp's gguf-split writes one: every key in the
    first part, only the split.* keys in the second); ``metadata`` replaces the first part's keys."""
    from fmgguf.runtime.gguf.gguf_file import read_gguf
    from fmgguf.tiny.vocab import read_kv

    names = [t.name for t in read_gguf(src, check=False).tensors]
    first = set(names[: len(names) // 2])
    split: Metadata = {"split.no": (0, 2, None), "split.count": (2, 2, None),  # u16, u16, i32
                       "split.tensors.count": (len(names), _I32, None)}
    parts = (Path(out_dir) / f"{src.stem}-00001-of-00002.gguf", Path(out_dir) / f"{src.stem}-00002-of-00002.gguf")
    parts[0].parent.mkdir(parents=True, exist_ok=True)
    rewrite_gguf(src, parts[0], {**(metadata or dict(read_kv(src))), **split}, lambda n: n in first)
    rewrite_gguf(src, parts[1], {**split, "split.no": (1, 2, None)}, lambda n: n not in first)
    return parts


# --- raw llama.cpp, in a child process ---------------------------------------------------------------
#: loads with llama.cpp's defaults (CPU, no extra buffer types: the AMX repack buffers abort on MoE
#: models in this llama.cpp whatever the file), then decodes 4 tokens and 1 more
_RAW_CHILD = r"""
import ctypes, json, sys
from fmgguf.runtime.engine.llama_lib import lib  # the one module that imports llama_cpp
lc = lib()
_quiet = lc.llama_log_callback(lambda level, text, data: None)  # kept referenced: llama.cpp calls it
lc.llama_log_set(_quiet, ctypes.c_void_p(0))
lc.llama_backend_init()
mp = lc.llama_model_default_params()
mp.n_gpu_layers = 0
mp.use_extra_bufts = False
model = lc.llama_model_load_from_file(sys.argv[1].encode(), mp)
if not model:
    print("RAW:" + json.dumps({"stage": "load", "ok": False})); sys.exit(3)
cp = lc.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch = 256, 64, 64
ctx = lc.llama_init_from_model(model, cp)
if not ctx:
    print("RAW:" + json.dumps({"stage": "context", "ok": False})); sys.exit(3)
sys.stdout.write("RAW:" + json.dumps({"stage": "loaded", "ok": True}) + "\n"); sys.stdout.flush()
for tokens in ([1, 2, 3, 4], [5]):
    arr = (lc.llama_token * len(tokens))(*tokens)
    rc = lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(tokens)))
    if rc != 0:
        print("RAW:" + json.dumps({"stage": "decode", "ok": False, "rc": rc})); sys.exit(3)
logits = lc.llama_get_logits_ith(ctx, -1)
n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
finite = all(logits[i] == logits[i] and abs(logits[i]) != float("inf") for i in range(n_vocab))
print("RAW:" + json.dumps({"stage": "decoded", "ok": True, "finite": finite}))
"""


@dataclass(frozen=True)
class RawOutcome:
    """What raw llama.cpp did with a file: ``ok`` (loaded and decoded to finite logits), ``refused``
    (a clean failure, or NaN logits), ``aborted`` (killed by a signal) or ``hung``, and at which stage."""

    result: str
    stage: str
    signal: int | None = None
    finite_logits: bool | None = None

    @property
    def failed(self) -> bool:
        return self.result != "ok"


def raw_llama_outcome(path: str | os.PathLike[str], timeout: float = 120.0) -> RawOutcome:
    """Load ``path`` with raw llama.cpp in a child process and decode a few tokens."""
    # without GGML_NO_BACKTRACE, ggml_abort forks to attach gdb for a backtrace: with several
    # threads asserting at once, that hangs instead of aborting
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _RAW_CHILD, str(path)], capture_output=True, text=True,
                              timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        return RawOutcome("hung", "unknown")
    marks = [json.loads(ln[4:]) for ln in proc.stdout.splitlines() if ln.startswith("RAW:")]
    last = marks[-1] if marks else {"stage": "load", "ok": False}
    if proc.returncode < 0:
        stage = "decode" if last.get("stage") == "loaded" else "load"
        return RawOutcome("aborted", stage, signal=-proc.returncode)
    if proc.returncode == 0 and last.get("ok"):
        finite = bool(last.get("finite"))
        return RawOutcome("ok" if finite else "refused", "decode", finite_logits=finite)
    return RawOutcome("refused", "decode" if last.get("stage") == "decode" else "load")
