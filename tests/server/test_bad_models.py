"""A live server asked for every lying GGUF of the corpus (each one really aborts or fails raw
llama.cpp: tests/runtime_fit/test_validation.py) answers 422 naming the field, stays up, and keeps
serving the good model it had loaded right after each one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bad_catalog(tmp: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Path]], dict[str, str]]:
    """(catalog cards, hub repos, model id -> the field its refusal must name) for every kind."""
    from fmgguf.testing.bad_models import BAD_KINDS, build_bad_model

    cards, repos, fields = [], {}, {}
    for kind, spec in BAD_KINDS.items():
        path = build_bad_model(kind, tmp)
        model_id, repo, name = f"bad-{kind.replace('_', '-')}", f"fmgguf-test/bad-{kind}-GGUF", f"bad-{kind}-F16.gguf"
        repos[repo] = {name: path}
        cards.append({"id": model_id, "family": "custom", "display_name": f"lying GGUF: {spec.what}",
                      "variants": {"F16": {"repo": repo, "files": [{"name": name, "size": path.stat().st_size,
                                                                    "sha256": _sha(path)}]}}})
        fields[model_id] = spec.field
    return cards, repos, fields


def test_the_server_refuses_every_lying_file_and_keeps_serving(tmp_path: Path, tiny_entries: Any,
                                                                live_server: Any) -> None:
    from fmgguf.server.app import create_app
    from fmgguf.settings import Settings
    from fmgguf.testing.hub_server import HubServer

    bad_cards, bad_repos, fields = _bad_catalog(tmp_path / "bad")
    cards, repos = [*tiny_entries[0], *bad_cards], {**tiny_entries[1], **bad_repos}
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": cards}, sort_keys=False), encoding="utf-8")
    with HubServer(repos) as hub:
        settings = Settings.load(env={}, home=tmp_path / "home", config_file=tmp_path / "config.yaml",
                                 catalog_file=catalog, hf_endpoint=hub.endpoint, hub_cache=tmp_path / "hub",
                                 shared_cache=Path.home() / ".cache" / "fmgguf", keep_alive=0.0)
        app = create_app(settings)
        state = app.state.fmgguf
        for model_id in ["tiny-qwen", *fields]:  # the downloader checks bytes, not what a GGUF claims
            state.downloader.download_model(model_id, "F16")
        with live_server(app) as live, httpx.Client(base_url=live.url, timeout=120) as client:
            assert client.post("/api/models/select", json={"model_id": "tiny-qwen", "quant": "F16"}).status_code == 200
            for model_id, field in fields.items():
                res = client.post("/api/models/select", json={"model_id": model_id, "quant": "F16"})
                assert res.status_code == 422, (model_id, res.text)
                assert field in res.text, (model_id, res.text)
                good = client.post("/api/models/generate", json={"prompt": "def add(a, b):", "max_tokens": 4,
                                                                   "temperature": 0.0})
                assert good.status_code == 200, (model_id, good.text)
                assert good.json()["completion_tokens"] >= 1
            assert len(fields) >= 10
        state.manager.close()
