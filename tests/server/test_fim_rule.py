"""The one FIM-capability rule (fmgguf.runtime.prompt.fim_rule): a card decides; an imported file, or a file with
no card, by whether its vocabulary holds a known FIM token set; import-gguf --fim/--no-fim overrides.
The CLI (`fmgguf fim`) and every server dialect agree: an imported FIM-token file fills in the middle
everywhere, an imported file without FIM tokens is refused everywhere for the same stated reason.
Real parts: tiny llama.cpp models (qwen2 with Qwen2.5's FIM tokens, llama without any), the real CLI, a
live server, the real import-gguf."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from fmgguf.cli.main import cli

pytestmark = pytest.mark.slow


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny models copied under names that do not say their quant (the header's general.file_type must)."""
    from fmgguf.testing import build_tiny_model

    where = tmp_path_factory.mktemp("imports")
    out = {}
    for name, arch in (("withfim", "qwen2"), ("nofim", "llama")):
        out[name] = where / f"{name}.gguf"
        shutil.copy(build_tiny_model(arch, "unit", "F16"), out[name])
    return out


def test_the_rule_for_cards_files_and_imports(files: dict[str, Path]) -> None:
    from fmgguf.catalog import Catalog
    from fmgguf.runtime.prompt.fim_rule import fim_verdict

    catalog = Catalog.load(user_path=Path("/nonexistent/catalog.yaml"))
    assert fim_verdict(catalog.get("qwen2.5-coder-0.5b-instruct")).able  # the card says yes
    no = fim_verdict(catalog.get("deepseek-coder-v2-instruct"))  # the card says no, although the tokens exist
    assert not no.able and no.by == "card" and "not trained for fill-in-the-middle" in no.reason
    yes = fim_verdict(None, name="withfim", path=files["withfim"])
    assert yes.able and yes.by == "vocabulary" and yes.tokens == ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    plain = fim_verdict(None, name="nofim", path=files["nofim"])
    assert not plain.able and "no known FIM token set in its vocabulary" in plain.reason


def test_import_gguf_reads_the_quant_from_the_header_and_fim_from_the_vocabulary(files: dict[str, Path]) -> None:
    res = _cli("import-gguf", str(files["withfim"]), "--as", "imp-fim", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["quant"] == "F16" and info["fim"] is True  # no --quant asked although the name says none
    res = _cli("import-gguf", str(files["withfim"]), "--as", "imp-off", "--no-fim", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["fim"] is False
    res = _cli("import-gguf", str(files["nofim"]), "--as", "imp-plain", "--fim")
    assert res.exit_code != 0 and "--fim" in str(res.exception) and "no known fill-in-the-middle token set" in str(res.exception)
    inspect = json.loads(_cli("inspect", str(files["withfim"]), "--json").stdout)
    assert inspect["fim"] is True and "<|fim_prefix|>" in inspect["fim_reason"]


def _dialects(url: str, model: str) -> list[httpx.Response]:
    """One fill-in-the-middle request per dialect, non-streamed."""
    pre, suf = "def add(a, b):\n    return ", "\n"
    return [
        httpx.post(url + "/infill", json={"model": model, "input_prefix": pre, "input_suffix": suf, "n_predict": 4},
                   timeout=120),
        httpx.post(url + "/api/generate", json={"model": model, "prompt": pre, "suffix": suf, "stream": False,
                                                "options": {"num_predict": 4}}, timeout=120),
        httpx.post(url + "/v1/completions", json={"model": model, "prompt": pre, "suffix": suf, "max_tokens": 4},
                   timeout=120),
        httpx.post(url + "/v1/fim/completions", json={"model": model, "prompt": pre, "suffix": suf, "max_tokens": 4},
                   timeout=120),
        httpx.post(url + "/v1/completions", json={"model": model, "language": "python",
                                                  "segments": {"prefix": pre, "suffix": suf}}, timeout=120),
    ]


def test_cli_and_every_dialect_agree_on_imported_files(files: dict[str, Path], tmp_path: Path,
                                                         live_server: Any) -> None:
    from fmgguf.server.app import create_app
    from fmgguf.settings import load_settings

    for name, mid in (("withfim", "imp-yes"), ("nofim", "imp-no")):
        assert _cli("import-gguf", str(files[name]), "--as", mid).exit_code == 0
    ok = _cli("fim", "imp-yes", "--prefix", "def add(a, b):\n    return ", "--suffix", "\n", "--max-tokens", "4")
    assert ok.exit_code == 0, ok.output
    refused = _cli("fim", "imp-no", "--prefix", "x = ", "--suffix", "\n", "--max-tokens", "4")
    assert refused.exit_code != 0
    reason = "imp-no was not trained for fill-in-the-middle"
    assert reason in str(refused.exception)

    app = create_app(load_settings(keep_alive=0.0), max_queue=8)
    with live_server(app) as live:
        for r in _dialects(live.url, "imp-yes"):
            assert r.status_code == 200, (r.request.url, r.text)
        for r in _dialects(live.url, "imp-no"):
            assert r.status_code == 422 and reason in r.text, (r.request.url, r.text)
        show = {m: httpx.post(live.url + "/api/show", json={"model": m}, timeout=30).json()["capabilities"]
                for m in ("imp-yes", "imp-no")}
        assert "insert" in show["imp-yes"] and "insert" not in show["imp-no"]
        models = {m["id"]: m["capabilities"] for m in httpx.get(live.url + "/v1/models", timeout=30).json()["data"]}
        assert "insert" in models["imp-yes"] and "insert" not in models["imp-no"]
    app.state.fmgguf.manager.close()
