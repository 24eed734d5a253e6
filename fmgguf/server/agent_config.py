"""What each coding agent needs to talk to one fmgguf server (`fmgguf connect claude-code|codex|opencode|aider`):

- Claude Code: environment variables (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_AUTH_TOKEN``, the model names,
  telemetry off), merged into the ``env`` block of ``~/.claude/settings.json``; it speaks /v1/messages.
- Codex CLI: a profile file ``~/.codex/fmgguf.config.toml`` (Codex 0.17x reads profiles from their own
  files) with a ``model_providers.fmgguf`` entry, ``wire_api = "responses"`` (``codex -p fmgguf``).
- OpenCode: a provider in ``~/.config/opencode/opencode.json`` (OpenAI-compatible, /v1/chat/completions).
- aider: ``~/.aider.model.metadata.json`` with the context size (aider itself is pointed at /v1 by flags).

Agents send 10-20k-token system prompts: the model needs a context of 32k where memory allows, so the
context each config announces comes from the fit plan (:func:`agent_context`), with what it costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject
from fmgguf.server.editor_config import EditorConfig, Roles

if TYPE_CHECKING:
    from fmgguf.catalog import ModelCard
    from fmgguf.settings import Settings

AGENTS = ("claude-code", "codex", "opencode", "aider")
#: the context agents want (their system prompts alone are 10-20k tokens)
AGENT_CTX = 32768
#: what an agent may ask for in one answer, leaving the rest of the context to the prompt
AGENT_MAX_OUTPUT = 4096


@dataclass(frozen=True)
class AgentContext:
    n_ctx: int
    #: one line: what the context costs in memory, and how to start the server with it
    note: str


def agent_context(settings: Settings, card: ModelCard, quant: str, path: Path | None) -> AgentContext:
    """The largest context up to :data:`AGENT_CTX` (and the model's trained length) that the fit plan
    says fits, and what it costs."""
    from fmgguf._util import human_bytes as gib
    from fmgguf.runtime.plan.fit import plan_for_card, plan_for_file

    trained = int(card.arch.context_length) if card.arch and card.arch.context_length else AGENT_CTX
    plan = None
    for ctx in (AGENT_CTX, 16384, 8192):
        want = min(ctx, trained)
        try:
            plan = (plan_for_file(path, want, settings, measure=False) if path is not None
                    else plan_for_card(card, quant, want, settings, remote=False))
        except Exception:  # noqa: BLE001 - no plan: announce the default and say so
            return AgentContext(min(AGENT_CTX, trained), "no fit plan could be made; `fmgguf fit` says why")
        if plan.fits:
            break
    assert plan is not None
    est = plan.estimate
    kv = f"KV cache {gib(est.kv_total)}, " if est is not None else ""
    where = f"{gib(plan.ram_needed)} RAM" + (f" + {gib(plan.vram_needed)} VRAM" if plan.vram_needed else "")
    fits = "fits" if plan.fits else "does NOT fit (smaller quant or free memory)"
    note = (f"context {plan.n_ctx}: {kv}{where} in all, {fits}; start the server with "
            f"`FMGGUF_CTX={plan.n_ctx} fmgguf serve --model {card.id}:{quant}`")
    return AgentContext(plan.n_ctx, note)


def _model(r: Roles) -> str:
    return r.chat or "default"


def claude_code_config(r: Roles) -> EditorConfig:
    model = _model(r)
    env = {"ANTHROPIC_BASE_URL": r.base_url.rstrip("/"), "ANTHROPIC_AUTH_TOKEN": r.api_key or "fmgguf",
           "ANTHROPIC_MODEL": model, "ANTHROPIC_DEFAULT_OPUS_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "CLAUDE_CODE_SUBAGENT_MODEL": model,
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(AGENT_MAX_OUTPUT),
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
           "DISABLE_AUTOUPDATER": "1", "API_TIMEOUT_MS": "600000"}
    notes = ("or export these variables in the shell that runs `claude` (they speak /v1/messages)",
             "Claude Code's billing line (cch=) is dropped before the prompt is built, so its system prompt "
             "stays in the prompt cache from turn to turn")
    return EditorConfig("claude-code", "Claude Code (~/.claude/settings.json, env)",
                        Path.home() / ".claude" / "settings.json", "json", {"env": env}, notes + _no_chat(r))


def codex_config(r: Roles) -> EditorConfig:
    provider: JsonObject = {"name": "fmgguf", "base_url": r.base_url.rstrip("/") + "/v1", "wire_api": "responses",
                                "request_max_retries": 1, "stream_max_retries": 1, "stream_idle_timeout_ms": 600000}
    if r.api_key:
        provider["env_key"] = "FMGGUF_API_KEY"
    data = {"model": _model(r), "model_provider": "fmgguf", "model_context_window": r.n_ctx,
            "model_providers.fmgguf": provider}
    notes = ("a Codex profile file: run `codex -p fmgguf` (or `codex exec -p fmgguf ...`); Codex speaks "
             "/v1/responses, stateless: it resends the whole conversation each turn",)
    if r.api_key:
        notes += ("export FMGGUF_API_KEY=<the key> for Codex to send it",)
    return EditorConfig("codex", "Codex CLI profile (~/.codex/fmgguf.config.toml)",
                        Path.home() / ".codex" / "fmgguf.config.toml", "toml", data, notes + _no_chat(r))


def opencode_config(r: Roles) -> EditorConfig:
    model = _model(r)
    options: JsonObject = {"baseURL": r.base_url.rstrip("/") + "/v1"}
    if r.api_key:
        options["apiKey"] = r.api_key
    provider = {"npm": "@ai-sdk/openai-compatible", "name": "fmgguf", "options": options,
                "models": {model: {"name": f"{model} (fmgguf)", "tool_call": True,
                                   "limit": {"context": r.n_ctx, "output": AGENT_MAX_OUTPUT}}}}
    data = {"$schema": "https://opencode.ai/config.json", "provider": {"fmgguf": provider}, "model": f"fmgguf/{model}"}
    notes = ("OpenCode's openai-compatible provider calls /v1/chat/completions with tools",)
    return EditorConfig("opencode", "OpenCode (~/.config/opencode/opencode.json)",
                        Path.home() / ".config" / "opencode" / "opencode.json", "json", data, notes + _no_chat(r))


def aider_config(r: Roles) -> EditorConfig:
    model = f"openai/{_model(r)}"
    meta = {model: {"max_tokens": AGENT_MAX_OUTPUT, "max_input_tokens": r.n_ctx, "max_output_tokens": AGENT_MAX_OUTPUT,
                     "input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": "openai",
                     "mode": "chat", "supports_function_calling": True}}
    key = r.api_key or "fmgguf"
    notes = (f"then run `aider --model {model} --openai-api-base {r.base_url.rstrip('/')}/v1 --openai-api-key {key}` "
             "(or set OPENAI_API_BASE / OPENAI_API_KEY)",)
    return EditorConfig("aider", "aider (~/.aider.model.metadata.json)", Path.home() / ".aider.model.metadata.json",
                        "json", meta, notes + _no_chat(r))


def _no_chat(r: Roles) -> tuple[str, ...]:
    if r.chat:
        return ()
    return ("no downloaded model has a chat template: pull an -instruct model (e.g. `fmgguf pull "
            "qwen2.5-coder-0.5b-instruct`) and run connect again",)


BUILDERS = {"claude-code": claude_code_config, "codex": codex_config, "opencode": opencode_config,
            "aider": aider_config}
