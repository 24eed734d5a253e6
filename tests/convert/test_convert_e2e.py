"""End to end: tiny HF checkpoints → F16/Q8_0/Q4_K_M GGUFs → loaded and generating in fmgguf's runtime."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_type(path: Path) -> int:
    from gguf import GGUFReader

    return int(GGUFReader(str(path)).fields["general.file_type"].contents())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_outputs_are_the_right_quants_and_generate(converted: dict, generate, arch: str) -> None:
    conv = converted[arch]
    assert set(conv["files"]) == {"F16", "Q8_0", "Q4_K_M"}
    sizes = {}
    for quant, path in conv["files"].items():
        assert path.name == f"{conv['name']}-{quant}.gguf"
        assert _file_type(path) == FILE_TYPES[quant]
        sizes[quant] = path.stat().st_size
        out = generate(path)
        assert out["loaded"] is True
        assert out["quant"] == quant
        assert out["prompt_tokens"] > 1 and out["completion_tokens"] >= 1
        assert out["finish_reason"] in ("length", "stop")
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_K_M"]
    # nothing half-written or temporary is left next to the outputs
    assert not list(conv["dir"].glob("*.partial"))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_catalog_entry_validates_and_pins_the_files(converted: dict, checkpoints: dict, arch: str) -> None:
    import json

    from fmgguf.catalog.schema import ModelCard

    conv = converted[arch]
    doc = yaml.safe_load(conv["entry"].read_text(encoding="utf-8"))
    (raw,) = doc["models"]
    card = ModelCard.model_validate({**raw, "builtin": False})
    assert card.id == conv["id"]
    assert set(card.variants) == {"F16", "Q8_0", "Q4_K_M"}
    for variant in card.variants.values():
        (f,) = variant.files
        path = conv["dir"] / f.name
        assert f.size == path.stat().st_size
        assert f.sha256 == _sha(path)
    cfg = json.loads((checkpoints[arch] / "config.json").read_text())
    assert card.arch is not None and card.arch.name == arch
    assert (card.arch.n_layer, card.arch.n_embd, card.arch.n_ff) == (2, 256, 512)
    assert (card.arch.n_head, card.arch.n_head_kv, card.arch.head_dim) == (4, 2, 64)
    assert card.arch.vocab == cfg["vocab_size"]
    assert card.arch.context_length == 2048
    assert card.arch.tied_embeddings is (arch == "qwen2")
    assert card.parameters is not None and card.parameters.total == card.parameters.active > 1_000_000


def test_entry_is_a_usable_user_catalog(converted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from fmgguf.catalog import Catalog
    from fmgguf.settings import load_settings

    conv = converted["llama"]
    monkeypatch.setenv("FMGGUF_CATALOG", str(conv["entry"]))
    card, quant = Catalog.load(load_settings()).resolve(f"{conv['id']}:Q4_K_M")
    assert (card.id, quant) == (conv["id"], "Q4_K_M")
    assert card.variant("Q8_0").files[0].name == "TinyLlama-Q8_0.gguf"


def test_rerun_keeps_finished_files_and_rebuilds_a_damaged_one(converted: dict, checkpoints: dict) -> None:
    from fmgguf.convert import convert_checkpoint

    conv = converted["qwen2"]
    before = {q: (p.stat().st_mtime_ns, _sha(p)) for q, p in conv["files"].items()}
    again = convert_checkpoint(checkpoints["qwen2"], conv["name"], conv["dir"])
    assert sorted(again.skipped) == ["F16", "Q4_K_M", "Q8_0"]
    assert {q: (p.stat().st_mtime_ns, _sha(p)) for q, p in again.files.items()} == before

    q4 = conv["files"]["Q4_K_M"]
    with open(q4, "r+b") as fh:  # a damaged final file (e.g. a copy cut short by someone else)
        fh.truncate(q4.stat().st_size // 2)
    fixed = convert_checkpoint(checkpoints["qwen2"], conv["name"], conv["dir"])
    assert sorted(fixed.skipped) == ["F16", "Q8_0"]
    assert _sha(q4) == before["Q4_K_M"][1]  # quantization is deterministic


def test_interrupted_run_leaves_no_half_written_gguf(checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "convert" / "convert.py"), str(checkpoints["llama"]),
           "--name", "Cut", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob(".Cut-*.gguf.partial")):
        time.sleep(0.01)
    assert list(out.glob(".Cut-*.gguf.partial")), "the conversion never started writing"
    os.killpg(proc.pid, signal.SIGKILL)  # the script and the converter/quantizer under it
    proc.wait()
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    for final in out.glob("Cut-*.gguf"):  # whatever has a final name is complete
        read_gguf(final)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.glob("Cut-*.gguf")) == ["Cut-F16.gguf", "Cut-Q4_K_M.gguf", "Cut-Q8_0.gguf"]
    assert not list(out.glob("*.partial"))
    for final in out.glob("Cut-*.gguf"):
        read_gguf(final)


def _write_imatrix(f16: Path, gguf_path: Path, dat_path: Path) -> None:
    """The same importance data as llama-imatrix's GGUF format and its legacy .dat format."""
    import struct

    import numpy as np
    from gguf import GGUFReader, GGUFWriter

    rng = np.random.default_rng(7)
    entries = {}
    for t in GGUFReader(str(f16)).tensors:
        if t.name.endswith(".weight") and len(t.shape) == 2 and t.name != "token_embd.weight":
            entries[t.name] = (rng.random(int(t.shape[0]), dtype=np.float32) * 50 + 0.01).astype(np.float32)
    w = GGUFWriter(str(gguf_path), arch="imatrix")
    w.add_array("imatrix.datasets", ["tiny.txt"])
    w.add_uint32("imatrix.chunk_count", 4)
    w.add_uint32("imatrix.chunk_size", 64)
    for name, sums in entries.items():
        w.add_tensor(f"{name}.in_sum2", sums * 256)
        w.add_tensor(f"{name}.counts", np.array([256.0], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(dat_path, "wb") as fh:
        fh.write(struct.pack("<i", len(entries)))
        for name, sums in entries.items():
            raw = name.encode()
            fh.write(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 4, sums.size))
            fh.write((sums * 4).astype("<f4").tobytes())


def test_imatrix_guides_q4_k_m(converted: dict, tmp_path: Path, generate) -> None:
    from fmgguf.convert.quantize import quantize

    f16 = converted["llama"]["files"]["F16"]
    plain = converted["llama"]["files"]["Q4_K_M"]
    gguf_im, dat_im = tmp_path / "imatrix.gguf", tmp_path / "imatrix.dat"
    _write_imatrix(f16, gguf_im, dat_im)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    quantize(f16, a, "Q4_K_M", imatrix=gguf_im)
    quantize(f16, b, "Q4_K_M", imatrix=dat_im)
    assert _sha(a) == _sha(b)  # both formats carry the same importance numbers
    assert _sha(a) != _sha(plain)  # and they change the quantization
    assert _file_type(a) == 15
    assert generate(a)["completion_tokens"] >= 1


def test_cli_add_registers_the_entry(converted: dict, checkpoints: dict) -> None:
    import json

    from click.testing import CliRunner

    from fmgguf.catalog import Catalog
    from fmgguf.cli.main import cli
    from fmgguf.settings import load_settings

    conv = converted["llama"]
    res = CliRunner().invoke(cli, ["convert", str(checkpoints["llama"]), "--name", conv["name"], "--out",
                                   str(conv["dir"]), "--model-id", conv["id"], "--add", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert sorted(data["skipped"]) == ["F16", "Q4_K_M", "Q8_0"]
    card = Catalog.load(load_settings()).get(conv["id"])
    assert card.variant("Q4_K_M").files[0].sha256 == _sha(conv["files"]["Q4_K_M"])


def test_unrecognised_bpe_tokenizer_is_a_clear_error(make_checkpoint, tmp_path: Path) -> None:
    """A home-made byte-level BPE has a pre-tokenizer llama.cpp cannot identify: say so, write nothing final."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from fmgguf.convert import convert_checkpoint
    from fmgguf.errors import ConvertError

    ck = make_checkpoint(tmp_path / "ck", "qwen2")
    (ck / "tokenizer.model").unlink()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["def add(a, b): return a + b", "hello world"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(ck / "tokenizer.json"))
    (ck / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                          "bos_token": "<s>", "eos_token": "</s>"}))
    with pytest.raises(ConvertError, match="BPE tokenizer is not one llama.cpp's converter recognises"):
        convert_checkpoint(ck, "Bpe", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.gguf")) and not list((tmp_path / "out").glob("*.partial"))
