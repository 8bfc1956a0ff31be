"""Ollama's `keep_alive`: how long a model stays loaded after a request. Pure, no I/O.

A number is seconds; a string is a Go duration (`"5m"`, `"1h30m"`, `"1.5s"`, `"300ms"`, `"-1m"`) or, as
OLLAMA_KEEP_ALIVE reads it, a bare number of seconds (`"300"`, `"-1"`). Zero unloads the model once the request
ends; a negative value keeps it loaded (no expiry). Absent or null: the model's own ttl from the stack file.
"""

from __future__ import annotations

import math
import re

FOREVER = math.inf
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


class KeepAliveError(ValueError):
    """Not a duration: a one-line message for a 400."""


def go_duration(text: str) -> float:
    """Seconds of a Go duration string (time.ParseDuration's syntax). Raises KeepAliveError."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    total, at = 0.0, 0
    while at < len(body):
        m = _PART.match(body, at)
        if m is None:
            raise KeepAliveError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * UNITS[m.group(2)]
        at = m.end()
    if not body:
        raise KeepAliveError(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: object) -> float | None:
    """Seconds to stay loaded after the request: None (absent: the model's ttl), 0 (unload now), FOREVER (negative),
    or a positive number. Raises KeepAliveError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise KeepAliveError("`keep_alive` must be a duration string or a number of seconds, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = float(value) if _NUMBER.fullmatch(value.strip()) else go_duration(value)
    else:
        raise KeepAliveError("`keep_alive` must be a duration string or a number of seconds")
    if math.isnan(seconds):
        raise KeepAliveError("`keep_alive` is not a number")
    return FOREVER if seconds < 0 else seconds
