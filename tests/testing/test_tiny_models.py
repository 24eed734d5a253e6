from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
from pathlib import Path

import pytest

from fmgguf.errors import EngineError, InvalidRequestError
from fmgguf.testing import build_tiny_model
from fmgguf.testing.smoke import smoke_generate
from fmgguf.tiny.tiny_specs import ARCHES, tiny_spec

FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tensor_types(path: Path) -> dict[str, str]:
    import gguf

    from fmgguf.tiny.vocab import read_header

    return {name: gguf.GGMLQuantizationType(t).name for name, (_ne, t) in read_header(path)[1].items()}


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q4_K_M"])
@pytest.mark.parametrize("arch", ARCHES)
def test_every_arch_and_quant_loads_and_generates(all_unit_models, arch: str, quant: str) -> None:
    path = all_unit_models[(arch, quant)]
    assert path.is_file() and path.suffix == ".gguf"
    out = smoke_generate(path, n_tokens=6)  # a child process: an abort cannot take pytest down
    assert len(out["tokens"]) == 6
    assert all(0 <= t < out["n_vocab"] for t in out["tokens"])
    assert out["file_type"] == str(FILE_TYPES[quant])
    assert out["chat_template"]  # every tiny model carries a usable chat template
    assert len(out["prompt_tokens"]) > 2  # the real tokenizer split the prompt


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = build_tiny_model("llama", "unit", "Q4_K_M", seed=0, cache_dir=tmp_path / "a")
    shared = build_tiny_model("llama", "unit", "Q4_K_M", seed=0)  # built by another process earlier
    assert a != shared and _sha(a) == _sha(shared)
    c = build_tiny_model("llama", "unit", "F16", seed=1, cache_dir=tmp_path / "a")
    assert _sha(c) != _sha(tmp_path / "a" / a.name.replace("Q4_K_M", "F16"))
    assert build_tiny_model("llama", "unit", "Q4_K_M", seed=0, cache_dir=tmp_path / "a") == a  # cached


def test_q4_k_m_really_holds_k_quants(all_unit_models) -> None:
    types = _tensor_types(all_unit_models[("llama", "Q4_K_M")])
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["blk.0.ffn_gate.weight"] == "Q4_K"
    assert types["output.weight"] == "Q6_K"
    assert "Q6_K" in {types["blk.0.attn_v.weight"], types["blk.1.attn_v.weight"]}
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert not {"Q5_0", "Q8_0"} & set(types.values())  # no fallbacks: dims are multiples of 256
    q8 = _tensor_types(all_unit_models[("qwen2", "Q8_0")])
    assert q8["blk.0.attn_q.weight"] == "Q8_0" and q8["blk.0.attn_q.bias"] == "F32"
    f16 = _tensor_types(all_unit_models[("qwen2", "F16")])
    assert f16["blk.0.ffn_down.weight"] == "F16"


def test_architecture_specifics_are_in_the_files(all_unit_models) -> None:
    from fmgguf.tiny.vocab import read_kv

    qwen = _tensor_types(all_unit_models[("qwen2", "F16")])
    assert "blk.1.attn_k.bias" in qwen and "output.weight" not in qwen  # biases, tied embeddings
    sc = _tensor_types(all_unit_models[("starcoder2", "F16")])
    assert {"blk.0.attn_norm.bias", "blk.0.ffn_up.bias", "blk.0.ffn_down.bias", "output_norm.bias"} <= set(sc)
    assert "blk.0.ffn_gate.weight" not in sc
    gemma_kv = read_kv(all_unit_models[("gemma3", "F16")])
    assert gemma_kv["gemma3.attention.sliding_window"][0] == 256
    ds = _tensor_types(all_unit_models[("deepseek2", "F16")])
    assert {"blk.0.attn_k_b.weight", "blk.0.attn_v_b.weight", "blk.1.ffn_gate_exps.weight"} <= set(ds)
    ds_kv = read_kv(all_unit_models[("deepseek2", "F16")])
    assert ds_kv["deepseek2.attention.kv_lora_rank"][0] == 256
    assert ds_kv["deepseek2.attention.key_length_mla"][0] == 192


@pytest.mark.parametrize(("arch", "pre", "suf", "mid"), [
    ("qwen2", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("starcoder2", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("deepseek2", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
])
def test_fim_token_ids_point_at_fim_tokens(all_unit_models, arch: str, pre: str, suf: str, mid: str) -> None:
    from fmgguf.tiny.vocab import read_kv

    kv = read_kv(all_unit_models[(arch, "Q8_0")])
    tokens = kv["tokenizer.ggml.tokens"][0]
    assert tokens[kv["tokenizer.ggml.fim_pre_token_id"][0]] == pre
    assert tokens[kv["tokenizer.ggml.fim_suf_token_id"][0]] == suf
    assert tokens[kv["tokenizer.ggml.fim_mid_token_id"][0]] == mid


def test_llama_and_gemma3_have_no_fim_ids(all_unit_models) -> None:
    from fmgguf.tiny.vocab import read_kv

    for arch in ("llama", "gemma3"):
        assert "tokenizer.ggml.fim_pre_token_id" not in read_kv(all_unit_models[(arch, "F16")])


def _build(cache: str) -> str:
    return str(build_tiny_model("llama", "unit", "Q8_0", cache_dir=cache))


def test_concurrent_builds_share_one_file(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        paths = list(pool.map(_build, [str(tmp_path)] * 2))
    assert paths[0] == paths[1]
    assert _sha(Path(paths[0])) == _sha(build_tiny_model("llama", "unit", "Q8_0"))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_bad_requests_are_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="llama"):
        build_tiny_model("gpt2")
    with pytest.raises(InvalidRequestError, match="Q4_K_M"):
        build_tiny_model("qwen2", quant="Q3_K_S")
    with pytest.raises(InvalidRequestError, match="unit"):
        tiny_spec("qwen2", "huge")


def test_a_broken_file_is_an_error_not_a_crash(all_unit_models, tmp_path: Path) -> None:
    src = all_unit_models[("llama", "F16")].read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(src[: len(src) // 2])
    with pytest.raises(EngineError, match="broken.gguf"):
        smoke_generate(broken, n_tokens=2)


@pytest.mark.slow
def test_bench_size_model(tmp_path: Path) -> None:
    from fmgguf.tiny.tiny_cards import tiny_card

    card = tiny_card("tiny-qwen2-bench", arch="qwen2", size="bench", quants=("Q4_K_M",))
    assert 50e6 <= card["parameters"]["total"] <= 150e6
    path = build_tiny_model("qwen2", "bench", "Q4_K_M")
    assert _tensor_types(path)["blk.7.attn_q.weight"] == "Q4_K"
    assert len(smoke_generate(path, n_tokens=8)["tokens"]) == 8


@pytest.mark.parametrize("arch", ARCHES)
def test_bench_sizes_are_50_to_150m_parameters(arch: str) -> None:
    from fmgguf.tiny.tiny_cards import parameter_counts
    from fmgguf.tiny.vocab import ensure_vocab, read_kv

    spec = tiny_spec(arch, "bench")
    n_vocab = len(read_kv(ensure_vocab(spec.vocab))["tokenizer.ggml.tokens"][0])
    total, active = parameter_counts(spec, n_vocab)
    assert 50e6 <= total <= 150e6 and active <= total


EXPECTED_PROMPT_END = {"llama": "[INST] Write add() [/INST]", "qwen2": "<|im_start|>assistant\n",
                       "starcoder2": "### Response\n", "gemma3": "<start_of_turn>model\n", "deepseek2": "Assistant:"}


@pytest.mark.parametrize("arch", ARCHES)
def test_embedded_chat_template_renders_a_generation_prompt(all_unit_models, arch: str) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # renders only; no model is loaded

    from fmgguf.tiny.vocab import read_kv

    kv = read_kv(all_unit_models[(arch, "Q4_K_M")])
    tokens = kv["tokenizer.ggml.tokens"][0]
    formatter = Jinja2ChatFormatter(kv["tokenizer.chat_template"][0], eos_token=tokens[kv["tokenizer.ggml.eos_token_id"][0]],
                                    bos_token=tokens[kv["tokenizer.ggml.bos_token_id"][0]])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write add()"}]
    prompt = formatter(messages=messages).prompt
    assert "Write add()" in prompt and "Be brief." in prompt
    assert prompt.endswith(EXPECTED_PROMPT_END[arch])
