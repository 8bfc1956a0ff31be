"""NVIDIA Nemotron Nano v2 calls: `<TOOLCALL>[{"name": ..., "arguments": {...}}, ...]</TOOLCALL>`."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

OPEN, CLOSE = "<TOOLCALL>", "</TOOLCALL>"

SPEC = Spec(
    table={
        (State.TEXT, OPEN): Action.OPEN,
        (State.AFTER, OPEN): Action.OPEN,
        (State.AFTER, CLOSE): Action.CLOSE,
    },
)
