"""Request models at the API edge (OpenAI fields plus our extensions). Unknown fields are ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

Reasoning = Literal["low", "medium", "high"]
ChannelName = Literal["analysis", "commentary", "final"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.json_schema is required when type is json_schema")
        return self


class Sampling(BaseModel):
    """Fields shared by chat and legacy completions. Numbers and booleans are strict: `"8"` is not 8, `true` is
    not 1, and a number must be finite (json.loads reads `Infinity`). The router checks the same JSON types
    (hearth_common/fields.py)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, strict=True, validation_alias=AliasChoices("max_tokens", "max_completion_tokens"))
    temperature: float = Field(1.0, ge=0.0, le=2.0, strict=True, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, strict=True)
    min_p: float = Field(0.0, ge=0.0, le=1.0, strict=True, allow_inf_nan=False)
    repeat_penalty: float = Field(1.0, gt=0.0, strict=True, allow_inf_nan=False)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, strict=True, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, strict=True, allow_inf_nan=False)
    seed: int | None = Field(None, strict=True)
    stop: str | list[str] | None = None
    stream: bool = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int = Field(1, strict=True)
    cache_prompt: bool = Field(True, strict=True)  # llama.cpp's name: false decodes the whole prompt, reusing no cached prefix

    @property
    def logprob_count(self) -> int | None:
        """Top alternatives to report with each token's log-probability; None: no logprobs."""
        return None

    @field_validator("n")
    @classmethod
    def _only_one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else v or []
        if len(items) > 4 or any(not s for s in items):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


MAX_MESSAGES = 2048  # per request: rendering and tokenizing 10,000 took seconds of CPU each


class ChatRequest(Sampling):
    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    response_format: ResponseFormat | None = None
    reasoning: Reasoning = Field("medium", validation_alias=AliasChoices("reasoning", "reasoning_effort"))
    separate_thinking: bool = True
    include_channels: list[ChannelName] | None = None
    developer_instructions: str | None = None
    logprobs: bool = Field(False, strict=True)
    top_logprobs: int | None = Field(None, ge=0, le=20, strict=True)

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, v: list[Message]) -> list[Message]:
        if not v:
            raise ValueError("messages must not be empty")
        return v

    @model_validator(mode="before")
    @classmethod
    def _reasoning_alias(cls, data: Any) -> Any:
        # Both names may arrive; `reasoning` wins, and a null one is the default.
        if isinstance(data, dict):
            value = data.get("reasoning", data.get("reasoning_effort"))
            data = {k: v for k, v in data.items() if k not in ("reasoning", "reasoning_effort")}
            if value is not None:
                data["reasoning"] = value
        return data


class CompletionRequest(Sampling):
    prompt: str
    logprobs: int | None = Field(None, ge=0, le=5, strict=True)  # the legacy API's form: how many top alternatives

    @property
    def logprob_count(self) -> int | None:
        return self.logprobs
