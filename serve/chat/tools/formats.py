"""The call formats hearth reads, one table row each: its parser's spec, whether it carries several calls in
one answer, and the key its call objects hold the arguments under (what the tool grammar writes)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType

from serve.chat.tools import granite, hermes, llama3, mistral
from serve.chat.tools.events import IdMaker, mistral_id, openai_id
from serve.chat.tools.markup import Spec


class ToolFormat(enum.Enum):
    HERMES = "hermes"  # Qwen 2.5/3, Hermes: <tool_call>{...}</tool_call>
    LLAMA3 = "llama3"  # {"name": ..., "parameters": ...} as the answer, or after <|python_tag|>
    MISTRAL = "mistral"  # [TOOL_CALLS][{...}, ...]
    MISTRAL_ARGS = "mistral-args"  # [TOOL_CALLS]NAME[ARGS]{...}
    GRANITE = "granite"  # <|tool_call|>[{...}, ...]
    HARMONY = "harmony"  # gpt-oss: to=functions.NAME in a message header
    GENERIC = "generic"  # a template that knows no tools: Hermes markup, taught in the system message


@dataclass(frozen=True)
class FormatInfo:
    spec: Spec | None  # None: harmony, read by serve/chat/channels.py and serve/chat/tools/harmony.py
    parallel: bool  # can one answer carry several calls
    args_key: str = "arguments"
    new_id: IdMaker = openai_id


FORMATS = MappingProxyType({
    ToolFormat.HERMES: FormatInfo(hermes.SPEC, parallel=True),
    ToolFormat.GENERIC: FormatInfo(hermes.SPEC, parallel=True),
    # Llama 3.1's own template refuses a history turn with more than one call.
    ToolFormat.LLAMA3: FormatInfo(llama3.SPEC, parallel=False, args_key="parameters"),
    ToolFormat.MISTRAL: FormatInfo(mistral.SPEC, parallel=True, new_id=mistral_id),
    ToolFormat.MISTRAL_ARGS: FormatInfo(mistral.SPEC, parallel=True, new_id=mistral_id),
    ToolFormat.GRANITE: FormatInfo(granite.SPEC, parallel=True),
    # <|call|> ends generation: one call per turn.
    ToolFormat.HARMONY: FormatInfo(None, parallel=False),
})  # fmt: skip
