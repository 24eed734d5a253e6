"""A model's runner process killed for real in the middle of a streamed /infill: the client gets an
error event naming the crash, the next request starts the runner again, /metrics counts the restart."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory, hub: Any, tiny_entries: Any, live_server: Any) -> Any:
    from fmgguf.server.app import create_app

    from .conftest import GEN_QUANT, make_settings  # noqa: PLC0415

    settings = make_settings(tmp_path_factory.mktemp("crash"), hub.endpoint, tiny_entries[0], isolation="process")
    app = create_app(settings)
    app.state.fmgguf.downloader.download_model("tiny-qwen", GEN_QUANT)
    with live_server(app) as live:
        yield live
    app.state.fmgguf.manager.close()


def test_killed_runner_is_reported_and_restarted(crashy: Any) -> None:
    url = crashy.url
    body = {"input_prefix": "x = [", "input_suffix": "", "temperature": 0}
    assert httpx.post(url + "/infill", json={**body, "n_predict": 2}, timeout=120).status_code == 200
    (resident,) = crashy.state.manager.loaded()
    assert resident.isolation == "process" and resident.pid
    events: list[Any] = []

    def stream() -> None:
        with httpx.stream("POST", url + "/infill", json={**body, "n_predict": 3000, "stream": True}, timeout=120) as r:
            events.append(r.status_code)
            events.extend(json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: "))

    thread = threading.Thread(target=stream)
    thread.start()
    deadline = time.monotonic() + 30
    while len(events) < 3 and time.monotonic() < deadline:  # generating for sure
        time.sleep(0.01)
    os.kill(resident.pid, signal.SIGKILL)
    thread.join(60)
    errors = [e for e in events[1:] if "error" in e]
    assert events[0] == 200 and errors, events[-3:]
    assert "runner" in errors[-1]["error"]["message"].lower()
    again = httpx.post(url + "/infill", json={**body, "n_predict": 2}, timeout=120)
    assert again.status_code == 200, again.text
    (restarted,) = crashy.state.manager.loaded()
    assert restarted.pid != resident.pid
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "fmgguf_runner_restarts_total 1" in metrics
    assert 'fmgguf_generations_total{dialect="llama.cpp",finish="error"} 1' in metrics
