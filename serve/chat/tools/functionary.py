"""Functionary v3.1 (Llama 3.1 based) calls: `<function=NAME>{...}</function>`, one after another."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<function=", "</function>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OPEN,
        (State.AFTER, OPEN): Action.OPEN,
        (State.NAME, ">"): Action.ARGS,
        (State.AFTER, CLOSE): Action.CLOSE,
    },
    bare_names=True,
)
