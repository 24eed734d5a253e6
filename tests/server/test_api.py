"""The model-management API in-process (FastAPI's TestClient): catalog, downloads, verify, delete,
select, generate (plain, streamed, FIM), compare, fit, errors and auth."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

GEN_QUANT = "F16"


@pytest.fixture
def client(settings: Any) -> Any:
    from fmgguf.server.app import create_app

    app = create_app(settings)
    with TestClient(app) as c:
        yield c
    manager = app.state.fmgguf.manager_if_built
    if manager is not None:
        manager.close()


def _wait_job(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/models/downloads/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"download job {job_id} did not finish")


def _sse_events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        event, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((event, json.loads("\n".join(data))))
    return out


def test_page_and_assets_are_served_offline(client: TestClient) -> None:
    page = client.get("/models")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text and "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "https://" not in r.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/models"


def test_available_lists_catalog_local_state_and_fit(client: TestClient) -> None:
    data = client.get("/api/models/available").json()
    ids = [m["id"] for m in data["models"]]
    assert "tiny-qwen" in ids and "tiny-llama" in ids
    assert len(ids) >= 20, "the built-in catalog should be listed too"
    tiny = next(m for m in data["models"] if m["id"] == "tiny-qwen")
    assert tiny["status"] == "not_downloaded" and tiny["fim"] is True and tiny["family"] == "tiny"
    assert {q["quant"] for q in tiny["quants"]} == {"Q4_K_M", GEN_QUANT}
    for q in tiny["quants"]:
        assert q["size"] > 0 and q["downloaded"] is False
        fit = q["fit"]
        assert fit["fits"] is True, fit  # a few MB fit on every machine
        # the label says where the layers went: all on a GPU, or none (no GPU with room)
        assert fit["label"] == ("Full GPU" if fit["n_gpu_layers"] == fit["n_layers"] > 0 else "CPU only"), fit
        if fit["vram_free"] == 0:
            assert fit["label"] == "CPU only", fit
    assert tiny["fit_label"] in {q["fit"]["label"] for q in tiny["quants"]}
    # the largest planned built-in model fits no test machine: its label says so, with the numbers behind it
    planned = [(q["size"] or 0, m["id"], q["fit"]) for m in data["models"] for q in m["quants"]
               if q["fit"].get("fits") is not None]
    size, model_id, fit = max(planned, key=lambda t: t[0])
    assert size > 100 * 1024**3, (model_id, size)
    assert fit["label"] == "Won't fit" and fit["fits"] is False, (model_id, fit)
    assert "tiny" in data["families"]


def test_download_job_poll_sse_verify_fit_delete(client: TestClient, hub: Any) -> None:
    r = client.post("/api/models/download/tiny-llama", json={"quant": "q4_k_m"})
    assert r.status_code == 202
    job = r.json()
    assert job["quant"] == "Q4_K_M" and job["job_id"]
    again = client.post("/api/models/download/tiny-llama", json={"quant": "Q4_K_M"}).json()
    if again["state"] in ("queued", "running"):
        assert again["job_id"] == job["job_id"] and again["created"] is False
    done = _wait_job(client, job["job_id"])
    assert done["state"] == "done", done
    assert done["percent"] == 100.0 and done["downloaded"] == done["total"] > 0
    # the SSE stream of a finished job says so at once
    events = _sse_events(client.get(f"/api/models/downloads/{job['job_id']}/events").text)
    assert events[-1][0] == "done" and events[-1][1]["percent"] == 100.0

    tiny = next(m for m in client.get("/api/models/available").json()["models"] if m["id"] == "tiny-llama")
    assert tiny["status"] == "ready"
    assert next(q for q in tiny["quants"] if q["quant"] == "Q4_K_M")["downloaded"] is True

    verify = client.post("/api/models/verify/tiny-llama?quant=Q4_K_M").json()
    assert verify["ok"] is True and verify["report"]["files"][0]["ok"] is True

    fit = client.get("/api/models/fit/tiny-llama?quant=Q4_K_M&n_ctx=2048").json()
    assert fit["source"] == "file" and fit["plan"]["n_ctx"] == 2048 and fit["plan"]["fits"] is True

    assert client.delete("/api/models/delete/tiny-llama?quant=Q4_K_M").status_code == 200
    tiny = next(m for m in client.get("/api/models/available").json()["models"] if m["id"] == "tiny-llama")
    assert tiny["status"] == "not_downloaded"
    assert client.post("/api/models/verify/tiny-llama?quant=Q4_K_M").status_code == 409


def test_failed_download_is_reported_on_the_job(client: TestClient, hub: Any) -> None:
    from fmgguf.testing.hub_server import Fault

    hub.add_fault(Fault(file="tiny-qwen-Q4_K_M.gguf", method="*", status=404, times=None))
    try:
        job = client.post("/api/models/download/tiny-qwen", json={"quant": "Q4_K_M"}).json()
        done = _wait_job(client, job["job_id"])
    finally:
        hub.clear()
    assert done["state"] == "failed"
    assert done["error"]["message"] and done["error"]["error"].endswith("Error")
    assert client.get("/healthz").json()["ok"] is True


def test_select_generate_stream_fim_and_compare(client: TestClient) -> None:
    for model_id in ("tiny-qwen", "tiny-llama"):
        job = client.post(f"/api/models/download/{model_id}", json={"quant": GEN_QUANT}).json()
        assert _wait_job(client, job["job_id"])["state"] == "done"
    assert client.get("/api/models/current").json() == {"loaded": False, "model": None}
    assert client.post("/api/models/generate", json={"prompt": "x", "max_tokens": 2}).status_code == 409

    sel = client.post("/api/models/select", json={"model_id": "tiny-qwen", "quant": GEN_QUANT, "n_ctx": 1024})
    assert sel.status_code == 200, sel.text
    assert sel.json()["success"] is True and sel.json()["n_ctx"] == 1024
    cur = client.get("/api/models/current").json()
    assert cur["loaded"] and cur["model"]["id"] == "tiny-qwen" and cur["model"]["memory"] > 0
    status = client.get("/api/models/status").json()
    assert status["status"] == "loaded" and status["queue"]["queue_depth"] == 0

    out = client.post("/api/models/generate", json={"prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0})
    res = out.json()
    assert out.status_code == 200 and 1 <= res["completion_tokens"] <= 6 and res["model_id"] == "tiny-qwen"
    assert res["prompt_tokens"] >= 3 and res["finish_reason"] in ("stop", "length")

    streamed = client.post("/api/models/generate", json={"prompt": "def add(a, b):", "max_tokens": 6,
                                                         "temperature": 0, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(streamed.text)
    assert events[-1][0] == "done"
    text = "".join(d["text"] for e, d in events if e == "message")
    assert text == events[-1][1]["text"] == res["text"], "greedy streamed and plain output should agree"

    fim = client.post("/api/models/generate", json={"prompt": "def f(x):\n    ", "suffix": "\n    return y\n",
                                                    "max_tokens": 5})
    assert fim.status_code == 200 and fim.json()["completion_tokens"] >= 1

    cmp = client.post("/api/models/compare", json={"model_ids": ["tiny-qwen", "tiny-llama"]}).json()
    assert [m["id"] for m in cmp["models"]] == ["tiny-qwen", "tiny-llama"]
    assert cmp["models"][0]["status"] == "loaded" and cmp["models"][1]["status"] == "ready"
    assert cmp["models"][0]["parameters"] != cmp["models"][1]["parameters"]
    assert all(q["fit"] for m in cmp["models"] for q in m["quants"])

    # after an idle unload (keep-alive) the selected model comes back on the next request
    manager = client.app.state.fmgguf.manager
    manager.ensure_loaded(f"tiny-qwen:{GEN_QUANT}", keep_alive=0.05)  # idle for 50 ms from now: unloaded
    deadline = time.monotonic() + 10
    while manager.current_model() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/api/models/current").json()["loaded"] is False
    again = client.post("/api/models/generate", json={"prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0})
    assert again.status_code == 200 and again.json()["text"] == res["text"]
    assert client.get("/api/models/current").json()["model"]["id"] == "tiny-qwen"

    # deleting the loaded model unloads it first
    assert client.delete(f"/api/models/delete/tiny-qwen?quant={GEN_QUANT}").status_code == 200
    assert client.get("/api/models/current").json()["loaded"] is False


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), [
    ("get", "/api/models/fit/no-such-model", None, 404, "unknown model id"),
    ("post", "/api/models/download/tiny-qwen", {"quant": "Q2_K"}, 404, "has no Q2_K variant"),
    ("post", "/api/models/download/tiny-qwen", {"quant": "Q4_K_M", "colour": "red"}, 422, "colour"),
    ("post", "/api/models/select", {"model_id": "tiny-qwen"}, 409, "is not downloaded"),
    ("post", "/api/models/select", {"quant": "Q4_K_M"}, 422, "model_id: Field required"),
    ("post", "/api/models/select", {"model_id": "tiny-qwen", "n_ctx": 3}, 422, "n_ctx"),
    ("post", "/api/models/generate", {"prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ("post", "/api/models/generate", {"prompt": "x", "temperature": 9}, 422, "temperature"),
    ("post", "/api/models/generate", {"prompt": "x"}, 409, "no model is loaded"),
    ("post", "/api/models/compare", {"model_ids": []}, 422, "model_ids"),
    ("get", "/api/models/downloads/nope", None, 404, "no download job"),
    ("delete", "/api/models/delete/no-such-model", None, 404, "unknown model id"),
    ("post", "/v1/completions", {"prompt": "x", "n": 3}, 422, "n"),
    ("post", "/v1/completions", {"prompt": "x"}, 409, "no model is loaded"),
])
def test_errors_are_clear_4xx(client: TestClient, method: str, path: str, body: Any, status: int, needle: str) -> None:
    r = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    data = r.json()
    err = data["error"] if isinstance(data.get("error"), dict) else data
    assert needle in err["message"], err
    if status != 404 or "unknown" in needle:
        assert err.get("fix"), "every error names the fix"


def test_malformed_json_is_400_in_both_shapes(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    r = client.post("/api/models/select", content=b"{not json", headers=headers)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["message"].startswith("request body is not valid JSON (") and "char 1" in body["message"]
    assert body["error"] == "InvalidRequestError" and body["fix"] and body.get("param") is None
    r = client.post("/v1/chat/completions", content=b'{"messages": [', headers=headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] is None
    assert err["message"].startswith("request body is not valid JSON") and err["fix"]
    # a well-formed body that breaks the schema is still a 422 naming the field
    r = client.post("/v1/chat/completions", json={"messages": "hi"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages"


def test_head_serves_the_page_and_root(client: TestClient) -> None:
    page = client.head("/models")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert int(page.headers["content-length"]) > 0 and page.content == b""
    root = client.head("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "/models"


def test_v1_models_lists_each_usable_model_once(client: TestClient) -> None:
    downloader = client.app.state.fmgguf.downloader
    downloader.download_model("tiny-qwen", GEN_QUANT)
    for quant in (GEN_QUANT, "Q4_K_M"):
        downloader.download_model("tiny-llama", quant)
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    # one quant on disk: the bare id is the one choice; two quants: two distinct choices
    assert ids == ["tiny-llama:F16", "tiny-llama:Q4_K_M", "tiny-qwen"]
    # the bare id of a model whose only local quant is not the catalog default (Q4_K_M) still works
    r = client.post("/v1/completions", json={"model": "tiny-qwen", "prompt": "def", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-qwen"
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["tiny-qwen", "tiny-llama:F16", "tiny-llama:Q4_K_M"]  # the loaded model first


def test_api_key_guards_api_but_not_the_page(settings: Any) -> None:
    from fmgguf.server.app import create_app

    key = "s3cret-key-123"
    with TestClient(create_app(settings, api_key=key)) as c:
        assert c.get("/models").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        for path in ("/api/models/status", "/v1/models"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in c.get("/api/models/status").json()["fix"]
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong-key-000"}).status_code == 401
        assert c.get("/api/models/status", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["object"] == "list"


def test_unreachable_hub_fails_the_job_with_the_downloaders_one_line_error(settings: Any) -> None:
    import socket

    from fmgguf.errors import FmggufError
    from fmgguf.server.app import create_app

    with socket.socket() as s:  # a loopback port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    app = create_app(settings.replace(hf_endpoint=dead, download_retries=0))
    with TestClient(app) as c:
        with pytest.raises(FmggufError) as direct:
            app.state.fmgguf.downloader.download_model("tiny-qwen", "Q4_K_M")
        job = c.post("/api/models/download/tiny-qwen", json={"quant": "Q4_K_M"}).json()
        done = _wait_job(c, job["job_id"], timeout=30)
    assert done["state"] == "failed"
    err = done["error"]
    assert err["error"] == type(direct.value).__name__
    assert err["message"] == direct.value.message and err["fix"] == direct.value.fix
    assert err["one_line"] == direct.value.one_line() and "\n" not in err["one_line"]
