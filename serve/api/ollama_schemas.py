"""Ollama requests (POST /api/chat, /api/generate, /api/embed, /api/embeddings, /api/show) at the API edge.

The fields hearth reads, typed as Ollama's server reads them (docs/api.md in ollama/ollama); unknown fields are
ignored. `model` is kept as the client wrote it (`demo-think:latest`): responses echo it, and the app compares
its base name (hearth_common/ollama_errors.model_name). A null field is an absent one, as in Ollama. `options` stays a plain object here: its known keys are
checked where they become the chat core's fields (serve/api/ollama.py `sampling`), the others are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.chat.schemas import MAX_MESSAGES, MAX_TOOLS

Think = bool | Literal["low", "medium", "high"]
# keep_alive: a duration ("5m", "1h30m", "-1") or seconds; accepted and not acted on here (the router's)
KeepAlive = str | int | float | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A null field is the field left out (Ollama's Go structs read null as unset)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class Function(_Model):
    name: str = Field(min_length=1)
    # Ollama sends an object; a JSON string (what OpenAI clients hold) is taken too
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(_Model):
    id: str | None = None
    function: Function


class Message(_Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # a tool result: the name of the tool that ran
    tool_call_id: str | None = None  # a tool result: the call it answers (newer clients)


class _Base(_Model):
    model: str = Field(min_length=1)
    keep_alive: KeepAlive = None


class _Generating(_Base):
    stream: bool = Field(True, strict=True)
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: Think | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatBody(_Generating):
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)


class GenerateBody(_Generating):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None  # ignored: the GGUF's own chat template renders the prompt
    context: list[int] | None = None  # ignored (deprecated in Ollama)
    raw: bool = Field(False, strict=True)
    images: list[str] | None = None


class EmbedBody(_Base):
    input: str | list[str] = ""
    truncate: bool = Field(True, strict=True)
    dimensions: int | None = Field(None, ge=1, strict=True)
    options: dict[str, Any] | None = None


class EmbeddingsBody(_Base):
    prompt: str = ""
    options: dict[str, Any] | None = None


class ShowBody(_Model):
    model: str = Field(min_length=1)
    verbose: bool = Field(False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        """/api/show once took `name`: older clients' field is read as `model`."""
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data
