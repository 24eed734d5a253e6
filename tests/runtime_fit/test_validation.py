"""Lying GGUFs: every kind really fails raw llama.cpp (refusal or abort, in a child process), and fmgguf
refuses every one of them — `read_gguf`, `import-gguf` (nothing registered, nothing linked) and
`inspect` (a problems section, exit code != 0) — while the good tiny models and a real model pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.errors import GGUFError, exit_code_for
from fmgguf.runtime.gguf.gguf_file import read_gguf
from fmgguf.runtime.gguf.validation import check_model
from fmgguf.runtime.plan.dryrun import check_loadable, dry_run_check
from fmgguf.testing.bad_models import BAD_KINDS, build_bad_model, raw_llama_outcome

KINDS = sorted(BAD_KINDS)
GGUF_EXIT = exit_code_for(GGUFError("x"))


@pytest.fixture(scope="session")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bad-ggufs")
    return {kind: build_bad_model(kind, out) for kind in KINDS}


def test_the_corpus_has_at_least_ten_kinds_of_both_failures() -> None:
    assert len(BAD_KINDS) >= 10
    assert {k.fails_at for k in BAD_KINDS.values()} == {"load", "decode"}
    assert len({k.field for k in BAD_KINDS.values()}) >= 10


# --- the oracle: raw llama.cpp -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "starcoder2", "gemma3", "deepseek2"])
def test_good_tiny_models_load_and_decode_in_raw_llama_cpp(tiny: dict, arch: str) -> None:
    outcome = raw_llama_outcome(tiny[(arch, "F16")])
    assert outcome.result == "ok" and outcome.finite_logits, outcome


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_really_fails_raw_llama_cpp(bad: dict[str, Path], kind: str) -> None:
    spec = BAD_KINDS[kind]
    outcome = raw_llama_outcome(bad[kind], timeout=90)
    assert outcome.result in ("refused", "aborted"), outcome
    if outcome.result == "aborted":
        assert outcome.stage == spec.fails_at, outcome
    if spec.fails_at == "decode":  # these pass llama.cpp's loader and kill the process at the first decode
        assert outcome.result == "aborted" and outcome.stage == "decode", outcome


def test_the_files_are_well_formed_ggufs(bad: dict[str, Path]) -> None:
    from fmgguf.tiny.vocab import read_header

    for kind, path in bad.items():
        info = read_gguf(path, check=False)  # our parser opens it ...
        _, tensors = read_header(path)  # ... and so does a second, independent reader: only the claims are wrong
        assert list(tensors) == [t.name for t in info.tensors], kind
        assert info.data_offset + info.tensor_bytes <= path.stat().st_size, kind


# --- fmgguf refuses every kind ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_check_model_names_the_lying_field(bad: dict[str, Path], kind: str) -> None:
    problems = check_model(read_gguf(bad[kind], check=False))
    assert problems and problems[0].field == BAD_KINDS[kind].field, problems
    with pytest.raises(GGUFError) as err:
        read_gguf(bad[kind])  # the reader every load goes through refuses it too
    assert BAD_KINDS[kind].field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_import_gguf_refuses_and_registers_nothing(bad: dict[str, Path], kind: str, isolated_home: Path) -> None:
    runner = CliRunner()
    model_id = "bad-" + kind.replace("_", "-")
    res = runner.invoke(cli, ["import-gguf", str(bad[kind]), "--as", model_id, "--quant", "F16"])
    assert res.exit_code != 0 and isinstance(res.exception, GGUFError), res.output
    assert BAD_KINDS[kind].field in str(res.exception) and "\n" not in str(res.exception)
    assert json.loads(runner.invoke(cli, ["ls", "--json"]).output) == []
    assert model_id not in runner.invoke(cli, ["list"]).output
    assert not [p for p in isolated_home.rglob("*.gguf")], "a file was linked into the store"


@pytest.mark.parametrize("kind", [k for k in KINDS if BAD_KINDS[k].fails_at == "load"])
def test_llama_cpps_own_dry_run_refuses_every_load_time_lie(bad: dict[str, Path], kind: str) -> None:
    """The second layer of import-gguf: llama.cpp's loader in a child (no_alloc) refuses these even
    without our checks, and an abort there kills only the child."""
    with pytest.raises(GGUFError, match="llama.cpp"):
        dry_run_check(bad[kind])


def test_decode_time_lies_pass_llama_cpps_loader(bad: dict[str, Path]) -> None:
    """Why our own checks exist: llama.cpp loads these happily and only aborts at the first decode."""
    for kind in (k for k in KINDS if BAD_KINDS[k].fails_at == "decode"):
        dry_run_check(bad[kind])


def test_import_gguf_refuses_through_the_entry_point_with_one_line(bad: dict[str, Path], capsys) -> None:
    from fmgguf.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["import-gguf", str(bad["nan_rms_eps"]), "--as", "nan-model", "--quant", "F16"])
    assert exit_.value.code == GGUF_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qwen2.attention.layer_norm_rms_epsilon" in err[0] and "nan" in err[0].lower()


# --- inspect -----------------------------------------------------------------------------------------------
def test_inspect_shows_problems_and_exits_nonzero(bad: dict[str, Path]) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(bad["rope_dim_too_large"])])
    assert res.exit_code == GGUF_EXIT, res.output
    assert "architecture" in res.output and "problems" in res.output
    assert "gemma3.rope.dimension_count" in res.output
    res = runner.invoke(cli, ["inspect", str(bad["nan_rms_eps"]), "--json"])
    assert res.exit_code == GGUF_EXIT
    data = json.loads(res.output)  # strict JSON: the NaN itself is not emitted as a bare NaN
    assert data["problems"][0]["field"] == "qwen2.attention.layer_norm_rms_epsilon"


def test_inspect_of_a_good_model_has_no_problems(tiny: dict) -> None:
    res = CliRunner().invoke(cli, ["inspect", str(tiny[("qwen2", "Q4_K_M")]), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["problems"] == []


# --- no false refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "starcoder2", "gemma3", "deepseek2"])
@pytest.mark.parametrize("quant", ["F16", "Q4_K_M"])
def test_good_tiny_models_pass_every_check(tiny: dict, arch: str, quant: str) -> None:
    path = tiny[(arch, quant)]
    assert check_model(read_gguf(path, check=False)) == []
    assert check_loadable(path).arch == arch  # including llama.cpp's dry run


def test_import_gguf_still_registers_a_good_model(tiny: dict) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["import-gguf", str(tiny[("gemma3", "Q4_K_M")]), "--as", "good-gemma", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(runner.invoke(cli, ["ls", "--json"]).output)] == ["good-gemma"]


def test_the_manager_refuses_a_lying_file_in_process_and_keeps_working(bad: dict[str, Path], tiny: dict) -> None:
    """In-process loads go through the same checks: a file that would abort llama.cpp at the first
    decode is refused before llama.cpp sees it, and this process can still load a good model."""
    from fmgguf.runtime.manager import ModelManager

    manager = ModelManager()
    try:
        for kind in ("nan_rms_eps", "rope_dim_odd", "experts_used_over_count"):
            with pytest.raises(GGUFError, match=BAD_KINDS[kind].field.replace(".", r"\.")):
                manager.load_file(bad[kind])
            assert manager.current_model() is None
        manager.load_file(tiny[("qwen2", "Q4_K_M")])
        assert manager.generate_text("def add(a, b):", max_tokens=4, temperature=0.0).text is not None
    finally:
        manager.close()


# --- each check on its own (metadata edits of a good header; no file written) ---------------------------------
@pytest.mark.parametrize(("arch", "key", "value", "field"), [
    ("qwen2", "qwen2.rope.freq_base", float("nan"), "qwen2.rope.freq_base"),
    ("qwen2", "qwen2.rope.freq_base", 0.0, "qwen2.rope.freq_base"),
    ("llama", "llama.attention.layer_norm_rms_epsilon", float("inf"), "llama.attention.layer_norm_rms_epsilon"),
    ("starcoder2", "starcoder2.attention.layer_norm_epsilon", None, "starcoder2.attention.layer_norm_epsilon"),
    ("llama", "llama.context_length", 0, "llama.context_length"),
    ("llama", "llama.attention.head_count", 0, "llama.attention.head_count"),
    ("llama", "llama.attention.head_count_kv", 0, "llama.attention.head_count_kv"),
    ("llama", "llama.rope.dimension_count", 32, "llama.rope.dimension_count"),
    ("gemma3", "gemma3.rope.scaling.factor", -2.0, "gemma3.rope.scaling.factor"),
    ("deepseek2", "deepseek2.expert_count", 2048, "deepseek2.expert_count"),
    ("deepseek2", "deepseek2.expert_used_count", 0, "deepseek2.expert_used_count"),
    ("deepseek2", "deepseek2.rope.dimension_count", 192, "deepseek2.rope.dimension_count"),
    ("deepseek2", "deepseek2.attention.kv_lora_rank", 128, "deepseek2.attention.kv_lora_rank"),
    ("starcoder2", "starcoder2.feed_forward_length", [1024, 2048], "starcoder2.feed_forward_length"),
])
def test_each_check_names_its_field(tiny: dict, arch: str, key: str, value, field: str) -> None:
    import dataclasses

    info = read_gguf(tiny[(arch, "F16")], check=False)
    metadata = dict(info.metadata)
    if value is None:
        del metadata[key]
    else:
        metadata[key] = value
    problems = check_model(dataclasses.replace(info, metadata=metadata))
    assert problems and problems[0].field == field, problems


# --- gguf-split models: the checks see every part's tensors ----------------------------------------------------
def test_a_split_model_is_checked_whole(tiny: dict, tmp_path: Path) -> None:
    from fmgguf.testing.bad_models import write_split
    from fmgguf.tiny.vocab import read_kv

    good = tiny[("llama", "F16")]
    first, second = write_split(good, tmp_path / "ok")
    assert raw_llama_outcome(first).result == "ok"  # llama.cpp loads the parts together
    assert check_loadable(first).arch == "llama"  # no false refusal for the tensors in part 2
    meta = dict(read_kv(good))
    meta["llama.block_count"] = (3, 4, None)
    lying, _ = write_split(good, tmp_path / "bad", metadata=meta)
    with pytest.raises(GGUFError, match="llama.block_count"):
        read_gguf(lying)
    second.rename(second.with_suffix(".away"))  # a part missing: only the checks that need no tensor table
    assert check_model(read_gguf(first, check=False), tensors=False) == []
    read_gguf(first)


# --- the bounds themselves, and the checks no other check stands in for ------------------------------------
def _edited(path: Path, **metadata):  # noqa: ANN003, ANN202
    import dataclasses

    info = read_gguf(path, check=False)
    return dataclasses.replace(info, metadata={**info.metadata, **metadata})


def test_block_count_bound_is_llama_cpps_512(tiny: dict) -> None:
    """LLAMA_MAX_LAYERS is 512: 512 blocks are allowed, 513 are not (without the tensor table, so only
    the bound decides: a 2-block file claiming 512 is a split part whose other parts are elsewhere)."""
    path = tiny[("llama", "F16")]
    assert check_model(_edited(path, **{"llama.block_count": 512}), tensors=False) == []
    problems = check_model(_edited(path, **{"llama.block_count": 513}), tensors=False)
    assert problems and problems[0].field == "llama.block_count" and "512" in problems[0].message, problems


def test_kv_heads_that_do_not_divide_the_heads_are_named(tiny: dict) -> None:
    """4 heads over 3 KV heads: only the head-count check catches it when the tensor table is not at hand
    (the first part of a split model), since no shape is checked then."""
    path = tiny[("llama", "F16")]
    assert check_model(_edited(path), tensors=False) == []
    problems = check_model(_edited(path, **{"llama.attention.head_count_kv": 3}), tensors=False)
    assert [p.field for p in problems] == ["llama.attention.head_count_kv"], problems
    assert "divide" in problems[0].message


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_too_few_blocks_claimed_is_named(tiny: dict, arch: str) -> None:
    """block_count 1 on the 2-block model: the file has tensors for a block past it."""
    problems = check_model(_edited(tiny[(arch, "F16")], **{f"{arch}.block_count": 1}))
    assert problems and problems[0].field == f"{arch}.block_count", problems
    assert "block 1" in problems[0].message
