"""Chat prompts: the GGUF's own chat template, rendered in jinja2's sandbox as transformers'
`apply_chat_template(messages, tools=...)` renders it, plus our request extensions.

Messages reach the template in the form HF templates expect (`template_messages`): content as text (null is
empty text, text parts are joined), tool-call arguments parsed into objects, earlier reasoning under
`reasoning_content` and `thinking` (transformers' own aliasing, so Qwen3's and gpt-oss's templates both find
it) and `reasoning` (Solar Open's template reads only that), `name` and `tool_call_id` as sent. Unknown fields never reach the template.

Tools: a template that renders calls in a format serve/chat/tools knows gets the tools itself (`tools`); one that
knows no tools gets them, with the generic call format, in its system message, and its history's calls and
results as plain turns (serve/chat/tools/generic.py).

harmony (gpt-oss): `reasoning` feeds the template's `reasoning_effort` (the system message's Reasoning line) and
`developer_instructions` becomes the developer message. Other models: the instructions are prepended to the
system message, and developer messages merge into it when the template knows no developer role. Where the
template reads `enable_thinking` it gets what llama.cpp's server passes: true, so a template that keeps thinking
off unless asked (Gemma 4) thinks, and false for a reasoning level of `none` (Qwen3's thinking off); the request's
chat_template_kwargs win over both.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateError, UndefinedError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from serve.chat.channels import THINK_TAGS, Format, Thinking, ThinkTags, message_end
from serve.chat.tools import generic, history
from serve.chat.tools.detect import ToolSupport, detect
from serve.chat.tools.formats import FORMATS
from serve.chat.tools.request import ToolRequest
from serve.errors import ConfigError, InvalidRequest

Messages = list[dict[str, Any]]
Tools = list[dict[str, Any]]

# Names a message's reasoning arrives under, in transformers' order of preference.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# What a template's reasoning_effort can say; the API's other levels map to the nearest one.
TEMPLATE_LEVELS = {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high"}
# Tencent Hy3's templates refuse any level but these three; without one they do not think (`medium`, our default,
# keeps that default).
NO_THINK_LEVELS = {"none": "no_think", "minimal": "no_think", "low": "low", "medium": "no_think", "high": "high"}


class TemplateRaised(TemplateError):
    """The template's own `raise_exception(message)`: it refuses the client's messages (a 400 with its words)."""


def _raise(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: transformers marks the assistant's tokens with it (LFM2.5's
    template uses it); the prompt is its body as written."""

    tags = {"generation"}  # noqa: RUF012 - the type jinja2 declares it with

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, GenerationBlock]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


# A plain fallback for GGUFs without a template.
FALLBACK = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    format: Format
    bos_token: str = ""
    eos_token: str = ""

    @property
    def thinks(self) -> bool:
        """Whether the model thinks before answering (so a grammar waits for the thinking to end)."""
        return self.format is not Format.THINK or "<think>" in self.source

    @property
    def think_tags(self) -> ThinkTags:
        """The markers of the thinking block (`<think>` for harmony too, where no grammar or budget reads them)."""
        return THINK_TAGS.get(self.format, THINK_TAGS[Format.THINK])

    @property
    def message_end(self) -> str:
        """The end-of-generation token after which the turn goes on (harmony's `<|end|>`; "" where none)."""
        return message_end(self.format)

    @cached_property
    def kept_tokens(self) -> frozenset[str]:
        """Control tokens of the family's format whose text the parsers read (none for `<think>`'s default row)."""
        return frozenset(self.think_tags.keep)

    @cached_property
    def template(self) -> Any:
        return _env().from_string(self.source)

    @property
    def levels(self) -> dict[str, str]:
        """The reasoning_effort the template gets for each of the API's levels."""
        return NO_THINK_LEVELS if "'no_think'" in self.source else TEMPLATE_LEVELS

    @cached_property
    def tool_support(self) -> ToolSupport:
        """The call format this template speaks (rendered once, from a probe call)."""
        return detect(lambda messages, tools: self._render(messages, tools, add_generation_prompt=False))

    def render(
        self,
        messages: Messages,
        reasoning: str = "medium",
        developer_instructions: str | None = None,
        tools: ToolRequest | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt; `variables`: the request's own template variables (chat_template_kwargs), over ours."""
        messages = self._arrange(messages, developer_instructions)
        native = self.tool_support.native
        tool_list = tools.tools if tools and self.tool_support.takes_tools else None
        if not native and (tools or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)):
            text = generic.instructions(tools.tools, tools.choice, tools.parallel) if tools else None
            messages = generic.plain_history(messages, text)
        write = FORMATS[self.tool_support.format].write
        if native and not self.tool_support.writes_calls and write is not None:
            messages = history.calls_in_text(messages, write)
        extra: dict[str, Any] = {}
        if "enable_thinking" in self.source:  # llama.cpp's server passes it to every template, true unless `none`
            extra["enable_thinking"] = reasoning != "none"
        extra.update(variables or {})
        try:
            return self._render(
                messages,
                tool_list,
                add_generation_prompt=True,
                reasoning_effort=self.levels.get(reasoning, reasoning),
                **extra,
            )
        except TemplateRaised as err:
            raise InvalidRequest(f"the chat template rejected these messages: {err}", param="messages") from err
        except Exception as err:  # the template failed of itself (a missing variable, a None): a 400 saying so
            raise InvalidRequest(
                f"the model's chat template failed on these messages: {type(err).__name__}: {err}", param="messages"
            ) from err

    def check(self) -> None:
        """Load time: the template renders a plain conversation, or ConfigError says why in one line."""
        try:
            self.render([{"role": "user", "content": "Hello."}])
        except InvalidRequest as err:
            raise ConfigError(f"the model's chat template cannot render a plain conversation: {err.message}") from None

    def _render(self, messages: Messages, tools: Tools | None, add_generation_prompt: bool, **extra: Any) -> str:
        # The variables transformers passes: messages, tools (None without), documents, add_generation_prompt,
        # the special tokens, then the caller's own. A template that iterates over `tools` unconditionally (Hermes 3's
        # tool-use template) fails on None; llama.cpp's server renders it with no tools, and so do we: an empty list.
        variables = {
            "messages": messages,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        try:
            return str(self.template.render(tools=tools, **variables))
        except (TypeError, UndefinedError):
            if tools is not None:
                raise
            return str(self.template.render(tools=[], **variables))

    def _arrange(self, messages: Messages, instructions: str | None) -> Messages:
        if self.format is Format.HARMONY:
            if instructions:
                at = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
                messages = [*messages[:at], {"role": "developer", "content": instructions}, *messages[at:]]
            return messages
        if "developer" not in self.source:
            messages = [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
        if instructions:
            if messages and messages[0]["role"] == "system":
                first = messages[0]
                messages = [{**first, "content": f"{instructions}\n\n{first['content']}"}, *messages[1:]]
            else:
                messages = [{"role": "system", "content": instructions}, *messages]
        return messages

    def thinking(self, prompt: str) -> Thinking:
        if self.format is Format.HARMONY:
            return Thinking.HARMONY
        tags = self.think_tags
        if starts_in_thinking(prompt, tags):
            return Thinking.OPEN
        if self.thinks and not prompt.rstrip().endswith(tags.close):
            return Thinking.MAY
        return Thinking.NONE


def starts_in_thinking(prompt: str, tags: ThinkTags = THINK_TAGS[Format.THINK]) -> bool:
    """The template opened a thinking block itself, so the output begins inside it."""
    return prompt.rfind(tags.open) > prompt.rfind(tags.close)


def chat_template(source: str | None, architecture: str, bos: str, eos: str) -> ChatTemplate:
    """The model's template, checked: one that cannot render a plain conversation raises ConfigError (the model
    fails to load with that reason) instead of failing every request."""
    harmony = architecture == "gpt-oss" or (source is not None and "<|channel|>" in source)
    template = ChatTemplate(source or FALLBACK, Format.HARMONY if harmony else Format.THINK, bos, eos)
    template.check()
    if harmony:
        return template
    return ChatTemplate(template.source, thinking_format(template), bos, eos)


def thinking_format(template: ChatTemplate) -> Format:
    """The family whose thinking markers the template writes, in its source or in the prompt it opens (Kimi K3 and
    Hy3 build theirs from parts; Apriel 1.5's names only the close); `<think>` when none is found."""
    prompt = template.render([{"role": "user", "content": "Hello."}])
    source = template.source
    found = (f for f, tags in THINK_TAGS.items() if _names(tags, prompt, source))
    return next(found, Format.THINK)


def _names(tags: ThinkTags, prompt: str, source: str) -> bool:
    """The template is of the family `tags` belong to: its signs, or else its markers, are in the template."""
    if tags.signs:  # a family whose markers other templates use too (Solar's `<|end|>`)
        return any(s in source or s in prompt for s in tags.signs)
    return tags.open in prompt or tags.open in source or tags.close in source


# -- request messages -> what templates read ------------------------------------------------------------------


def template_messages(messages: list[Any]) -> Messages:
    """Validated request messages (serve.schemas.Message) as HF chat templates expect them."""
    return [template_message(m) for m in messages]


def template_message(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.parsed}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    for key in REASONING_FIELDS:
        value = m.reasoning_text(key)
        if value is not None:
            out[key] = value
    # transformers' aliasing: the first reasoning found under all of its names (a message's own `thinking` kept)
    reasoning = next((out[k] for k in REASONING_FIELDS if k in out), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
        # and under `reasoning` (vLLM's name), the one Solar Open's template reads
        out.setdefault("reasoning", reasoning)
    return out
