"""Request bodies: validated by pydantic, so a bad request is a 422 naming the field, never a 500."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fmgguf._util import JsonObject

MAX_PROMPT_CHARS = 2_000_000
MAX_TOKENS = 32768
ModelId = Field(min_length=1, max_length=200)
Quant = Field(default=None, min_length=1, max_length=32, description="e.g. Q4_K_M or Q8_0")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DownloadRequest(_Body):
    quant: str | None = Quant
    revision: str | None = Field(default=None, min_length=1, max_length=128)


class SelectRequest(_Body):
    model_id: str = ModelId
    quant: str | None = Quant
    n_ctx: Union[int, Literal["auto"], None] = Field(default=None, description="context length, or 'auto'")

    @field_validator("n_ctx")
    @classmethod
    def _ctx(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and not (16 <= v <= 1 << 21):
            raise ValueError("n_ctx must be between 16 and 2097152, or 'auto'")
        return v


class GenerateRequest(_Body):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=8)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    #: fill-in-the-middle: the code after the cursor (the prompt is the code before it)
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    stream: bool = False


class CompareRequest(_Body):
    model_ids: list[str] = Field(min_length=1, max_length=5)
    quant: str | None = Quant
    n_ctx: int | None = Field(default=None, ge=16, le=1 << 21)


class BenchmarkRequest(_Body):
    model_ids: list[str] = Field(min_length=1, max_length=10)
    quant: str | None = Quant
    #: a built-in suite name (a file path is not accepted over HTTP)
    suite: str = Field(default="builtin", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    tasks: list[str] | None = Field(default=None, max_length=1000)
    languages: list[str] | None = Field(default=None, max_length=10)
    samples: int = Field(default=1, ge=1, le=20)
    max_tokens: int = Field(default=512, ge=16, le=4096)


# --- OpenAI-compatible -----------------------------------------------------------------------
class _OpenAIBody(BaseModel):
    # editors send fields we do not use (logprobs, user...): accept and ignore them
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = False
    stream_options: JsonObject | None = None
    #: fmgguf's own: speculative decoding off | ngram | draft | draft:<id> (default: the server's `speculative` setting)
    speculative: str | None = Field(default=None, max_length=300)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 32:  # Continue sends ~12 for a FIM template
            raise ValueError("at most 32 stop sequences")
        return v

    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(_OpenAIBody):
    prompt: Union[str, list[str]] = Field(default="")
    suffix: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    echo: bool | None = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send one prompt per request (a list of one string is accepted)")
            v = v[0]
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt longer than {MAX_PROMPT_CHARS} characters")
        return v


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    #: JSON text (OpenAI); an object is accepted too
    arguments: Union[str, JsonObject, None] = None


class MessageToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(default=None, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    #: an assistant's calls (sent back in the history), and a tool result's call id / function name
    tool_calls: list[MessageToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=100_000)
    parameters: JsonObject | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"] = "function"
    function: JsonObject


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, max_length=200)
    #: "schema" in JSON (``schema`` would shadow a pydantic attribute)
    json_schema: JsonObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(_OpenAIBody):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatBody | None = None


class EmbeddingRequest(BaseModel):
    """OpenAI's /v1/embeddings body (refused: no model served here embeds)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=200)
    input: Union[str, list[object], None] = None
