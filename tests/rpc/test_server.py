"""`fmgguf serve --rpc`: a worker SIGKILLed mid-stream ends that stream with an error event; the server
stays up, says which worker is gone, and serves again as soon as a worker is back on that address."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import pytest

from .conftest import child_env, fmgguf_cmd, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture()
def server(workers, tiny_path):  # noqa: ANN001, ANN201
    rpc = ",".join(w.endpoint for w in workers)
    proc = subprocess.Popen(fmgguf_cmd("serve", "--port", "0", "--model", str(tiny_path), "--rpc", rpc),
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=child_env())
    base = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if "http://127.0.0.1:" in line:
            base = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split("/")[0].split()[0]
            break
    if base is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the server did not start (exit {proc.wait()})", pytrace=False)
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_lost_worker_fails_the_stream_not_the_server(server: str, workers) -> None:  # noqa: ANN001
    lost = workers[1]
    events: list[tuple[str, dict]] = []
    with httpx.Client(base_url=server, timeout=120) as client:
        with client.stream("POST", "/api/models/generate",
                           json={"prompt": "def fibonacci(n):", "max_tokens": 480, "temperature": 0,
                                 "stream": True}) as resp:
            assert resp.status_code == 200
            event = "message"
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((event, json.loads(line[5:])))
                    event = "message"
                    if len(events) == 3:
                        lost.kill()
        assert len(events) > 3 and events[-1][0] == "error", events[-3:]
        assert lost.endpoint in events[-1][1]["message"]
        assert client.get("/api/models/status").status_code == 200  # the server is up
        again = client.post("/api/models/generate", json={"prompt": "x", "max_tokens": 2})
        assert again.status_code == 502 and lost.endpoint in again.json()["message"]
        back = start_worker("--port", str(lost.port))  # the worker is back on the same address
        try:
            ok = client.post("/api/models/generate", json={"prompt": "def f(x):", "max_tokens": 4, "temperature": 0})
            assert ok.status_code == 200 and ok.json()["completion_tokens"] == 4
        finally:
            back.kill()
