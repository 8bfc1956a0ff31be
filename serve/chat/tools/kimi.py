"""Kimi K2 calls: `<|tool_calls_section_begin|>`, then per call `<|tool_call_begin|>functions.NAME:INDEX
<|tool_call_argument_begin|>{...}<|tool_call_end|>`, then `<|tool_calls_section_end|>`. The call's id
(`functions.NAME:INDEX`) names the tool. INDEX counts the calls of the whole conversation: Kimi's templates write
a history's calls so and name each tool result by it, so a call's id is that (`call_id`), the count going on
from the request's history (as Moonshot's serving and vLLM's and SGLang's kimi_k2 parsers do), not the number the
model wrote (a grammar lets it write any)."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_BEGIN, ARGS_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
PREFIX = "functions."


def call_id(name: str, number: int) -> str:
    """The id Kimi's templates give the conversation's call `number` (0, 1, ...): `functions.get_weather:0`."""
    return f"{PREFIX}{name}:{number}"


def tool_name(call_id: str) -> str:
    """`functions.get_weather:0` names get_weather."""
    name = call_id.strip().removeprefix(PREFIX)
    return name.rsplit(":", 1)[0] if ":" in name else name


SPEC = Spec(
    table={
        (State.TEXT, SECTION_BEGIN): Action.SKIP,
        (State.TEXT, CALL_BEGIN): Action.OPEN,
        (State.TEXT, SECTION_END): Action.SKIP,
        (State.NAME, ARGS_BEGIN): Action.ARGS,
        (State.AFTER, CALL_END): Action.SKIP,
        (State.AFTER, CALL_BEGIN): Action.OPEN,
        (State.AFTER, SECTION_END): Action.CLOSE,
    },
    bare_names=True,
    name_of=tool_name,
)
