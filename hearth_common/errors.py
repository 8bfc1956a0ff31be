"""The OpenAI error body, the one shape every error of every program leaves in."""

from __future__ import annotations

import json
from typing import Any


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_json(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(error_body(message, type_, code, param)).encode()


def error_type(status: int) -> str:
    """OpenAI's error type for an HTTP status."""
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
