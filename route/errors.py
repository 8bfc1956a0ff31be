"""The router's exception tree; one handler in app.py renders each as an OpenAI error body.

RouteError                  base: an HTTP status, an OpenAI error type and code
 +-- BadRequest             400 invalid_request_error (bad JSON, bad registration, backend /health failed)
 +-- ModelTooLarge          400 model_too_large: the model cannot fit the stack's memory budget even alone
 +-- Unauthorized           401 authentication_error (admin or API key missing or wrong)
 +-- Forbidden              403 permission_error (admin writes with no admin key and no --open-admin)
 +-- NotFound               404 not_found (unknown backend name)
 +-- ModelNotFound          404 model_not_found (no backend ever served the name)
 +-- MethodNotAllowed       405 (GET on a POST-only path)
 +-- RequestTimeout         408 headers or body not received within --header-timeout / --body-timeout
 +-- PayloadTooLarge        413 request body over --max-body
 +-- HeadersTooLarge        431 request headers over --max-header-bytes or --max-headers
 +-- UpstreamFailed         502 every candidate failed before the response started
 +-- NoHealthyBackend       503 backends serve the model but none is healthy
 +-- ModelNotLoaded         503 the model did not load in time, or failed to load
 +-- UpstreamTimeout        504 the backend did not answer within --timeout
 +-- LoopDetected           508 the request has passed through this router already (a backend points back at it)
ConfigError                 bad settings or config file: the CLI prints one line and exits 2
"""

from __future__ import annotations

from typing import Any

from hearth_common.errors import error_body


class RouteError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class BadRequest(RouteError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ModelTooLarge(RouteError):
    status = 400
    type = "invalid_request_error"
    code = "model_too_large"


class Unauthorized(RouteError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(RouteError):
    status = 403
    type = "permission_error"
    code = "admin_api_closed"


class NotFound(RouteError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(RouteError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(RouteError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(RouteError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(RouteError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(RouteError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class UpstreamFailed(RouteError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class NoHealthyBackend(RouteError):
    status = 503
    type = "server_error"
    code = "no_healthy_backend"


class ModelNotLoaded(RouteError):
    status = 503
    type = "server_error"
    code = "model_not_loaded"


class UpstreamTimeout(RouteError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


class LoopDetected(RouteError):
    status = 508
    type = "invalid_request_error"
    code = "loop_detected"


class ConfigError(Exception):
    """Bad settings: a one-line message for the CLI."""


class BackendError(Exception):
    """A backend failed at the transport level; upstream.py maps the HTTP client's exceptions to these."""


class BackendUnreachable(BackendError):
    """Connection refused or reset, or the body cut short."""


class BackendTimeout(BackendError):
    """No answer, or no next bytes, within the timeout."""
