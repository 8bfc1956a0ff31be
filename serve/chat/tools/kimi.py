"""Kimi K2 calls: `<|tool_calls_section_begin|>`, then per call `<|tool_call_begin|>functions.NAME:INDEX
<|tool_call_argument_begin|>{...}<|tool_call_end|>`, then `<|tool_calls_section_end|>`. The call's id
(`functions.NAME:INDEX`) names the tool; every call gets an id of ours."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_BEGIN, ARGS_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
PREFIX = "functions."


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
