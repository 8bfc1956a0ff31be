"""Mistral calls: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral 7B v0.3, Nemo) and
`[TOOL_CALLS]NAME[ARGS]{...}` (Mistral Small 3.2, Devstral, Magistral; `[CALL_ID]ID` may sit before
`[ARGS]`). Ids are 9 letters and digits, the only kind Mistral's templates accept back in the history."""

from __future__ import annotations

from serve.chat.tools.events import mistral_id
from serve.chat.tools.markup import Action, Spec, State

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"

SPEC = Spec(
    table={
        (State.TEXT, TOOL_CALLS): Action.OPEN,
        (State.AFTER, TOOL_CALLS): Action.OPEN,
        (State.NAME, ARGS): Action.ARGS,
        (State.NAME, CALL_ID): Action.CALL_ID,
        (State.CALL_ID, ARGS): Action.ARGS,
    },
    bare_names=True,
    new_id=mistral_id,
)
