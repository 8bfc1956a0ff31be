"""Request models at the API edge (OpenAI fields plus our extensions). Unknown fields are ignored."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Reasoning = Literal["none", "minimal", "low", "medium", "high"]
ChannelName = Literal["analysis", "commentary", "final"]
# OpenAI's rule for function names
TOOL_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    detail: str | None = None  # OpenAI's low/high/auto: the projector decides the resolution here


class ImagePart(BaseModel):
    """OpenAI's image part; the other APIs translate theirs into it (a data: URL)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url"]
    image_url: ImageURL


# mtmd's marker (serve/engine/vision.py): where an image stands in the rendered prompt
IMAGE_MARKER = "<__media__>"


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; an object is taken as is

    @field_validator("arguments")
    @classmethod
    def _json(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(v, str):
            try:
                json.loads(v or "{}")
            except json.JSONDecodeError as err:
                raise ValueError(f"not valid JSON ({err.msg} at character {err.pos})") from err
        return v

    @property
    def parsed(self) -> Any:
        """The arguments as templates expect them: an object, not its JSON text."""
        return json.loads(self.arguments or "{}") if isinstance(self.arguments, str) else self.arguments


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    # earlier reasoning riding along on an assistant turn, under any of the names clients use
    reasoning_content: str | None = None
    reasoning: str | None = None
    thinking: str | dict[str, Any] | None = None  # a string, or the `thinking` object of our own responses

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text if isinstance(p, TextPart) else IMAGE_MARKER for p in self.content)
        return self.content or ""

    @property
    def image_urls(self) -> list[str]:
        return [p.image_url.url for p in self.image_parts]

    @property
    def image_parts(self) -> list[ImagePart]:
        if not isinstance(self.content, list):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]

    def reasoning_text(self, key: str) -> str | None:
        value = getattr(self, key)
        if isinstance(value, dict):  # our response's thinking object: its channels' texts
            parts = [value[c] for c in ("analysis", "commentary") if isinstance(value.get(c), str)]
            return "\n\n".join(parts) if parts else None
        return value

    @model_validator(mode="after")
    def _role_fields(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of an object; none means no parameters
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if v.get("type", "object") != "object":
            raise ValueError("the parameters schema must describe an object ('type': 'object')")
        if not isinstance(v.get("properties", {}), dict) or not all(
            isinstance(p, dict) for p in v.get("properties", {}).values()
        ):
            raise ValueError("'properties' must map each parameter name to a schema object")
        required = v.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("'required' must be a list of parameter names")
        return v


class Tool(BaseModel):
    """A tool offered to the model. The client's own object is what the template renders (`as_sent`)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: FunctionDef
    _sent: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_sent(cls, data: Any, handler: Any) -> Tool:
        tool = handler(data)
        if isinstance(data, dict):
            tool._sent = data
        return tool

    @property
    def as_sent(self) -> dict[str, Any]:
        """The tool as the client sent it, as every API's tools reach the template: a missing `parameters` becomes
        an empty object schema, which templates that list parameters need, and `function.strict` is dropped: it is
        an API flag (openai-agents sends it on every tool), not part of the tool the model was trained to read, and
        the grammar holds calls to the schema either way."""
        sent = self._sent or self.model_dump(exclude_none=True)
        fn = sent.get("function", {})
        if isinstance(fn, dict):
            fn = {k: v for k, v in fn.items() if k != "strict"}
            if fn.get("parameters") is None:
                fn["parameters"] = {"type": "object", "properties": {}}
            sent = {**sent, "function": fn}
        return sent


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


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
    max_tokens: int | None = Field(
        None, ge=1, strict=True, validation_alias=AliasChoices("max_tokens", "max_completion_tokens")
    )
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
    cache_prompt: bool = Field(
        True, strict=True
    )  # llama.cpp's name: false decodes the whole prompt, reusing no cached prefix

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
MAX_TOOLS = 128  # OpenAI's own limit
MAX_TEMPLATE_KWARGS = 32
RESERVED_TEMPLATE_VARIABLES = frozenset(
    {"messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token", "raise_exception",
     "reasoning_effort", "strftime_now"}
)  # fmt: skip


class ChatRequest(Sampling):
    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    response_format: ResponseFormat | None = None
    reasoning: Reasoning = Field("medium", validation_alias=AliasChoices("reasoning", "reasoning_effort"))
    # thinking tokens before the server ends the thinking itself (serve/engine/budget.py); None: unbounded,
    # except where a grammar holds the answer (serve/chat/budget.py)
    thinking_budget_tokens: int | None = Field(None, ge=0, strict=True)
    separate_thinking: bool = True
    include_channels: list[ChannelName] | None = None
    developer_instructions: str | None = None
    # more variables for the chat template (vLLM's and llama.cpp's name), e.g. {"enable_thinking": true}
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=MAX_TEMPLATE_KWARGS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = Field(True, strict=True)
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

    @field_validator("chat_template_kwargs")
    @classmethod
    def _own_variables(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # the variables the server sets itself stay its own: a request changes them through their own fields
        taken = sorted(set(v or ()) & RESERVED_TEMPLATE_VARIABLES)
        if taken:
            raise ValueError(f"{', '.join(taken)} cannot be set through chat_template_kwargs")
        return v

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, v: list[Message]) -> list[Message]:
        if not v:
            raise ValueError("messages must not be empty")
        return v

    @model_validator(mode="before")
    @classmethod
    def _reasoning_alias(cls, data: Any) -> Any:
        # Both names may arrive; `reasoning` wins, and a null one is the default. The object form
        # ({"effort": ...}, OpenRouter's {"enabled": false}) carries the level inside.
        if isinstance(data, dict):
            value = data.get("reasoning", data.get("reasoning_effort"))
            data = {k: v for k, v in data.items() if k not in ("reasoning", "reasoning_effort")}
            if isinstance(value, dict):
                value = "none" if value.get("enabled") is False else value.get("effort")
            if value is not None:
                data["reasoning"] = value
        return data

    @property
    def tools_active(self) -> bool:
        """Tools are offered and the model may call them."""
        return bool(self.tools) and self.tool_choice != "none"


class CompletionRequest(Sampling):
    prompt: str
    logprobs: int | None = Field(None, ge=0, le=5, strict=True)  # the legacy API's form: how many top alternatives

    @property
    def logprob_count(self) -> int | None:
        return self.logprobs
