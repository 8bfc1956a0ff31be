"""Hermes / Qwen 2.5 / Qwen 3 calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one or several,
with answer text around them."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<tool_call>", "</tool_call>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OBJECT,
        (State.AFTER, CLOSE): Action.CLOSE,
        (State.AFTER, OPEN): Action.OBJECT,  # the model forgot to close the previous call
    },
)
