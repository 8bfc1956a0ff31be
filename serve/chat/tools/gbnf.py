"""GBNF pieces every tool grammar uses: a string literal, and text that never contains a given literal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


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


def offered(tools: list[dict[str, Any]], names: list[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Each tool the grammar may call: its index among all the tools (which names its rules), its name and its
    parameters schema."""
    for i, tool in enumerate(tools):
        fn = tool["function"]
        if fn["name"] in names:
            yield i, fn["name"], fn.get("parameters") or {}


def declared(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """A parameters schema's declared properties (none where it declares no object of them) and required keys."""
    props = schema.get("properties")
    return (props if isinstance(props, dict) else {}), set(schema.get("required") or ())
