"""Ollama's error body and model names, for every answer on the Ollama paths (/api/...): the model server's and
the router's.

Ollama answers an error as `{"error": "..."}` with the HTTP status (400 bad input, 404 unknown model); once a
stream has started, as a last NDJSON line of that body. Clients write model names as `name:tag`, and a missing
tag is `latest`: `demo-think:latest` is the model `demo-think`.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "/api/"
LATEST = ":latest"


def owns(path: str) -> bool:
    return path.startswith(PREFIX)


def error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def error_line(message: str) -> bytes:
    """A stream's last line (after the response started, the status can no longer say it)."""
    return json.dumps(error_body(message)).encode() + b"\n"


def model_name(written: str) -> str:
    """The model a client's name means: its `:latest` tag dropped (any other tag is part of the name)."""
    return written.removesuffix(LATEST)


def not_found(written: str) -> str:
    """Ollama's 404 message for a model it does not have."""
    return f"model '{written}' not found"
