"""`fmgguf serve` as a real process on a free port: a download job outlives its client, the API key
guards a non-loopback bind, --model preloads, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow
GEN_QUANT = "F16"


@pytest.fixture(scope="module")
def slow_hub(tiny_entries: Any) -> Iterator[Any]:
    """The tiny repos served at ~12 MB/s, so a download lasts long enough to walk away from."""
    from fmgguf.testing.hub_server import HubServer

    with HubServer(tiny_entries[1], throttle=12_000_000) as server:
        yield server


class ServeProcess:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fmgguf", "serve", "--port", "0", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(90) or self.url is None:
            self.stop()
            raise AssertionError("fmgguf serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"fmgguf serving on (http://\S+?) ", line)
            if m:
                host_port = m.group(1).replace("0.0.0.0", "127.0.0.1")
                self.url = host_port
                self._ready.set()
        self._ready.set()

    def stop(self) -> bool:
        """SIGTERM; True when it shut down gracefully (uvicorn re-raises the signal after shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return False
        return self.proc.returncode in (0, -signal.SIGTERM) and not any("Traceback" in x for x in self.lines)


@pytest.fixture(scope="module")
def serve_env(tmp_path_factory: pytest.TempPathFactory, slow_hub: Any, tiny_entries: Any) -> dict[str, str]:
    import yaml

    root = tmp_path_factory.mktemp("serve-proc")
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"models": tiny_entries[0]}), encoding="utf-8")
    env = dict(os.environ)
    env.update({"FMGGUF_HOME": str(root / "home"), "FMGGUF_CONFIG_DIR": str(root / "config"),
                "FMGGUF_CATALOG": str(catalog), "HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(root / "hf" / "hub"),
                "HF_ENDPOINT": slow_hub.endpoint, "FMGGUF_KEEP_ALIVE": "0"})
    return env


def test_download_job_survives_its_client(serve_env: dict[str, str]) -> None:
    server = ServeProcess([], serve_env)
    try:
        assert any("this machine only; no API key" in line for line in server.lines)
        assert httpx.get(server.url + "/healthz").json()["ok"] is True
        assert httpx.get(server.url + "/models").status_code == 200

        client = httpx.Client(base_url=server.url, timeout=30)
        job = client.post("/api/models/download/tiny-llama", json={"quant": GEN_QUANT}).json()
        seen = None
        with client.stream("GET", f"/api/models/downloads/{job['job_id']}/events") as events:
            for line in events.iter_lines():
                if line.startswith("data:") and '"downloaded": 0,' not in line:
                    seen = line
                    break
        client.close()  # the client walks away mid-download
        assert seen is not None and '"state": "running"' in seen

        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.url, timeout=30) as other:
            while time.monotonic() < deadline:
                state = other.get(f"/api/models/downloads/{job['job_id']}").json()
                if state["state"] != "running":
                    break
                time.sleep(0.2)
            assert state["state"] == "done", state
            assert state["percent"] == 100.0
            tiny = next(m for m in other.get("/api/models/available?fit=false").json()["models"] if m["id"] == "tiny-llama")
            assert tiny["status"] == "ready"
    finally:
        assert server.stop(), "".join(server.lines)


def test_non_loopback_with_key_preloads_and_guards(serve_env: dict[str, str]) -> None:
    key = "process-test-key-42"
    from fmgguf.download import ModelDownloader
    from fmgguf.settings import Settings

    # usually already there from the test above (same home); fetched here when run alone
    ModelDownloader(Settings.load(env=serve_env)).download_model("tiny-llama", GEN_QUANT)
    server = ServeProcess(["--host", "0.0.0.0", "--api-key", key, "--model", f"tiny-llama:{GEN_QUANT}"], serve_env)
    try:
        assert any("API key required" in line for line in server.lines), server.lines
        assert any(line.startswith("loaded tiny-llama") for line in server.lines), server.lines
        assert httpx.get(server.url + "/api/models/current").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        cur = httpx.get(server.url + "/api/models/current", headers=auth).json()
        assert cur["loaded"] and cur["model"]["id"] == "tiny-llama"
        out = httpx.post(server.url + "/v1/completions", headers=auth, timeout=60,
                         json={"prompt": "int main() {", "max_tokens": 3}).json()
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        assert server.stop(), "".join(server.lines)


def test_download_can_be_cancelled(serve_env: dict[str, str]) -> None:
    server = ServeProcess([], serve_env)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            job = client.post("/api/models/download/tiny-qwen", json={"quant": GEN_QUANT}).json()
            deadline = time.monotonic() + 30
            while client.get(f"/api/models/downloads/{job['job_id']}").json()["downloaded"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert client.delete(f"/api/models/downloads/{job['job_id']}").status_code == 200
            while (state := client.get(f"/api/models/downloads/{job['job_id']}").json())["state"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert state["state"] == "cancelled" and "cancelled" in state["error"]["message"]
            assert 0 < state["downloaded"] < state["total"]
            tiny = next(m for m in client.get("/api/models/available?fit=false").json()["models"] if m["id"] == "tiny-qwen")
            assert tiny["status"] == "not_downloaded"
    finally:
        assert server.stop(), "".join(server.lines)
