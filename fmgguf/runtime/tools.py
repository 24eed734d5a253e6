"""Tool calls and structured output, as the runtime sees them: the declared tools, the calls a model
made, and the response format a client asked for. (Rendering, grammars and parsers build on these.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: ``tool_choice`` values: "none" | "auto" | "required" | "tool:<name>"
ToolChoice = str


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is JSON text (an object), as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ResponseFormat:
    """Structured output: any JSON object (``json_object``), or JSON valid against ``schema``."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    strict: bool = False
    name: str | None = None
