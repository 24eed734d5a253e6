"""The server with runner processes, driven over real HTTP: aborting models answer 502 naming the
model and the signal and the server keeps serving; a model crashing three times is broken (503,
shown in the status and on the page); a runner killed while another model streams spoils nothing;
models imported and removed by the CLI appear and go without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


def _env(root: Path) -> dict[str, str]:
    shared = os.environ.get("FMGGUF_CACHE") or str(Path.home() / ".cache" / "fmgguf")
    return {"FMGGUF_HOME": str(root / "home"), "FMGGUF_CONFIG_DIR": str(root / "config"),
            "FMGGUF_CATALOG": str(root / "catalog.yaml"), "HF_HUB_CACHE": str(root / "hub"),
            "HF_ENDPOINT": "http://127.0.0.1:9", "FMGGUF_KEEP_ALIVE": "0", "FMGGUF_CACHE": shared}


def _app(env: dict[str, str], tools: Any, trusting: bool = True) -> Any:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader
    from fmgguf.runtime import ModelManager
    from fmgguf.server.app import create_app
    from fmgguf.settings import Settings

    settings = Settings.load(env=env)
    catalog = Catalog.load(settings)
    downloader = ModelDownloader(settings, catalog=catalog)
    manager = ModelManager(settings, catalog=catalog, downloader=downloader, isolation="process", max_queue=64,
                           validator=tools.trusting_validator if trusting else None)
    return create_app(settings, manager=manager, downloader=downloader, catalog=catalog)


def _complete(client: httpx.Client, model: str, **kw: Any) -> httpx.Response:
    return client.post("/v1/completions", json={"model": model, "prompt": "def f(x):", "max_tokens": 4,
                                                "temperature": 0, **kw})


def test_server_survives_every_aborting_model(tmp_path: Path, good_path: Path, lying_files: dict[str, Path],
                                              runner_tools: Any) -> None:
    from fmgguf.settings import Settings

    env = _env(tmp_path)
    settings = Settings.load(env=env)
    runner_tools.register_unchecked(settings, good_path, "good")
    for name, path in lying_files.items():
        runner_tools.register_unchecked(settings, path, name)
    assert len(lying_files) >= 10
    app = _app(env, runner_tools)
    with runner_tools.LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        for name in lying_files:
            bad = _complete(client, name)
            assert bad.status_code == 502, (name, bad.text)
            err = bad.json()["error"]
            assert err["code"] == "RunnerCrashedError" and name in err["message"] and "SIGABRT" in err["message"]
            assert err["fix"] and "\n" not in err["message"]
            good = _complete(client, "good")
            assert good.status_code == 200, (name, good.text)
            assert good.json()["choices"][0]["text"] is not None and good.json()["model"].startswith("good")
        # two more crashes of the same file make three in a row: broken, refused with 503 from then on
        for _ in range(2):
            assert _complete(client, "nan-rms-eps").status_code == 502
        refused = _complete(client, "nan-rms-eps")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "ModelBrokenError"
        status = client.get("/api/models/status").json()
        assert [b["key"] for b in status["broken"]] == ["nan-rms-eps:F16"]
        assert status["broken"][0]["signal"] == "SIGABRT"
        page = {m["id"]: m for m in client.get("/api/models/available", params={"fit": "false"}).json()["models"]}
        assert page["nan-rms-eps"]["status"] == "broken" and "GGML_ASSERT" in page["nan-rms-eps"]["broken"]["reason"]
        assert page["good"]["status"] != "broken"
        assert _complete(client, "good").status_code == 200
    # `fmgguf ls` in another process says so too
    ls = subprocess.run([sys.executable, "-m", "fmgguf", "ls", "--json"], env={**os.environ, **env},
                        capture_output=True, text=True, timeout=120)
    rows = {f"{r['id']}:{r['quant']}": r for r in json.loads(ls.stdout)}
    assert "GGML_ASSERT" in rows["nan-rms-eps:F16"]["broken"] and rows["good:F16"]["broken"] is None
    app.state.fmgguf.manager.close()


def test_one_runner_killed_while_another_model_streams(tmp_path: Path, good_path: Path, other_path: Path,
                                                       runner_tools: Any) -> None:
    from fmgguf.settings import Settings

    env = _env(tmp_path)
    settings = Settings.load(env=env)
    runner_tools.register_unchecked(settings, good_path, "good")
    runner_tools.register_unchecked(settings, other_path, "other")
    app = _app(env, runner_tools, trusting=False)
    manager = app.state.fmgguf.manager
    with runner_tools.LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        assert client.post("/api/models/select", json={"model_id": "good", "quant": "F16"}).status_code == 200
        other = manager.ensure_loaded("other:F16", pinned=True)
        status = client.get("/api/models/status").json()
        assert sorted(m["key"] for m in status["loaded"]) == ["good:F16", "other:F16"]
        events = []
        with client.stream("POST", "/api/models/generate",
                           json={"prompt": "def f(x):", "max_tokens": 60, "temperature": 0.7, "seed": 3,
                                 "stream": True}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data:") and not events:
                    os.kill(other.pid, signal.SIGKILL)  # the other model dies while this one streams
                if line.startswith("event:") or line.startswith("data:"):
                    events.append(line)
        assert "event: done" in events and not any(e == "event: error" for e in events)
        done = json.loads(events[events.index("event: done") + 1][5:])
        assert done["finish_reason"] in ("length", "stop") and done["model_id"] == "good"
        # the dead one starts again at its next request; the good one kept its runner
        good_pid = manager.current_model().pid
        again = _complete(client, "other")
        assert again.status_code == 200, again.text
        assert good_pid is not None and other.pid not in [m.pid for m in manager.loaded()]
    manager.close()


def test_models_imported_and_removed_by_the_cli_without_a_restart(tmp_path: Path, good_path: Path,
                                                                 other_path: Path, runner_tools: Any) -> None:
    from fmgguf.settings import Settings

    env = _env(tmp_path)
    runner_tools.register_unchecked(Settings.load(env=env), good_path, "good")
    app = _app(env, runner_tools, trusting=False)
    cli_env = {**os.environ, **env}

    def cli(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "fmgguf", *args], env=cli_env, capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr

    with runner_tools.LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        assert _complete(client, "good").status_code == 200
        assert _complete(client, "newcomer").status_code == 404
        cli("import-gguf", str(other_path), "--as", "newcomer", "--quant", "F16")
        ids = {m["id"] for m in client.get("/api/models/available", params={"fit": "false"}).json()["models"]}
        assert "newcomer" in ids
        assert _complete(client, "newcomer").status_code == 200
        assert client.get("/api/models/current").json()["model"]["id"] == "newcomer"
        cli("rm", "newcomer")
        deadline = time.monotonic() + 20
        while client.get("/api/models/current").json()["loaded"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/models/current").json()["loaded"] is False  # unloaded cleanly
        assert [m.key for m in app.state.fmgguf.manager.loaded()] == ["good:F16"]  # still resident
        assert _complete(client, "good").status_code == 200
    app.state.fmgguf.manager.close()
