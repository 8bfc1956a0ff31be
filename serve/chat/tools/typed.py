"""Parameter values that a format writes as text (XML-style and Gemma calls, pythonic literals) made JSON values,
typed by the tool's schema: `<parameter=n>3</parameter>` is the number 3 where `n` is an integer, the text "3"
where it is a string.

The rule: a value is text, unless it reads as a JSON (or Python) literal of a type other than string that the
schema allows (any such type where the schema says none)."""

from __future__ import annotations

import json
from typing import Any

PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def schema_types(schema: Any) -> set[str]:
    """The JSON types a schema allows, from `type`, `anyOf`/`oneOf` branches and an `enum`/`const`."""
    if not isinstance(schema, dict):
        return set()
    t = schema.get("type")
    out = {t} if isinstance(t, str) else {x for x in t if isinstance(x, str)} if isinstance(t, list) else set()
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or ():
            out |= schema_types(branch)
    values = [*(schema.get("enum") or ()), *([schema["const"]] if "const" in schema else [])]
    if not out and values:
        out = {json_type(v) for v in values}
    return out


def is_text(schema: Any) -> bool:
    """The value is a string whatever it reads like (a parser may stream it as it comes)."""
    return schema_types(schema) == {"string"}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def typed(text: str, schema: Any) -> Any:
    """The JSON value `text` stands for under `schema`."""
    types = schema_types(schema)
    if types == {"string"}:
        return text
    stripped = text.strip()
    try:
        value = PYTHON_LITERALS[stripped] if stripped in PYTHON_LITERALS else json.loads(stripped)
    except ValueError:
        return text
    kind = json_type(value)
    if kind == "string":
        return text
    if not types or kind in types or (kind == "integer" and "number" in types):
        return value
    return text
