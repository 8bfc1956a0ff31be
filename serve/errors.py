"""The server's exception tree; app.py renders each as an OpenAI error body with its status.

ServeError
  InvalidRequest      400 invalid_request_error (bad JSON, wrong types, bad schema)
    SchemaTooLarge         400 schema_too_complex (a schema or its grammar past serve/chat/schema_limits' bounds)
    ContextLengthExceeded  400 context_length_exceeded (prompt plus max_tokens, or an input, beyond the context)
    UnsupportedEndpoint    400 unsupported_endpoint (chat on an --embeddings server, embeddings on a chat one)
  Unauthorized        401 authentication_error
  ModelNotFound       404 model_not_found
  RequestTimeout      408 (the body did not arrive in time)
  BodyTooLarge        413
  QueueFull           429 queue_full, with Retry-After
  Loading             503 (model not loaded yet)
  ShuttingDown        503 with Retry-After (the server stopped before the answer was complete)
ConfigError           bad command line or model path: one line, exit 2
"""

from __future__ import annotations

from hearth_common.errors import error_body


class ServeError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None
    details: dict[str, object] | None = None  # Anthropic's error.details (hearth_common/anthropic_errors.py)

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, object]:
        return error_body(self.message, self.type, self.code, self.param)


class InvalidRequest(ServeError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class SchemaTooLarge(InvalidRequest):
    code = "schema_too_complex"  # a JSON schema past what llama.cpp's grammar code takes safely (the message names the limit)


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedEndpoint(InvalidRequest):
    code = "unsupported_endpoint"


class Unauthorized(ServeError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotFound(ServeError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class RequestTimeout(ServeError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class BodyTooLarge(ServeError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class QueueFull(ServeError):
    status, type, code = 429, "rate_limit_error", "queue_full"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Loading(ServeError):
    status, type, code = 503, "server_error", "model_loading"


class ShuttingDown(ServeError):
    status, type, code = 503, "server_error", "shutting_down"
    retry_after = 1  # another server (the router's next one) can take it now; this one is going away


class ConfigError(Exception):
    """A bad setting or model path; the CLI prints it on one line and exits 2."""
