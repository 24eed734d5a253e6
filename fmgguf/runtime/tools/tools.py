"""Tool calls and structured output, as the runtime sees them.

- The types every layer shares: :class:`ToolSpec` (a declared function), :class:`ToolCall` (a call the
  model made), :class:`ResponseFormat` (JSON output), and :class:`ToolRequest` (all of them for one chat).
- How tools reach the model: through the GGUF's own chat template where it carries them (Hermes
  ``<tool_call>`` templates such as Qwen2.5's, Mistral ``[TOOL_CALLS]`` ones), else a generic JSON
  envelope described in the system prompt (the way llama.cpp serves templates without tool support).
- The grammar that keeps the calls parseable is in :mod:`fmgguf.runtime.tools.tool_grammar`; reading the calls
  back out of the text in :mod:`fmgguf.runtime.tools.tool_parser`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fmgguf.errors import InvalidRequestError

#: ``tool_choice`` values: "none" | "auto" | "required" | "tool:<name>"
ToolChoice = str
#: how a template writes tool calls: Hermes ``<tool_call>`` tags, Mistral ``[TOOL_CALLS]``, or our envelope
ToolFormat = Literal["hermes", "mistral", "generic"]
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def openai(self) -> dict[str, Any]:
        """As chat templates (and OpenAI) expect a tool: ``{"type": "function", "function": {...}}``."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": dict(self.parameters or {"type": "object"})}}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is JSON text (an object), as OpenAI sends it."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def arguments_object(self) -> dict[str, Any]:
        """The arguments as a mapping (Ollama's and Anthropic's shape); {} where they are not an object."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object (``json_object``), or JSON valid against ``schema``."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    strict: bool = False
    name: str | None = None


@dataclass(frozen=True)
class ToolRequest:
    """Everything about tools and output format that one chat request asks for."""

    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = "auto"
    parallel: bool = True
    response_format: ResponseFormat | None = None

    def __post_init__(self) -> None:
        check_tool_request(self)

    @property
    def calls_allowed(self) -> bool:
        """Whether the model is told about tools and its calls are read back."""
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        """A call is required (``required`` or a named tool): the grammar applies from the first token."""
        return self.calls_allowed and self.choice != "auto"

    def callable_tools(self) -> tuple[ToolSpec, ...]:
        """The tools the model may call now (just the named one for ``tool:<name>``)."""
        if self.choice.startswith("tool:"):
            name = self.choice[len("tool:"):]
            return tuple(t for t in self.tools if t.name == name)
        return self.tools if self.choice != "none" else ()


def check_tool_request(req: ToolRequest) -> None:
    """InvalidRequestError naming what is wrong with the tools or the choice."""
    names = [t.name for t in req.tools]
    for name in names:
        if not _NAME.match(name or ""):
            raise InvalidRequestError(f"tool name {name!r} is not valid",
                                      fix="use 1-64 letters, digits, '_', '.', ':' or '-'")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidRequestError(f"tool {dup[0]!r} is declared twice", fix="give each tool a unique name")
    for t in req.tools:
        if not isinstance(t.parameters, Mapping):
            raise InvalidRequestError(f"the parameters of tool {t.name!r} are not a JSON schema object",
                                      fix='pass {"type": "object", "properties": {...}}')
    choice = req.choice
    if choice not in ("none", "auto", "required") and not choice.startswith("tool:"):
        raise InvalidRequestError(f"tool_choice {choice!r} is not known",
                                  fix='use "none", "auto", "required" or name a function')
    if choice in ("required",) or choice.startswith("tool:"):
        if not req.tools:
            raise InvalidRequestError(f"tool_choice {choice!r} needs tools", fix="pass the tools in `tools`")
        if choice.startswith("tool:") and choice[len("tool:"):] not in names:
            raise InvalidRequestError(f"tool_choice names {choice[len('tool:'):]!r}, which is not in `tools`",
                                      fix=f"name one of: {', '.join(names)}")
    if req.response_format is not None and req.forced:
        raise InvalidRequestError("a required tool call and a response_format cannot both constrain the answer",
                                  fix="drop response_format, or set tool_choice to auto")


# --- which format a template speaks ----------------------------------------------------------------
def template_format(template: str | None) -> ToolFormat:
    """The tool-call format of a chat template: its own (Hermes, Mistral) or the generic envelope."""
    text = template or ""
    if "<tool_call>" in text and "tools" in text:
        return "hermes"
    if "[TOOL_CALLS]" in text and "tools" in text:
        return "mistral"
    return "generic"


def tools_supported(template: str | None, family: str | None) -> bool:
    """Whether a model takes ``tools``: its template carries them, or it chats at all (the envelope)."""
    return bool(template) or bool(family and family != "none")


# --- messages as the template (or the envelope) wants them -------------------------------------------
def template_messages(messages: Sequence[Mapping[str, Any]], fmt: ToolFormat,
                      req: ToolRequest | None) -> list[dict[str, Any]]:
    """Chat messages for rendering: native formats get ``tool_calls`` with arguments as objects (the
    Hugging Face template convention); the generic envelope gets calls and results as plain text, and
    the tool instructions in the system message."""
    if fmt != "generic":
        return [_native(m) for m in messages]
    out = [_enveloped(m) for m in messages]
    if req is not None and req.calls_allowed:
        out = _with_system(out, envelope_instructions(req))
    return _merge_same_role(out)


def _native(msg: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(msg)
    calls = msg.get("tool_calls")
    if calls:
        out["tool_calls"] = [{"id": c.get("id", ""), "type": "function",
                              "function": {"name": _fn(c).get("name", ""),
                                           "arguments": _args_object(_fn(c).get("arguments"))}}
                             for c in calls]
    return out


def _enveloped(msg: Mapping[str, Any]) -> dict[str, Any]:
    role, content = str(msg.get("role")), str(msg.get("content") or "")
    calls = msg.get("tool_calls")
    if role == "assistant" and calls:
        env = {"tool_calls": [{"name": _fn(c).get("name", ""), "arguments": _args_object(_fn(c).get("arguments"))}
                              for c in calls]}
        text = (content + "\n" if content else "") + json.dumps(env, ensure_ascii=False)
        return {"role": "assistant", "content": text}
    if role == "tool":
        who = msg.get("name") or msg.get("tool_call_id") or "the tool"
        return {"role": "user", "content": f"Result of {who}:\n{content}"}
    return {"role": role, "content": content}


def envelope_instructions(req: ToolRequest) -> str:
    """The system prompt's tool instructions. They depend only on the declared tools and
    ``parallel``, never on ``tool_choice`` (the grammar enforces a required or named call): an agent that
    forces a call on one turn and not the next keeps one system prompt, so its KV prefix stays reusable."""
    tools = "\n".join(json.dumps(t.openai()["function"], ensure_ascii=False) for t in req.tools)
    many = "one or more calls" if req.parallel else "exactly one call"
    return ("You can call these functions:\n" + tools + "\n\nTo call functions, reply with only this JSON "
            f"({many}) and nothing else:\n" + '{"tool_calls": [{"name": "<function name>", "arguments": '
            '{<arguments as JSON>}}]}\nIf no tool is needed, answer normally in plain text.')


def _with_system(msgs: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": msgs[0]["content"] + "\n\n" + text}, *msgs[1:]]
    return [{"role": "system", "content": text}, *msgs]


def _merge_same_role(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive messages of one role as one (templates without tools often demand alternation)."""
    out: list[dict[str, Any]] = []
    for m in msgs:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(m)
    return out


def _fn(call: Mapping[str, Any]) -> Mapping[str, Any]:
    fn = call.get("function")
    return fn if isinstance(fn, Mapping) else call


def _args_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}
