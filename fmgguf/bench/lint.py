"""ESLint findings for JavaScript answers (the JavaScript twin of the ruff column).

ESLint 9 is installed on demand with npm into ``settings.shared_cache / "eslint"`` (one install per
machine, guarded by a file lock, built in a temp folder and renamed into place), next to a flat config
that we write: a small pinned rule set (undefined names, unused locals, unreachable code, ``==``) with
node's globals declared. Whatever goes wrong (no node, no npm, offline, npm failing) the linter reports
itself unavailable with a one-line reason and the count stays ``None``: lint never fails a benchmark.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import atomic_write_text

if TYPE_CHECKING:
    from fmgguf.settings import Settings

log = logging.getLogger(__name__)

ESLINT_MAJOR = 9
ESLINT_SPEC = f"eslint@{ESLINT_MAJOR}"
INSTALL_TIMEOUT_S = 300.0
RETRY_AFTER_S = 600.0  # a failed install is not retried by the same linter for this long
_IDENT = re.compile(r"^[A-Za-z_$][\w$]*$")

# node's globals for a CommonJS script (the executor runs answers as `node main.js`).
NODE_GLOBALS = ("AbortController", "Buffer", "TextDecoder", "TextEncoder", "URL", "URLSearchParams", "atob",
                "btoa", "clearImmediate", "clearInterval", "clearTimeout", "console", "exports", "fetch",
                "global", "globalThis", "module", "process", "queueMicrotask", "require", "setImmediate",
                "setInterval", "setTimeout", "structuredClone", "__dirname", "__filename")
RULES: dict[str, object] = {
    "no-undef": "error",
    # unused *locals*, arguments after the last used one, catch bindings ignored; top-level names matching
    # FMGGUF_ESLINT_KEEP (the tasks' entry points) are what the answer exists to define
    "no-unused-vars": ["error", {"vars": "all", "args": "after-used", "caughtErrors": "none"}],
    "no-unreachable": "error",
    "eqeqeq": ["error", "always"],
}


def config_text() -> str:
    """The flat config (CommonJS ``eslint.config.js``) we lint with."""
    rules = json.dumps(RULES, indent=2)
    globs = json.dumps({g: "readonly" for g in NODE_GLOBALS}, indent=2)
    return f"""// Written by fmgguf (fmgguf/bench/lint.py); rewritten when the rule set changes.
"use strict";
const rules = {rules};
const keep = process.env.FMGGUF_ESLINT_KEEP;
if (keep) {{
  rules["no-unused-vars"] = ["error", Object.assign({{}}, rules["no-unused-vars"][1], {{ varsIgnorePattern: keep }})];
}}
module.exports = [
  {{
    files: ["**/*.js"],
    languageOptions: {{ ecmaVersion: "latest", sourceType: "commonjs", globals: {globs} }},
    linterOptions: {{ noInlineConfig: true, reportUnusedDisableDirectives: "off" }},
    rules,
  }},
];
"""


@dataclass
class EslintStatus:
    available: bool
    version: str | None = None
    reason: str | None = None
    rules: tuple[str, ...] = tuple(RULES)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rules"] = list(self.rules)
        return d


class JsLinter:
    """Counts ESLint findings on JavaScript sources; installs ESLint on first use (see module doc)."""

    def __init__(self, settings: Settings, timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.root = Path(settings.shared_cache) / "eslint"
        self.install_dir = self.root / f"eslint{ESLINT_MAJOR}"
        self.config_path = self.install_dir / "eslint.config.js"
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._status: EslintStatus | None = None
        self._failed_at = 0.0

    # --- install -----------------------------------------------------------------------------------
    @property
    def eslint_js(self) -> Path:
        return self.install_dir / "node_modules" / "eslint" / "bin" / "eslint.js"

    def _installed_version(self) -> str | None:
        try:
            if not (self.install_dir / ".complete").exists() or not self.eslint_js.exists():
                return None
            pkg = json.loads((self.install_dir / "node_modules" / "eslint" / "package.json").read_text("utf-8"))
            return str(pkg["version"])
        except (OSError, ValueError, KeyError):
            return None

    def status(self) -> EslintStatus:
        """Whether ESLint can run here (installing it first when needed); never raises."""
        with self._lock:
            now = time.monotonic()
            if self._status and (self._status.available or now - self._failed_at < RETRY_AFTER_S):
                return self._status
            try:
                self._status = self._prepare()
            except Exception as exc:  # noqa: BLE001 - lint must never fail a benchmark
                log.debug("eslint unavailable", exc_info=True)
                self._status = EslintStatus(False, reason=f"eslint setup failed: {exc}"[:300])
            if not self._status.available:
                self._failed_at = now
                log.info("eslint column disabled: %s", self._status.reason)
            return self._status

    def _prepare(self) -> EslintStatus:
        if not shutil.which("node"):
            return EslintStatus(False, reason="node not found on PATH (install nodejs for the eslint column)")
        version = self._installed_version()
        if version is None or not self._config_current():
            from filelock import FileLock, Timeout

            self.root.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(self.root / ".install.lock"), timeout=INSTALL_TIMEOUT_S + 60):
                    version = self._installed_version()
                    if version is None:
                        failure = self._install()
                        if failure:
                            return EslintStatus(False, reason=failure)
                        version = self._installed_version()
                        if version is None:
                            return EslintStatus(False, reason=f"npm install {ESLINT_SPEC} left no eslint behind")
                    if not self._config_current():
                        atomic_write_text(self.config_path, config_text())
            except Timeout:
                return EslintStatus(False, reason=f"another process holds {self.root / '.install.lock'}")
        return EslintStatus(True, version=version)

    def _config_current(self) -> bool:
        try:
            return self.config_path.read_text("utf-8") == config_text()
        except OSError:
            return False

    def _install(self) -> str | None:
        """npm-install ESLint into a temp folder, then rename it into place; a one-line reason on failure."""
        if self.settings.offline:
            return f"offline mode: {ESLINT_SPEC} is not installed in {self.root} (run once online)"
        npm = shutil.which("npm")
        if not npm:
            return "npm not found on PATH (install npm for the eslint column)"
        tmp = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
                   "npm_config_audit": "false", "npm_config_loglevel": "error"}
            log.info("installing %s into %s", ESLINT_SPEC, self.install_dir)
            try:
                r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(tmp),
                                    ESLINT_SPEC], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                                   check=False, env=env, cwd=tmp, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return f"npm install {ESLINT_SPEC} timed out after {INSTALL_TIMEOUT_S:.0f} s"
            except OSError as exc:
                return f"npm install {ESLINT_SPEC} could not start: {exc}"
            if r.returncode != 0 or not (tmp / "node_modules" / "eslint" / "bin" / "eslint.js").exists():
                return f"npm install {ESLINT_SPEC} failed: {_npm_reason(r.stderr or r.stdout, r.returncode)}"
            atomic_write_text(tmp / "eslint.config.js", config_text())
            (tmp / ".complete").write_text(ESLINT_SPEC + "\n", encoding="utf-8")
            if self.install_dir.exists():  # a broken earlier install (we hold the lock)
                shutil.rmtree(self.install_dir, ignore_errors=True)
            os.replace(tmp, self.install_dir)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- lint --------------------------------------------------------------------------------------
    def messages(self, sources: list[str], keep: list[str | None] | None = None) -> list[list[dict] | None]:
        """ESLint's messages per source (one eslint process for all), ``None`` where it could not lint.

        ``keep``: top-level names not to report as unused (the entry points the answers must define).
        """
        if not sources:
            return []
        if not self.status().available:
            return [None] * len(sources)
        names = sorted({k for k in (keep or []) if k and _IDENT.match(k)})
        env = {**os.environ, "FMGGUF_ESLINT_KEEP": ("^(" + "|".join(re.escape(n) for n in names) + ")$") if names else ""}
        with tempfile.TemporaryDirectory(prefix="fmgguf-eslint-") as work:
            files = []
            for i, src in enumerate(sources):
                path = Path(work) / f"answer_{i}.js"
                path.write_text(src, encoding="utf-8")
                files.append(path.name)
            results = None
            try:
                r = subprocess.run(["node", str(self.eslint_js), "--config", str(self.config_path), "--format", "json",
                                    "--no-warn-ignored", *files], capture_output=True, text=True, check=False,
                                   timeout=self.timeout_s + 0.5 * len(files), cwd=work, env=env,
                                   stdin=subprocess.DEVNULL)
                if r.returncode in (0, 1):  # 0: clean, 1: findings, 2: eslint itself failed
                    results = json.loads(r.stdout)
                else:
                    log.debug("eslint exited %s: %s", r.returncode, r.stderr[-500:])
            except (OSError, subprocess.SubprocessError, ValueError):
                log.debug("eslint run failed", exc_info=True)
            if not isinstance(results, list):
                return [None] * len(sources)
            by_name = {Path(res.get("filePath", "")).name: res.get("messages") or [] for res in results}
            return [by_name.get(name) for name in files]

    def findings(self, sources: list[str], keep: list[str | None] | None = None) -> list[int | None]:
        """Finding counts per source; ``None`` without ESLint or where the source does not parse (like ruff)."""
        out: list[int | None] = []
        for msgs in self.messages(sources, keep):
            if msgs is None or any(m.get("fatal") for m in msgs):
                out.append(None)
            else:  # rule findings only (not eslint's notes about ignored inline directives)
                out.append(sum(1 for m in msgs if m.get("ruleId")))
        return out


def _npm_reason(text: str, returncode: int) -> str:
    """npm's error code and first message line (not its stack, syscall or debug-log lines)."""
    code, message = None, None
    for line in (text or "").splitlines():
        line = re.sub(r"^npm (error|ERR!)\s*", "", line.strip())
        if line.startswith("code ") and code is None:
            code = line[5:].strip()
        elif line and message is None and not line.startswith(("syscall", "errno", "at ", "A complete log", "{", "}")):
            message = line
    return " ".join(x for x in (code and f"{code}:", message or f"exit status {returncode}") if x)[:240]
