"""Claude Code and Codex CLI for the agent tests: npm-installed once, pinned, into the shared cache
(``FMGGUF_CACHE/agent-clis/<pins>``, outside git), the way the eslint column installs eslint; and the
environment that points them at an fmgguf server with every telemetry and update call switched off.

Test support only: production code never imports this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.332"
CODEX = "@openai/codex@0.171.0"
INSTALL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class AgentClis:
    claude: Path
    codex: Path


def install(cache: Path) -> AgentClis | str:
    """The installed CLIs, installing them first if needed; a one-line reason when npm can't."""
    root = cache / "agent-clis" / (CLAUDE_CODE + "+" + CODEX).replace("@", "").replace("/", "_")
    bins = AgentClis(root / "node_modules" / ".bin" / "claude", root / "node_modules" / ".bin" / "codex")
    if bins.claude.exists() and bins.codex.exists():
        return bins
    npm = shutil.which("npm")
    if not npm:
        return "npm not found on PATH (`make system-deps` installs it)"
    tmp = root.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false", "npm_config_loglevel": "error"}
    try:
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(tmp),
                            CLAUDE_CODE, CODEX], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                           check=False, env=env, cwd=tmp, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
            return f"npm install {CLAUDE_CODE} {CODEX} failed (exit {r.returncode}): {tail}"
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"npm install {CLAUDE_CODE} {CODEX} could not finish: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bins


def quiet_env(home: Path) -> dict[str, str]:
    """A private HOME and every switch that keeps the CLIs off the network except our server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CODEX_", "CLAUDE_"))}
    env.update({"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "XDG_CONFIG_HOME": str(home / ".config"),
                "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
                "DISABLE_BUG_COMMAND": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1", "CODEX_DISABLE_UPDATE_CHECK": "1",
                "OTEL_SDK_DISABLED": "true", "NO_COLOR": "1", "CI": "1"})
    return env
