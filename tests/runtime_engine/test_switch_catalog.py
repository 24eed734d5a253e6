"""switch_model end to end: a catalog entry, pulled from a loopback hub, loaded by id with the fit plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmgguf.errors import NotDownloadedError, UnknownQuantError


def test_switch_model_by_catalog_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_path: Path) -> None:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime import ModelManager
    from fmgguf.settings import load_settings
    from fmgguf.testing import tiny_card, tiny_repo_files
    from fmgguf.testing.hub_server import HubServer

    card = tiny_card("tiny-switch", arch="llama", quants=("F16",))
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump({"models": [card]}))
    repo = card["variants"]["F16"]["repo"]
    with HubServer({repo: tiny_repo_files("tiny-switch", arch="llama", quants=("F16",))}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        settings = load_settings(catalog_file=catalog_file)
        catalog = Catalog.load(settings)
        downloader = ModelDownloader(settings, catalog=catalog)
        manager = ModelManager(settings, catalog=catalog, downloader=downloader, keep_alive=0)
        with pytest.raises(NotDownloadedError, match="fmgguf pull tiny-switch"):
            manager.switch_model("tiny-switch", quant="F16")
        downloader.download_model("tiny-switch", "F16")
    r = manager.switch_model("tiny-switch", quant="F16", n_ctx=128)
    assert r.success and r.model_id == "tiny-switch" and r.quant == "F16"
    assert r.plan is not None and r.plan.label == "CPU only" and r.n_gpu_layers == 0
    info = manager.current_model()
    assert info.id == "tiny-switch" and info.fim is False  # the tiny card carries no FIM block
    assert manager.generate_text("def f():", max_tokens=3).model_id == "tiny-switch"
    with pytest.raises(UnknownQuantError):
        manager.switch_model("tiny-switch:Q2_K")
    assert manager.current_model().id == "tiny-switch"  # a refused switch leaves the model loaded
    available = {m["id"]: m for m in manager.get_available_models()}
    assert available["tiny-switch"]["downloaded"] == ["F16"]
    manager.close()
    assert manager.current_model() is None
