"""OpenAI Responses requests (POST /v1/responses) at the API edge.

The fields hearth reads; unknown fields are ignored (`include`, `truncation`, `metadata`, `service_tier`,
...). Input items other than messages, `function_call`, `function_call_output` and `reasoning`, content
parts other than text and (in a message) `input_image`, and tools other than functions are refused with a 400
naming them. An image's `image_url` (a data: URL) is checked by the chat core; a `file_id` is refused by
serve/api/responses.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve.chat.schemas import MAX_MESSAGES, MAX_TOOLS, TOOL_NAME

ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")
TEXT_PARTS = ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")
IMAGE_PART = "input_image"
# effort -> the API's reasoning level (`xhigh` and `max` are the highest a template knows)
EFFORTS = {
    "none": "none",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    type: Literal["input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text"]
    text: str = ""
    refusal: str = ""

    @property
    def value(self) -> str:
        return self.refusal if self.type == "refusal" else self.text


class ImagePart(_Model):
    type: Literal["input_image"]
    image_url: str | None = None  # a data: URL, or a remote URL the chat core fetches where its host is allowed
    file_id: str | None = None  # refused: this server keeps no files
    detail: str | None = None  # low/high/auto: the projector decides the resolution here


def _text_parts(v: Any, images: bool = False) -> Any:
    """Content as a list of parts (a string is one part), each a text part (or, `images`, an image part)."""
    if isinstance(v, str):
        return [{"type": "input_text", "text": v}]
    if isinstance(v, list):
        known = (*TEXT_PARTS, IMAGE_PART) if images else TEXT_PARTS
        for part in v:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in known:
                shown = (*TEXT_PARTS[:3], IMAGE_PART) if images else TEXT_PARTS[:3]
                raise ValueError(f"{kind!r} content parts are not supported here; this server reads {', '.join(shown)}")
    return v


class MessageItem(_Model):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, v: Any) -> Any:
        return _text_parts(v, images=True)

    @property
    def text(self) -> str:
        return "".join(p.value for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for p in self.content)


class FunctionCallItem(_Model):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"

    @field_validator("arguments")
    @classmethod
    def _json(cls, v: str) -> str:
        try:
            json.loads(v or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err.msg} at character {err.pos})") from err
        return v


class FunctionCallOutputItem(_Model):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: list[TextPart] = Field(default_factory=list)

    @field_validator("output", mode="before")
    @classmethod
    def _parts(cls, v: Any) -> Any:
        return _text_parts(v)

    @property
    def text(self) -> str:
        return "".join(p.value for p in self.output)


class ReasoningItem(_Model):
    type: Literal["reasoning"]
    summary: list[TextPart] = Field(default_factory=list)
    content: list[TextPart] | None = None

    @property
    def text(self) -> str:
        """The reasoning text (its summary when no text came back)."""
        parts = self.content or self.summary
        return "\n\n".join(p.text for p in parts if p.text)


Item = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem, Field(discriminator="type")]


class FunctionTool(_Model):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _function_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") != "function":
            raise ValueError(f"tool type {data.get('type')!r} is not supported; this server runs function tools only")
        return data


class NamedFunction(_Model):
    type: Literal["function"]
    name: str = Field(min_length=1)


class Reasoning(_Model):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    # a summary of the reasoning, asked for: the reasoning item's `summary` holds the reasoning as one summary_text
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("a json_schema format needs its schema")
        return self


class TextConfig(_Model):
    format: TextFormat = Field(default_factory=TextFormat)


class ResponsesRequest(_Model):
    model: str | None = None
    input: list[Item] = Field(max_length=MAX_MESSAGES)  # a string is one user message
    instructions: str | None = None
    reasoning: Reasoning | None = None
    # numbers and booleans strict, as chat's Sampling: "8" is not 8, true is not 1, a number is finite
    max_output_tokens: int | None = Field(None, ge=1, strict=True)
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool = Field(True, strict=True)
    text: TextConfig | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0, strict=True, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True, allow_inf_nan=False)
    stream: bool = Field(False, strict=True)
    store: bool = Field(True, strict=True)
    previous_response_id: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _known_items(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [{"type": "message", "role": "user", "content": v}]
        if isinstance(v, list):
            if not v:
                raise ValueError("input must not be empty")
            for item in v:
                kind = item.get("type", "message") if isinstance(item, dict) else None
                if kind not in ITEM_TYPES:
                    raise ValueError(
                        f"{kind!r} input items are not supported; this server reads {', '.join(ITEM_TYPES)} items"
                    )
            return [{**item, "type": item.get("type", "message")} for item in v]  # a message may omit its type
        return v

    @property
    def level(self) -> str:
        effort = self.reasoning.effort if self.reasoning else None
        return EFFORTS[effort] if effort else "medium"
