"""GBNF pieces every tool grammar uses: a string literal, and text that never contains a given literal."""

from __future__ import annotations

import json


def lit(text: str) -> str:
    """A GBNF string literal."""
    return json.dumps(text)


def without(name: str, literal: str) -> str:
    """GBNF for any text that does not contain `literal` (whose first character occurs in it only once): the
    states of matching it, each rule the way back to state 0."""
    first = literal[0]
    step = [f"{name}-{k}" for k in range(1, len(literal))]
    rules = [f"{name} ::= ( [^{cls(first)}] | {lit(first)}+ {step[0]} )*"]
    for k in range(1, len(literal)):
        ch = literal[k]
        forward = f" | {lit(ch)} {step[k]}" if k < len(literal) - 1 else ""
        rules.append(f"{step[k - 1]} ::= [^{cls(ch)}{cls(first)}]{forward} | {lit(first)}+ {step[0]}")
    return "\n".join(rules)


def cls(ch: str) -> str:
    """A character for inside a GBNF [...] class."""
    return {"\\": "\\\\", "]": "\\]", "^": "\\^", "-": "\\-"}.get(ch, ch)
