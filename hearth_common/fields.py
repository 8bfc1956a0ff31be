"""The JSON types of the request fields every OpenAI-compatible server reads the same way.

The router checks these before it forwards (so a string where a number belongs is a 400 at the edge, never a
backend failure); serve's pydantic models (serve/chat/schemas.py `Sampling`) hold the same types, strictly, with
their ranges. Ranges stay the model server's business: backends differ in what they support.
"""

from __future__ import annotations

from typing import Any

INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "top_k", "seed", "n")
NUMBER_FIELDS = ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
BOOLEAN_FIELDS = ("stream",)


JSON_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _kind(value: Any) -> str:
    return JSON_KINDS.get(type(value), type(value).__name__)


def type_error(body: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for the first field of the wrong JSON type, None when all are right. null is allowed."""
    for name in INTEGER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return name, f"`{name}` must be an integer, not {_kind(value)}"
    for name in NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return name, f"`{name}` must be a number, not {_kind(value)}"
    for name in BOOLEAN_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            return name, f"`{name}` must be a boolean, not {_kind(value)}"
    return None
