"""The store commands end to end: pull, ls, verify, du, rm, export/import, import-gguf, catalog lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fmgguf.cli.main import cli
from fmgguf.testing.hub_server import HubServer

from .conftest import REPO, add_model, payload


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_pull_ls_verify_du_rm(hub, files):
    res = run("pull", "blob", "--quant", "Q8_0")
    assert res.exit_code == 0, res.output
    digest = sha(files["blob-Q8_0.gguf"])
    assert f"sha256 {digest} (hub sha256)" in res.output
    rows = json.loads(run("ls", "--json").output)
    assert rows[0]["id"] == "blob" and rows[0]["trust"] == "hub" and rows[0]["bytes"] == 2_000_000
    assert "blob" in run("ls").output
    checks = json.loads(run("verify", "blob", "--json").output)
    assert checks[0]["ok"] and checks[0]["actual"] == digest
    du = json.loads(run("du", "--json").output)
    assert du["total"] == 2_000_000
    assert run("rm", "blob").exit_code == 0
    assert json.loads(run("ls", "--json").output) == []


def test_pull_json_and_id_colon_quant(hub, files):
    res = run("pull", "blob:Q8_0", "--json")
    data = json.loads(res.output)
    assert data[0]["quant"] == "Q8_0" and data[0]["files"][0]["trust"] == "hub"


def test_errors_are_one_line_with_exit_codes(hub, files, tmp_path):
    env = {**os.environ}
    add_model("ghost", {"ghost-Q8_0.gguf": Path("x")})
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "pull", "ghost", "--quant", "Q8_0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7
    assert proc.stderr.strip().splitlines()[-1].startswith("error: file ghost-Q8_0.gguf not found")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fmgguf", "--offline", "pull", "blob", "--quant", "Q8_0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 6 and "offline" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verify_failure_exits_non_zero(hub, files):
    run("pull", "blob", "--quant", "Q8_0")
    rec = json.loads(run("ls", "--json").output)[0]
    blob = Path(rec["files"][0]["blob"])
    data = bytearray(blob.read_bytes())
    data[5] ^= 0xFF
    blob.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["verify"])
    assert res.exit_code != 0 and "BAD blob:Q8_0" in res.output
    assert json.loads(run("ls", "--json").output) == []


def test_tofu_is_shown_by_pull_ls_and_verify(tmp_path, monkeypatch):
    f = payload(tmp_path / "blob-Q8_0.gguf", 100_000)
    with HubServer({REPO: {f.name: f}}, lfs=False) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        add_model("blob", {f.name: f})
        res = CliRunner().invoke(cli, ["pull", "blob", "--quant", "Q8_0"])
        assert res.exit_code == 0 and "trusted on first use" in res.output
        assert "TOFU" in run("ls").output
        assert "trusted on first use" in run("verify", "blob").output


def test_export_import_and_import_gguf_commands(hub, files, tmp_path, monkeypatch):
    run("pull", "blob", "--quant", "Q8_0")
    bundle = tmp_path / "b.tar"
    assert run("export", "blob:Q8_0", "--to", str(bundle)).exit_code == 0
    home = tmp_path / "h2"
    monkeypatch.setenv("FMGGUF_HOME", str(home))
    monkeypatch.setenv("FMGGUF_CONFIG_DIR", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    res = run("--offline", "import", str(bundle), "--json")
    assert json.loads(res.output)[0]["id"] == "blob"
    assert json.loads(run("--offline", "verify", "blob", "--json").output)[0]["ok"]
    g = tmp_path / "mine-Q8_0.gguf"
    g.write_bytes(b"GGUF" + b"\0" * 100)
    res = CliRunner().invoke(cli, ["import-gguf", str(g), "--as", "mine", "--json"])
    # a GGUF magic with nothing behind it is not a model llama.cpp can load: refused, nothing registered
    assert res.exit_code != 0 and type(res.exception).__name__ == "GGUFError"
    assert "mine" not in [r["id"] for r in json.loads(run("ls", "--json").output)]


def test_catalog_lock_records_hub_hashes_without_downloading(hub, files, tmp_path):
    from fmgguf.cli.store_cmds import catalog_lock_cmd

    res = CliRunner().invoke(catalog_lock_cmd, ["blob", "--json"], catch_exceptions=False)
    rows = json.loads(res.output)
    assert rows[0]["sha256"] == sha(files["blob-Q8_0.gguf"]) and rows[0]["status"] == "locked"
    assert hub.gets() == []


def test_catalog_lock_through_the_catalog_group(hub, files):
    res = run("catalog", "lock", "blob", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["sha256"] == sha(files["blob-Q8_0.gguf"])
