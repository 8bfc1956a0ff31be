"""GigaChat 3 / 3.1 calls, one a turn (the templates write only a turn's first): GigaChat 3 writes a `function
call` role message after the assistant's, `<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": ...,
"arguments": {...}}`; GigaChat 3.1 writes `<|function_call|>{"name": ..., "arguments": {...}}` in the assistant's."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

CALL, SEP = "function call<|role_sep|>", "<|message_sep|>"
CALL_31 = "<|function_call|>"

SPEC = Spec(
    table={
        (State.TEXT, CALL): Action.OBJECT,
        (State.TEXT, CALL_31): Action.OBJECT,
        (State.TEXT, SEP): Action.CLOSE,  # the end of the assistant's message: not answer text
        (State.AFTER, SEP): Action.CLOSE,
    },
)
