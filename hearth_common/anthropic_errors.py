"""Anthropic's error body, for every error on the Anthropic paths (/v1/messages...): the model server's and the
router's, from one table."""

from __future__ import annotations

import json
from typing import Any

PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})

# HTTP status -> Anthropic's error type (docs.anthropic.com, "Errors"); others by class below.
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def owns(path: str) -> bool:
    return path in PATHS


def error_type(status: int) -> str:
    return TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """`details`: the machine-readable reason some errors carry (`{"error_code": ...}`), which SDKs act on."""
    error: dict[str, Any] = {"type": error_type(status), "message": message}
    if details:
        error["details"] = details
    return {"type": "error", "error": error}


def error_event(message: str, status: int = 500) -> bytes:
    """A stream's `error` event (after the response started, the status can no longer say it)."""
    return b"event: error\ndata: " + json.dumps(error_body(status, message)).encode() + b"\n\n"
