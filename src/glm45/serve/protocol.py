"""Request and response models of the OpenAI-compatible API (pydantic v2).

Requests validate strictly (a string is not an integer, `1.5` is not a token count) so that a
wrong-typed field is a 400 naming it rather than a silent coercion. Unknown fields are ignored,
because OpenAI clients send options (`user`, `metadata`, `store`, ...) this server does not use.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glm45.chat.template import tool_call_arguments
from glm45.serve.errors import FieldError

MAX_N = 16
MAX_STOP = 16
MAX_TOP_LOGPROBS = 20
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# ------------------------------------------------------------------ messages
class TextPart(_Request):
    type: str
    text: str

    @field_validator("type")
    @classmethod
    def _only_text(cls, v: str) -> str:
        if v != "text":
            raise ValueError(f"content part type {v!r} is not supported; only 'text' parts are")
        return v


Content = str | list[TextPart]


def content_text(content: Content | None) -> str:
    """String content as is; text parts concatenated (as the chat template does)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content)


class SystemMessage(_Request):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(_Request):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(_Request):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(_Request):
    name: str
    # OpenAI sends a JSON string; a dict is accepted too. Parsed to a dict before rendering.
    arguments: str | dict[str, Any]

    @field_validator("arguments")
    @classmethod
    def _parse_arguments(cls, v: str | dict) -> dict[str, Any]:
        return dict(tool_call_arguments(v, "function.arguments"))


class ToolCallIn(_Request):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Request):
    role: Literal["assistant"]
    content: Content | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _something_said(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.reasoning_content is None and self.reasoning is None:
            raise FieldError("content", "an assistant message needs content or tool_calls")
        return self


class ToolMessage(_Request):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


Message = Annotated[SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
                    Field(discriminator="role")]


# ------------------------------------------------------------------ tools
def check_json_schema(schema: Any, where: str) -> None:
    """Structural checks of a tool's parameter schema: the parts the template and the tool-call
    parser rely on (types, properties, items, required)."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON object (a JSON Schema), got {type(schema).__name__}")
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        bad = [x for x in types if not isinstance(x, str) or x not in _SCHEMA_TYPES]
        if bad or not types:
            raise ValueError(f"{where}.type {t!r} is not a JSON Schema type (one of {sorted(_SCHEMA_TYPES)})")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise ValueError(f"{where}.properties must be an object mapping names to schemas")
        for k, sub in props.items():
            check_json_schema(sub, f"{where}.properties.{k}")
    items = schema.get("items")
    if items is not None and not isinstance(items, bool):
        for i, sub in enumerate(items if isinstance(items, list) else [items]):
            check_json_schema(sub, f"{where}.items" + (f"[{i}]" if isinstance(items, list) else ""))
    req = schema.get("required")
    if req is not None:
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise ValueError(f"{where}.required must be a list of property names")
        if isinstance(props, dict):
            missing = [r for r in req if r not in props]
            if missing:
                raise ValueError(f"{where}.required names {missing} which are not in properties")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise ValueError(f"{where}.enum must be a non-empty list")


class FunctionDef(_Request):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TOOL_NAME.match(v):
            raise ValueError(f"tool name {v!r} must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict | None) -> dict | None:
        if v is not None:
            check_json_schema(v, "parameters")
            if v.get("type", "object") != "object":
                raise ValueError(f"parameters.type must be 'object', got {v['type']!r}")
        return v


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(_Request):
    include_usage: bool = False


class ChatTemplateKwargs(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    enable_thinking: bool | None = None


# ------------------------------------------------------------------ shared sampling fields
class SamplingFields(_Request):
    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops or None

    @model_validator(mode="after")
    def _stream_options(self):
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "stream_options is only allowed when stream is true")
        return self


class ChatCompletionRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    chat_template_kwargs: ChatTemplateKwargs | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "top_logprobs requires logprobs to be true")
        names = [t.function.name for t in self.tools or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise FieldError("tools", f"tool names must be unique; repeated: {dup}")
        choice = self.tool_choice
        if choice in ("required",) or isinstance(choice, NamedToolChoice):
            if not names:
                raise FieldError("tool_choice", "tool_choice requires a call but no tools were given")
            if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
                raise FieldError("tool_choice", f"tool_choice names function {choice.function.name!r}, "
                                 f"which is not among the tools {names}")
        return self

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if isinstance(v[0], list) and any(not p for p in v):
                raise ValueError("token prompts must not be empty")
            if isinstance(v[0], int) and any(t < 0 for t in v):
                raise ValueError("token ids must be non-negative")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix is not supported by this server")
        return v


# ------------------------------------------------------------------ responses
class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCallOut(_Response):
    name: str | None = None
    arguments: str | None = None


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob] | None = None


class ChatMessageOut(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Response):
    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class CompletionTokensDetails(_Response):
    reasoning_tokens: int = 0


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDelta(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallOut | None = None


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(_Response):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "glm45"
    max_model_len: int


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
