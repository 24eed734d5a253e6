from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli, main


def run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "fmgguf", *args], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_list_json_has_20_models_with_both_quants_and_the_demo() -> None:
    rc, out, err = run("list", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == 21
    for row in rows:
        if row["id"] == "smollm2-135m-instruct":  # the demo model: the one quant its wheel embeds
            assert list(row["quants"]) == ["Q4_1"] and row["builtin"] is True
            continue
        assert {"Q4_K_M", "Q8_0"} <= set(row["quants"]), row["id"]
        assert row["builtin"] is True



#: the documented columns of `list --json` (a row losing or renaming one breaks scripts)
ROW_KEYS = {"id", "family", "display_name", "parameters", "active_parameters", "context_length", "fim", "license",
            "chat", "builtin", "quants"}
QUANT_KEYS = {"repo", "size", "approx_size", "downloaded"}


def test_list_json_rows_carry_every_field_with_the_catalogs_values() -> None:
    from fmgguf.catalog import Catalog
    from fmgguf.settings import load_settings

    res = CliRunner().invoke(cli, ["list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(res.output)}
    cards = {c.id: c for c in Catalog.load(load_settings()).models()}
    assert set(rows) == set(cards)
    for mid, row in rows.items():
        card = cards[mid]
        assert set(row) == ROW_KEYS, (mid, set(row) ^ ROW_KEYS)
        assert (row["family"], row["display_name"], row["context_length"], row["license"]) == \
            (card.family, card.title, card.context_length, card.license), mid
        assert row["parameters"] == (card.parameters.total if card.parameters else None), mid
        assert row["active_parameters"] == (card.parameters.active if card.parameters else None), mid
        assert (row["fim"], row["chat"], row["builtin"]) == \
            (card.fim_supported, card.chat_template is not None, card.builtin), mid
        assert set(row["quants"]) == set(card.variants), mid
        for q, info in row["quants"].items():
            v = card.variants[q]
            assert set(info) == QUANT_KEYS, (mid, q)
            assert (info["repo"], info["size"], info["approx_size"], info["downloaded"]) == \
                (v.repo, v.size, v.approx_size, False), (mid, q)
    assert any(r["fim"] for r in rows.values()) and not all(r["fim"] for r in rows.values())

def test_list_does_not_import_llama_cpp_or_hub() -> None:
    code = ("import sys; from fmgguf.cli.main import main\n"
            "try:\n main(['list','--json'])\nexcept SystemExit: pass\n"
            "print('LOADED', [m for m in ('llama_cpp','huggingface_hub') if m in sys.modules], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in proc.stderr


def test_info_shows_repo_files_and_sha() -> None:
    rc, out, err = run("info", "qwen2.5-coder-7b-instruct")
    assert rc == 0, err
    assert "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF" in out
    assert ".gguf" in out and "sha256" in out
    data = json.loads(run("info", "qwen2.5-coder-7b-instruct", "--json")[1])
    sha = data["variants"]["Q4_K_M"]["files"][0]["sha256"]
    assert sha and len(sha) == 64 and sha in out
    mem = data["memory"]["Q4_K_M"]
    assert mem["4096"]["total"] < mem["16384"]["total"] < mem["32768"]["total"]


def test_unknown_id_one_line_error_nonzero() -> None:
    rc, out, err = run("info", "qwen-7b")
    assert rc == 4
    assert err.strip().count("\n") == 0 and "did you mean qwen2.5-coder-7b-instruct" in err
    assert "Traceback" not in err


def test_broken_catalog_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text("models:\n  - id: mine\n    variants:\n      Q4_K_M: {repo: a/b, files: [{name: x.gguf, sha256: nothex}]}\n")
    monkeypatch.setenv("FMGGUF_CATALOG", str(bad))
    rc, out, err = run("list")
    assert rc == 3 and "Traceback" not in err
    assert str(bad) in err and "model mine" in err and "sha256" in err
    assert err.strip().count("\n") == 0


def test_search_filters_json() -> None:
    rc, out, _ = run("search", "--family", "qwen2.5-coder", "--max-params", "2", "--json")
    assert rc == 0
    ids = [r["id"] for r in json.loads(out)]
    assert ids == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    fim = [r["id"] for r in json.loads(run("search", "--fim", "--json")[1])]
    assert "codestral-22b-v0.1" in fim and "opencoder-8b-instruct" not in fim


def test_catalog_add_writes_user_catalog(isolated_home: Path) -> None:
    runner = CliRunner()
    sha = "b" * 64
    res = runner.invoke(cli, ["catalog", "add", "my-model", "--repo", "me/My-GGUF", "--file", "my-Q6_K.gguf",
                              "--quant", "Q6_K", "--sha256", sha, "--revision", "abc123"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["info", "my-model", "--json"])
    data = json.loads(res.output)
    assert data["variants"]["Q6_K"]["files"][0]["sha256"] == sha
    assert data["variants"]["Q6_K"]["revision"] == "abc123"
    # extending a built-in model keeps its two quants and adds the new one
    res = runner.invoke(cli, ["catalog", "add", "codegemma-2b", "--repo", "me/cg", "--file", "cg-Q6_K.gguf", "--quant", "q6_k"])
    assert res.exit_code == 0, res.output
    quants = json.loads(runner.invoke(cli, ["info", "codegemma-2b", "--json"]).output)["variants"]
    assert set(quants) == {"Q4_K_M", "Q8_0", "Q6_K"}


@pytest.mark.parametrize(("args", "flag"), [
    (["--file", "../x.gguf", "--quant", "Q4_K_M"], "--file"),
    (["--file", "x.gguf", "--quant", "Q9_Z"], "--quant"),
    (["--file", "x.gguf", "--quant", "Q4_K_M", "--sha256", "xyz"], "--sha256"),
])
def test_catalog_add_rejects_bad_flags_naming_them(args: list[str], flag: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["catalog", "add", "x", "--repo", "me/x", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_catalog_add_bad_repo_is_one_line(isolated_home: Path) -> None:
    rc, out, err = run("catalog", "add", "x", "--repo", "not a repo", "--file", "x.gguf", "--quant", "Q4_K_M")
    assert rc == 3 and "repo" in err and err.strip().count("\n") == 0


def test_json_errors_are_json() -> None:
    rc, out, err = run("info", "qwen-7b", "--json")
    assert rc == 4
    data = json.loads(out)
    assert data["error"] == "UnknownModelError" and data["exit_code"] == 4 and "qwen2.5-coder-7b-instruct" in data["fix"]


def test_search_rejects_bad_filters() -> None:
    rc, _, err = run("search", "--max-vram", "-3")
    assert rc == 2 and "--max-vram" in err
    rc, _, err = run("search", "--family", "nosuch")
    assert rc == 2 and "qwen2.5-coder" in err


def test_version() -> None:
    rc, out, _ = run("--version")
    assert rc == 0 and "fmgguf" in out
