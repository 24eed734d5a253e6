"""A tiny model split over two real loopback workers: same greedy tokens as local; the fit plan shows both."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import child_env, closed_port, fmgguf_cmd

# Run as a program of its own, as a user would (the model itself then runs in its runner process).
_GENERATE = r"""
import json, sys
from fmgguf.runtime import ModelManager
from fmgguf.settings import load_settings
path, rpc = sys.argv[1], sys.argv[2]
m = ModelManager(load_settings(), keep_alive=0)
opts = {"n_ctx": 256}
if rpc:
    opts.update(rpc=rpc, n_gpu_layers=3, tensor_split=[1, 2])  # block 0 on the first, block 1 + output on the second
m.load_file(path, **opts)
res = m.generate_text("def fibonacci(n):", max_tokens=24, temperature=0, seed=0)
by_device = m.current_model().buffers["by_device"]
print(json.dumps({"text": res.text, "tokens": res.completion_tokens,
                  "buffers": [name for name, b in by_device.items() if b.get("model")]}))
m.close()
"""


def _generate(path, rpc: str) -> dict:  # noqa: ANN001
    out = subprocess.run([sys.executable, "-c", _GENERATE, str(path), rpc], capture_output=True, text=True,
                         timeout=300, env=child_env())
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_workers_split_gives_the_local_greedy_tokens(workers, tiny_path) -> None:  # noqa: ANN001
    local = _generate(tiny_path, "")
    split = _generate(tiny_path, ",".join(w.endpoint for w in workers))
    assert split["tokens"] == local["tokens"] == 24
    assert split["text"] == local["text"]
    on = {w.endpoint: [b for b in split["buffers"] if w.endpoint in b] for w in workers}
    assert all(on.values()), split["buffers"]  # weights really went to both workers


@pytest.mark.slow
def test_cli_run_over_workers_matches_local(workers, tiny_path) -> None:  # noqa: ANN001
    def run(*extra: str) -> tuple[dict, str]:
        out = subprocess.run(fmgguf_cmd("-vv", "run", str(tiny_path), "def f(x):", "-t", "0", "-n", "12", "--ctx", "256",
                                        "--json", *extra), capture_output=True, text=True, timeout=300, env=child_env())
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout), out.stderr

    local, _ = run()
    remote, log = run("--rpc", ",".join(w.endpoint for w in workers))
    assert remote["text"] == local["text"]
    plan = remote["load"]["plan"]
    assert [d["kind"] for d in plan["devices"]] == ["RPC", "RPC", "CPU"]
    assert plan["n_gpu_layers"] == plan["n_layers"]  # the plan put every layer on a worker
    on = [d["name"] for d in plan["devices"] if d["layers"]]
    assert all(any(f"[{name}] KV buffer size" in ln for ln in log.splitlines()) for name in on), log[-3000:]


def test_fit_shows_both_workers_and_places_every_layer(workers, tiny_path) -> None:  # noqa: ANN001
    a, b = workers
    out = subprocess.run(fmgguf_cmd("fit", str(tiny_path), "--no-measure", "--rpc", f"{a.endpoint}@700MiB,{b.endpoint}",
                                    "--json"), capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 0, out.stderr
    plan = next(iter(json.loads(out.stdout)["plans"].values()))
    devs = plan["devices"]
    assert [d["name"] for d in devs[:2]] == [a.endpoint, b.endpoint]
    assert devs[0]["memory_source"] == "budget" and devs[0]["free"] == 700 * 1024**2
    assert devs[1]["memory_source"] == "rpc" and devs[1]["free"] > 0
    assert sum(d["layers"] for d in devs) == plan["n_layers"]
    assert plan["tensor_split"] is not None and len(plan["tensor_split"]) == 2
    text = subprocess.run(fmgguf_cmd("fit", str(tiny_path), "--no-measure", "--rpc", f"{a.endpoint},{b.endpoint}"),
                          capture_output=True, text=True, timeout=120, env=child_env()).stdout
    assert a.endpoint in text and b.endpoint in text and "layers per device" in text


def test_a_budget_above_the_workers_free_memory_is_planned_with_what_it_reports(tiny_path) -> None:  # noqa: ANN001
    """`--rpc HOST@1000TB` on a worker with far less: the plan uses the memory the worker reports, and
    its notes say so (a budget is the most the plan may use there, not memory the worker has)."""
    from .conftest import start_worker  # noqa: PLC0415

    w = start_worker()
    try:
        budget = 1000 * 1000**4
        out = subprocess.run(fmgguf_cmd("fit", str(tiny_path), "--no-measure", "--rpc", f"{w.endpoint}@1000TB",
                                        "--json"), capture_output=True, text=True, timeout=120, env=child_env())
    finally:
        w.kill()
    assert out.returncode == 0, out.stderr
    plan = next(iter(json.loads(out.stdout)["plans"].values()))
    dev = next(d for d in plan["devices"] if d["kind"] == "RPC")
    assert dev["name"] == w.endpoint
    assert dev["memory_source"] == "rpc" and 0 < dev["free"] < budget, dev
    assert any(w.endpoint in n and "less than its budget" in n and "planned with what it reports" in n
               for n in plan["notes"]), plan["notes"]


def test_fit_from_the_catalog_with_budgets_alone_places_every_layer() -> None:
    """No worker reachable (nothing listens): with budgets the plan is made from them, and says so."""
    ports = [closed_port() for _ in range(3)]
    rpc = ",".join(f"127.0.0.1:{p}@48GB" for p in ports)
    out = subprocess.run(fmgguf_cmd("--offline", "fit", "deepseek-coder-v2-instruct", "-q", "Q4_K_M", "--rpc", rpc,
                                    "--json"), capture_output=True, text=True, timeout=120, env=child_env())
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plans"]["Q4_K_M"]
    assert plan["source"] == "catalog"
    devs = plan["devices"]
    assert [d["kind"] for d in devs] == ["RPC", "RPC", "RPC", "CPU"]
    assert sum(d["layers"] for d in devs) == plan["n_layers"] == 61
    assert all(d["layers"] > 10 for d in devs[:3])
    covered = sorted(i for d in devs if d["first_layer"] is not None for i in range(d["first_layer"], d["last_layer"] + 1))
    assert covered == list(range(60))  # every block exactly once
    assert sum("planned from its budget alone" in n for n in plan["notes"]) == 3


def test_fmgguf_rpc_setting_and_empty_rpc_option(tiny_path) -> None:  # noqa: ANN001
    port = closed_port()
    env = {**child_env(), "FMGGUF_RPC": f"127.0.0.1:{port}@1GB"}

    def fit(*extra: str) -> dict:
        out = subprocess.run(fmgguf_cmd("fit", str(tiny_path), "--no-measure", "--json", *extra), capture_output=True,
                             text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return next(iter(json.loads(out.stdout)["plans"].values()))

    assert [d["name"] for d in fit()["devices"] if d["kind"] == "RPC"] == [f"127.0.0.1:{port}"]
    assert [d for d in fit("--rpc", "")["devices"] if d["kind"] == "RPC"] == []


def test_fit_from_a_remote_header_across_workers(workers, tmp_path) -> None:  # noqa: ANN001
    """`fit ID --rpc` before any download: the GGUF header over HTTP Range, the workers probed."""
    import yaml
    from click.testing import CliRunner

    from fmgguf.cli.main import cli
    from fmgguf.testing import HubServer, tiny_card, tiny_repo_files

    card = tiny_card("tiny-rpc", arch="llama", quants=("Q4_K_M",))
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"models": [card]}))
    repo = next(iter(card["variants"].values()))["repo"]
    rpc = f"{workers[0].endpoint}@200MiB,{workers[1].endpoint}@2GB"
    with HubServer({repo: tiny_repo_files("tiny-rpc", arch="llama", quants=("Q4_K_M",))}) as hub:
        result = CliRunner().invoke(cli, ["fit", "tiny-rpc", "--vram", "0", "--rpc", rpc, "--json"],
                                    env={"FMGGUF_CATALOG": str(cat), "HF_ENDPOINT": hub.endpoint},
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)["plans"]["Q4_K_M"]
    assert plan["source"] == "header" and not plan["notes"]  # both workers answered
    assert [(d["name"], d["free"]) for d in plan["devices"][:2]] == [
        (workers[0].endpoint, 200 * 1024**2), (workers[1].endpoint, 2 * 1000**3)]
    assert plan["label"] == "Split: 1 worker" and plan["tensor_split"][-1] == plan["n_layers"]
