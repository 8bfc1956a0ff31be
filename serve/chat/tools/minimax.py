"""MiniMax-M1 calls: `<tool_calls>`, one `{"name": ..., "arguments": {...}}` object a line, `</tool_calls>`.
(MiniMax-M2 writes XML-style calls: xml.MINIMAX.)"""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<tool_calls>", "</tool_calls>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.LINES,
        (State.LINES, CLOSE): Action.CLOSE,
        (State.AFTER, CLOSE): Action.CLOSE,  # the model broke its object off
        (State.TEXT, CLOSE): Action.SKIP,  # the section's text was answer text; its end is no answer
    },
)
