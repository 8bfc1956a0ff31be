"""A pydantic ValidationError as one line naming the field: `models.0.port: Input should be ...`."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(err: ValidationError, *, default: str = "value") -> str:
    """The first error as `where: message` (`default` names the place of an error about the whole value)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or default
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def error_place(err: ValidationError) -> str | None:
    """The dotted place of the first error (an OpenAI error's `param`), None for the whole value."""
    return ".".join(str(p) for p in err.errors()[0]["loc"]) or None
