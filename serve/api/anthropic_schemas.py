"""Anthropic Messages requests (POST /v1/messages, /v1/messages/count_tokens) at the API edge.

The fields hearth reads; unknown fields are ignored (`cache_control`, `citations`, `metadata` beyond
`user_id`, `service_tier`, ...). Content blocks other than text, image, tool_use, tool_result, thinking and
redacted_thinking (documents, server tools' results) are refused with a 400 naming the block. An image's source
is read whatever its type; serve/api/anthropic.py takes `base64` and refuses `url` and `file` by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve.chat.schemas import MAX_MESSAGES, MAX_TOOLS, TOOL_NAME

BLOCK_TYPES = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Model):
    type: Literal["text"]
    text: str


class ImageSource(_Model):
    type: Literal["base64", "url", "file"]
    media_type: str = ""  # base64
    data: str = ""  # base64
    url: str = ""  # url
    file_id: str = ""  # file (the Files API)


class ImageBlock(_Model):
    type: Literal["image"]
    source: ImageSource


class ThinkingBlock(_Model):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"]
    data: str = ""


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


def _as_blocks(v: Any) -> Any:
    """A string is one text block (so a bad block is reported as such, not as 'not a string')."""
    return [{"type": "text", "text": v}] if isinstance(v, str) else v


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: list[TextBlock] = Field(default_factory=list)
    is_error: bool = Field(False, strict=True)

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if v is None:
            return []
        v = _as_blocks(v)
        if isinstance(v, list):
            for part in v:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"a tool_result's content may hold text blocks only, not {kind!r}")
        return v

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content)


Block = Annotated[
    TextBlock | ImageBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock,
    Field(discriminator="type"),
]


class Message(_Model):
    role: Literal["user", "assistant"]
    content: list[Block]  # a string is one text block

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, v: Any) -> Any:
        v = _as_blocks(v)
        if isinstance(v, list):
            for part in v:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in BLOCK_TYPES:
                    raise ValueError(
                        f"{kind!r} content blocks are not supported; this server reads {', '.join(BLOCK_TYPES)} blocks"
                    )
        return v


class Tool(_Model):
    type: Literal["custom"] | None = None  # server tools (web_search_..., bash_..., ...) are refused
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _client_tool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in (None, "custom"):
            raise ValueError(
                f"tool type {data['type']!r} is a server tool, which this server does not run; "
                "only client tools ({name, description, input_schema}) are supported"
            )
        return data


class ToolChoice(_Model):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = Field(False, strict=True)

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's name")
        return self


class Thinking(_Model):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1, strict=True)

    @model_validator(mode="after")
    def _budget(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("thinking of type 'enabled' needs budget_tokens")
        return self


class Metadata(_Model):
    user_id: str | None = None


class OutputFormat(_Model):
    """Structured outputs: the answer held to a JSON schema (`messages.parse(output_format=...)` sends it)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Model):
    format: OutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class CountTokensRequest(_Model):
    """What decides the prompt: /v1/messages/count_tokens takes these."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: list[TextBlock] | None = None  # a string is one text block
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _system_blocks(cls, v: Any) -> Any:
        return _as_blocks(v)

    @property
    def system_text(self) -> str:
        return "\n\n".join(b.text for b in self.system or ())


class MessagesRequest(CountTokensRequest):
    # numbers and booleans strict, as chat's Sampling: "8" is not 8, true is not 1, a number is finite
    max_tokens: int = Field(ge=1, strict=True)
    stop_sequences: list[str] | None = Field(None, max_length=4)
    temperature: float = Field(1.0, ge=0.0, le=1.0, strict=True, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, strict=True)
    stream: bool = Field(False, strict=True)
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    # Message threads (`{"type": "create" | "continue", "previous_message_id": ...}`): this server keeps none, and
    # refuses a request that names one (serve/api/anthropic.py, ThreadUnsupported)
    thread: Any = None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        return v
