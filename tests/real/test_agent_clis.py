"""Claude Code and Codex CLI, pinned npm installs, each given a one-file edit task against a real
`fmgguf serve` process with Qwen2.5-Coder-0.5B-Instruct (context 32k). What is judged is the protocol, not
the 0.5B model's skill: each CLI must finish without an API or protocol error, and every request it made
to /v1/messages or /v1/responses must have been answered 200 (the server's own /metrics say so).

Skipped, with the reason, only when npm cannot fetch the CLIs. Their telemetry and update checks are
switched off (fmgguf.testing.agent_clis.quiet_env), so nothing but our loopback server is contacted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]
TASK = "In hello.py the greeting is misspelled: change the string 'helo' to 'hello'. Edit the file, nothing else."
HELLO = 'def greet():\n    return "helo"\n'
SYSTEM = "You are a coding agent. Change files with the Edit tool."


def _cache() -> Path:
    return Path(os.environ.get("FMGGUF_CACHE") or Path.home() / ".cache" / "fmgguf")


@pytest.fixture(scope="module")
def clis() -> object:
    from fmgguf.testing.agent_clis import install

    got = install(_cache())
    if isinstance(got, str):
        pytest.skip(f"the agent CLIs can't be had: {got}")
    return got


def _statuses(server: Any, route: str) -> dict[str, int]:
    """The HTTP statuses the server answered on ``route``, with their counts (its own /metrics)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    out: dict[str, int] = {}
    for m in re.finditer(r'fmgguf_requests_total\{method="POST",route="([^"]+)",status="(\d+)"\} (\d+)', text):
        if m.group(1) == route:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(3))
    return out


@pytest.fixture(scope="module")
def server(qwen_path: Path, serve_process: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`fmgguf serve --model FILE` as a real process on a free loopback port, context 32k."""
    home = tmp_path_factory.mktemp("agents-serve")
    env = {**os.environ, "FMGGUF_HOME": str(home), "FMGGUF_CONFIG_DIR": str(home), "FMGGUF_CTX": "32768",
           "FMGGUF_CACHE": str(_cache())}
    s = serve_process(qwen_path, env, wait_s=180)
    yield s
    s.stop()


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.py").write_text(HELLO, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


def test_claude_code_finishes_an_edit_without_api_errors(clis: object, server: Any, qwen_path: Path,
                                                         tmp_path: Path) -> None:
    from fmgguf.testing.agent_clis import quiet_env

    work = _workdir(tmp_path)
    env = quiet_env(tmp_path / "home")
    model = qwen_path.name
    env.update({"ANTHROPIC_BASE_URL": str(server.url), "ANTHROPIC_AUTH_TOKEN": "fmgguf", "ANTHROPIC_MODEL": model,
                "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
                "ANTHROPIC_DEFAULT_OPUS_MODEL": model, "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "400",
                "API_TIMEOUT_MS": "900000", "IS_SANDBOX": "1"})
    t0 = time.monotonic()
    # --bare, a one-line system prompt and two tools keep the prompt near 1k tokens (the full Claude Code prompt
    # is ~12k: minutes of prefill per run on two cores); two turns: a tool_use, then its tool_result sent back
    r = subprocess.run([str(clis.claude), "-p", TASK, "--output-format", "json", "--max-turns", "2",  # type: ignore[attr-defined]
                        "--bare", "--system-prompt", SYSTEM, "--tools", "Read,Edit",
                        "--permission-mode", "acceptEdits", "--model", model],
                       cwd=work, env=env, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    took = time.monotonic() - t0
    assert result.get("type") == "result", r.stdout[-2000:]
    # the turn ended on the model's side (answer, or the turn limit), never on an API or protocol error
    assert result.get("subtype") in ("success", "error_max_turns"), (result, r.stderr[-2000:])
    assert "api_error" not in json.dumps(result) and result.get("num_turns", 0) >= 1, result
    statuses = _statuses(server, "/v1/messages")
    assert statuses.get("200", 0) >= 1 and set(statuses) == {"200"}, statuses
    print(f"claude code: {result.get('subtype')} in {took:.0f} s, {result.get('num_turns')} turns, "
          f"hello.py now {(work / 'hello.py').read_text()!r}")


def _generations(server: Any, dialect: str) -> int:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(int(m.group(1)) for m in re.finditer(
        r'fmgguf_generations_total\{dialect="' + dialect + r'",finish="[^"]+"\} (\d+)', text))


def _run_codex_until_round_trip(cmd: list[str], work: Path, env: dict[str, str], server: Any,
                                budget_s: float) -> tuple[list[dict], bool]:
    """Codex's JSON events, until it exits by itself or until the request that carries a tool call's result
    back has been answered (the first answer was parsed, the call run, its output sent): Codex has no turn
    limit, and a 0.5B model may call tools for ever. Then it is stopped; what it printed is judged."""
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    events: list[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline, round_trip = time.monotonic() + budget_s, False
    while proc.poll() is None and time.monotonic() < deadline:
        if _generations(server, "responses") >= 1 and _statuses(server, "/v1/responses").get("200", 0) >= 2:
            round_trip = True
            time.sleep(10)  # time for Codex to read the second answer's first events and report a problem
            break
        time.sleep(1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    reader.join(10)
    return events, round_trip


def test_codex_finishes_an_edit_without_api_errors(clis: object, server: Any, qwen_path: Path,
                                                   tmp_path: Path) -> None:
    from fmgguf.testing.agent_clis import quiet_env

    work = _workdir(tmp_path)
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "fmgguf.config.toml").write_text(
        f'model = "{qwen_path.name}"\nmodel_provider = "fmgguf"\nmodel_context_window = 32768\n\n'
        f'[model_providers.fmgguf]\nname = "fmgguf"\nbase_url = "{server.url}/v1"\nwire_api = "responses"\n'
        'request_max_retries = 0\nstream_max_retries = 0\nstream_idle_timeout_ms = 900000\n', encoding="utf-8")
    t0 = time.monotonic()
    (home / "instructions.md").write_text(SYSTEM.replace("the Edit tool", "exec_command (sed, python)") + "\n")
    # a one-line base prompt and no web search / sub-agent / goal tools keep the prompt near 2.5k tokens
    cmd = [str(clis.codex), "exec", "-p", "fmgguf", "--skip-git-repo-check", "--json",  # type: ignore[attr-defined]
           "--sandbox", "workspace-write", "-c", f'model_instructions_file="{home / "instructions.md"}"',
           "-c", 'web_search="disabled"', "-c", "features.multi_agent=false", "-c", "features.goals=false", TASK]
    before = _generations(server, "responses")
    assert before == 0, "the Codex test needs the server to itself"
    events, round_trip = _run_codex_until_round_trip(cmd, work, quiet_env(home), server, budget_s=420)
    took = time.monotonic() - t0
    kinds = [e.get("type") for e in events]
    errors = [e for e in events if e.get("type") in ("error", "turn.failed")]
    assert not errors, errors
    # either Codex ended its turn by itself, or a tool call's result went back and was answered
    assert "turn.completed" in kinds or round_trip, kinds
    assert any(e.get("type") == "item.completed" for e in events), kinds
    statuses = _statuses(server, "/v1/responses")
    assert statuses.get("200", 0) >= 1 and set(statuses) == {"200"}, statuses
    print(f"codex: {len(events)} events in {took:.0f} s ({'turn completed' if 'turn.completed' in kinds else 'stopped after the round trip'}), "
          f"hello.py now {(work / 'hello.py').read_text()!r}")
