"""Fixtures for the converter tests: tiny random HF checkpoints with a real tokenizer, converted once.

Nothing comes from the hub. The SentencePiece tokenizer is trained here on a few lines of code and
prose; the weights are random (seeded) from transformers' own model classes, saved as safetensors.
The converter's requirements (torch CPU, transformers, sentencepiece, ...) are installed on demand by
the same code path `fmgguf convert` uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nimport sys\nprint(os.getcwd(), sys.argv)\n",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! This is a tiny tokenizer for tests.",
    "int main(void) { return 0; }",
    "while (x < 10) { x += 1; }",
    "SELECT name, size FROM files WHERE size > 100;",
]

ARCHES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


def train_tokenizer(out: Path, vocab_size: int = 400) -> int:
    """Train a SentencePiece BPE model (byte fallback) into ``out/tokenizer.model``; returns its size."""
    import sentencepiece as spm

    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(line for text in CORPUS * 4 for line in text.splitlines() if line.strip()) + "\n",
                      encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False, bos_id=1, eos_id=2, unk_id=0,
        pad_id=-1, num_threads=1, minloglevel=2, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity")
    corpus.unlink()
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()


def build_checkpoint(out: Path, arch: str = "llama", hidden: int = 256, layers: int = 2, intermediate: int = 512,
                     heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    """Write a random checkpoint (config.json, model.safetensors, tokenizer files) into ``out``."""
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    vocab = train_tokenizer(out)
    cfg_cls, model_cls = (getattr(transformers, n) for n in ARCHES[arch])
    config = cfg_cls(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                     bos_token_id=1, eos_token_id=2, tie_word_embeddings=(arch == "qwen2"))
    torch.manual_seed(seed)
    model_cls(config).to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 2048}, indent=1), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    return out


_GENERATE = textwrap.dedent("""
    import json, sys
    from fmgguf.runtime import ModelManager
    m = ModelManager()
    r = m.load_file(sys.argv[1], n_ctx=256, n_gpu_layers=0)
    g = m.generate_text("def add(a, b):", max_tokens=8, temperature=0.0, seed=0)
    print(json.dumps({"loaded": bool(r.success), "quant": r.quant, "text": g.text,
                      "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                      "finish_reason": g.finish_reason}))
""")


def load_and_generate(path: Path) -> dict:
    """Load ``path`` with fmgguf's ModelManager and generate, in a child process (llama.cpp may abort)."""
    proc = subprocess.run([sys.executable, "-c", _GENERATE, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=os.environ.copy())
    if proc.returncode == -4:  # SIGILL
        pytest.fail(f"llama.cpp died with SIGILL on {path.name}: the llama-cpp-python build uses CPU instructions "
                    "this machine refuses (AMX from GGML_NATIVE); rebuild it with CMAKE_ARGS=-DGGML_NATIVE=OFF ...")
    assert proc.returncode == 0, f"loading {path.name} failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def converter_ready() -> None:
    """The converter's Python requirements (installed on demand, as `fmgguf convert` does)."""
    from fmgguf.convert.toolchain import ensure_requirements

    ensure_requirements(install=True)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, converter_ready: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-checkpoints")
    return {arch: build_checkpoint(root / arch, arch) for arch in ARCHES}


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> dict[str, dict]:
    """Each checkpoint converted once: llama through the script (a subprocess), qwen2 through the API."""
    from fmgguf.convert import convert_checkpoint

    out: dict[str, dict] = {}
    llama_dir = tmp_path_factory.mktemp("out-llama")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "convert" / "convert.py"), str(checkpoints["llama"]),
                           "--name", "TinyLlama", "--out", str(llama_dir), "--model-id", "tiny-llama-conv", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    out["llama"] = {"dir": llama_dir, "name": "TinyLlama", "id": "tiny-llama-conv",
                    "files": {q: Path(p) for q, p in data["files"].items()}, "entry": Path(data["catalog_entry"])}
    qwen_dir = tmp_path_factory.mktemp("out-qwen2")
    res = convert_checkpoint(checkpoints["qwen2"], "TinyQwen2", qwen_dir)
    out["qwen2"] = {"dir": qwen_dir, "name": "TinyQwen2", "id": res.entry["id"], "files": res.files,
                    "entry": res.entry_path}
    return out


@pytest.fixture(scope="session")
def generate():
    """``generate(path) -> dict``: load a GGUF in fmgguf's runtime (child process) and complete a prompt."""
    return load_and_generate


@pytest.fixture(scope="session")
def make_checkpoint(converter_ready: None):
    """``make_checkpoint(dir, arch)``: build a tiny random checkpoint."""
    return build_checkpoint
