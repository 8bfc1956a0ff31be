"""IBM Granite 3.x calls: `<|tool_call|>[{"name": ..., "arguments": {...}}, ...]`."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

TOOL_CALL = "<|tool_call|>"

SPEC = Spec(
    table={
        (State.TEXT, TOOL_CALL): Action.OPEN,
        (State.AFTER, TOOL_CALL): Action.OPEN,
    },
)
