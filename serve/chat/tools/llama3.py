"""Llama 3.x calls: the whole answer is `{"name": ..., "parameters": {...}}` (several joined by `;`), or the
same after `<|python_tag|>`. A bare object that names no tool is answer text after all."""

from __future__ import annotations

from serve.chat.tools.markup import Action, Spec, State

PYTHON_TAG = "<|python_tag|>"

SPEC = Spec(
    table={
        (State.START, PYTHON_TAG): Action.OBJECT,
        (State.TEXT, PYTHON_TAG): Action.OBJECT,
        (State.AFTER, ";"): Action.OBJECT,
        (State.AFTER, PYTHON_TAG): Action.OBJECT,
    },
    bare_object=True,
)
