"""Swiss AI Apertus calls: `<|tools_prefix|>[{"NAME": {...}}, ...]<|tools_suffix|>`, each call an object whose
one key is the tool's name and whose value is its arguments."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<|tools_prefix|>", "<|tools_suffix|>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OPEN,
        (State.AFTER, OPEN): Action.OPEN,
        (State.AFTER, CLOSE): Action.CLOSE,
    },
    keyed=True,
)
