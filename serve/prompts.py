"""Chat prompts: the GGUF's own chat template, rendered in jinja2's sandbox, plus our request extensions.

harmony (gpt-oss): `reasoning` feeds the template's `reasoning_effort` (the system message's Reasoning line) and
`developer_instructions` becomes the developer message. Other models: the instructions are prepended to the
system message, and developer messages merge into it when the template knows no developer role.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from serve.channels import Format
from serve.errors import InvalidRequest

Messages = list[dict[str, str]]


def _raise(message: str) -> None:
    raise TemplateError(message)


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, ensure_ascii=False, indent=indent)
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
        return self.format is Format.HARMONY or "<think>" in self.source

    def render(self, messages: Messages, reasoning: str = "medium", developer_instructions: str | None = None) -> str:
        messages = self._arrange(messages, developer_instructions)
        try:
            return _env().from_string(self.source).render(
                messages=messages,
                add_generation_prompt=True,
                reasoning_effort=reasoning,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as err:
            raise InvalidRequest(f"the chat template rejected these messages: {err}", param="messages") from err

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
                messages = [{"role": "system", "content": f"{instructions}\n\n{first['content']}"}, *messages[1:]]
            else:
                messages = [{"role": "system", "content": instructions}, *messages]
        return messages


def starts_in_thinking(prompt: str) -> bool:
    """The template opened a <think> block itself, so the output begins inside it."""
    return prompt.rfind("<think>") > prompt.rfind("</think>")


def chat_template(source: str | None, architecture: str, bos: str, eos: str) -> ChatTemplate:
    harmony = architecture == "gpt-oss" or (source is not None and "<|channel|>" in source)
    return ChatTemplate(source or FALLBACK, Format.HARMONY if harmony else Format.THINK, bos, eos)


def as_dicts(messages: list[Any]) -> Messages:
    return [{"role": m.role, "content": m.text} for m in messages]
