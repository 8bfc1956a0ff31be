"""A pydantic ValidationError as one line naming the field: `models.0.port: Input should be ...`."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(err: ValidationError, *, flags: bool = False, default: str = "value") -> str:
    """The first error as `where: message`; `flags` spells the place as a command-line flag (`--max-queue`)."""
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if flags:
        where = "--" + "-".join(parts).replace("_", "-") if parts else default
    else:
        where = ".".join(parts) or default
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def error_place(err: ValidationError) -> str | None:
    """The dotted place of the first error (an OpenAI error's `param`), None for the whole value."""
    return ".".join(str(p) for p in err.errors()[0]["loc"]) or None
