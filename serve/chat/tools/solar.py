"""Upstage Solar Open calls: `<|tool_calls|><|tool_call:begin|>ID<|tool_call:name|>NAME<|tool_call:args|>{...}
<|tool_call:end|>...<|calls|>`. The model's own id is dropped (every call gets one of ours, which the template
writes back); the block's markers never reach the answer text."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

BLOCK, END_BLOCK = "<|tool_calls|>", "<|calls|>"
BEGIN, NAME, ARGS, END = "<|tool_call:begin|>", "<|tool_call:name|>", "<|tool_call:args|>", "<|tool_call:end|>"

SPEC = Spec(
    table={
        (State.TEXT, BLOCK): Action.CLOSE,
        (State.TEXT, END_BLOCK): Action.CLOSE,
        (State.TEXT, BEGIN): Action.ID,
        (State.AFTER, BEGIN): Action.ID,
        (State.CALL_ID, NAME): Action.NAME,
        (State.NAME, ARGS): Action.ARGS,
        (State.AFTER, END): Action.CLOSE,
        (State.AFTER, END_BLOCK): Action.CLOSE,
    },
)
