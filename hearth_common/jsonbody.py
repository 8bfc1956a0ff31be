"""A request body -> one JSON object, refusing what is valid JSON but would crash a handler further on.

Python's json module accepts `NaN`, `Infinity` and `1e999` (not finite), lone surrogate escapes (`"\\ud800"`, a
str that cannot be encoded, so the tokenizer fails), nesting until the interpreter's recursion limit, and integers
up to 4,300 digits before it raises a ValueError. Each is refused here with a `BodyError`, whose message is the 400's.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # arrays and objects inside each other; real requests (JSON schemas included) stay far below


class BodyError(ValueError):
    """The body is not a JSON object we accept; the message says why, for a 400."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"the number {text[:20]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BodyError(f"{name} is not valid JSON")


def _depth_over(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_object(raw: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a dict; raises BodyError with a one-line reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("the body is not valid UTF-8") from None
    try:
        data = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"the body is nested more than {max_depth} levels deep") from None
    except ValueError as err:  # JSONDecodeError, and int()'s digit limit
        reason = "a number in it is too long" if "digits" in str(err) else str(err)
        raise BodyError(f"the body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise BodyError("the body must be a JSON object")
    if text.count("[") + text.count("{") > max_depth and _depth_over(data, max_depth):
        raise BodyError(f"the body is nested more than {max_depth} levels deep")
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(data):
        raise BodyError("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    # json.loads pairs surrogate escapes into one character; a lone one stays and cannot be encoded.
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
