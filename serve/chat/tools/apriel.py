"""ServiceNow Apriel 1.5 / 1.6 calls: `<tool_calls>[{"name": ..., "arguments": {...}}, ...]</tool_calls>`."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<tool_calls>", "</tool_calls>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OPEN,
        (State.AFTER, OPEN): Action.OPEN,
        (State.AFTER, CLOSE): Action.CLOSE,
    },
)
