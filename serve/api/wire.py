"""The request edge every API module's route shares: the body read and validated, the model and endpoint checked
against what this server serves, the error body in the API's own shape, the reply as JSON or a stream, and the
counts /metrics keeps. Quart's request context is the only state it reads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Response, request

from hearth_common import anthropic_errors, ollama_errors
from hearth_common.errors import error_body, error_type
from hearth_common.jsonbody import BodyError, parse_object
from hearth_common.logs import note
from hearth_common.rerank import RERANK_PATHS
from hearth_common.validation import error_place, first_error
from serve.chat import offload
from serve.errors import InvalidRequest, ModelNotFound, ServeError, UnsupportedEndpoint
from serve.runtime import Runtime

# request path -> the endpoint label of metrics (any other path counts as "other": labels stay bounded)
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
    "/api/embed": "ollama_embed",
    "/api/embeddings": "ollama_embeddings",
    "/api/show": "ollama_show",
    **dict.fromkeys(RERANK_PATHS, "rerank"),
}
EMBEDDING_ENDPOINTS = frozenset({"embeddings", "ollama_embed", "ollama_embeddings"})  # an --embeddings server's
EITHER_ENDPOINTS = frozenset({"ollama_show"})  # served by chat and --embeddings servers alike
RERANK_ENDPOINTS = frozenset({"rerank"})  # a --rerank server's, and only its
SSE, NDJSON = "text/event-stream", "application/x-ndjson"  # a stream's content type: OpenAI's and Anthropic's, Ollama's


BODY_TIMEOUT = 30  # seconds a client may take to send its body (Quart's default is 60)


def error_response(
    status: int, message: str, details: dict[str, Any] | None = None, code: str | None = None
) -> Response:
    """The error body in the shape of the API the path belongs to: Anthropic's, Ollama's, else OpenAI's."""
    path = request.path
    if anthropic_errors.owns(path):
        body = anthropic_errors.error_body(status, message, details)
    elif ollama_errors.owns(path):
        body = ollama_errors.error_body(message)
    else:
        body = error_body(message, error_type(status), code)
    return Response(json.dumps(body), status=status, content_type="application/json")


def serve_error(err: ServeError) -> Response:
    if anthropic_errors.owns(request.path) or ollama_errors.owns(request.path):
        response = error_response(err.status, err.message, err.details)
    else:
        response = Response(json.dumps(err.body()), status=err.status, content_type="application/json")
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response


async def counted(runtime: Runtime, endpoint: str, work: Any) -> Response:
    try:
        response: Response = await work
    except ServeError as err:
        runtime.metrics.request(endpoint, err.status)
        raise
    runtime.metrics.request(endpoint, response.status_code)
    return response


def count_refused(runtime: Runtime, status: int, code: str | None) -> None:
    """Requests refused with a 4xx, by endpoint and reason, for /metrics."""
    if 400 <= status < 500:
        runtime.metrics.refused(ENDPOINTS.get(request.path, "other"), code or str(status))


def served(runtime: Runtime, req: Any, endpoint: str) -> Any:
    """The request, if this server serves its model (name or alias; none given is fine) on this endpoint."""
    rt, config = runtime, runtime.config
    note(model=rt.model_name)  # the access line's model
    ollama_path = ollama_errors.owns(request.path)
    name = ollama_errors.model_name(req.model) if ollama_path else req.model  # Ollama's `name:latest` is `name`
    if name and name not in (rt.model_name, *config.alias):
        raise ModelNotFound(
            ollama_errors.not_found(req.model)
            if ollama_path
            else f"the model {req.model!r} does not exist here; this server serves {rt.model_name!r}",
            param="model",
        )
    if config.rerank != (endpoint in RERANK_ENDPOINTS):
        raise UnsupportedEndpoint(
            f"{rt.model_name!r} is a reranker (the server runs with --rerank): use /v1/rerank"
            if config.rerank
            else f"{rt.model_name!r} is no reranker: serve a cross-encoder with --rerank (stack file: rerank = true)",
            param="model",
        )
    if endpoint in EITHER_ENDPOINTS:
        return req
    if config.embeddings and endpoint not in EMBEDDING_ENDPOINTS:
        raise UnsupportedEndpoint(
            f"{rt.model_name!r} is an embeddings model (the server runs with --embeddings): use /v1/embeddings",
            param="model",
        )
    if endpoint in EMBEDDING_ENDPOINTS and not config.embeddings:
        raise UnsupportedEndpoint(
            f"{rt.model_name!r} does not serve embeddings: start its server with --embeddings "
            "(stack file: embeddings = true)",
            param="model",
        )
    return req


async def body(model: type[BaseModel]) -> Any:
    try:
        # all three arguments spelled: only that overload of Quart's get_data is typed as bytes
        raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        offload.note_size(len(raw))
        data = parse_object(raw)
    except BodyError as err:
        raise InvalidRequest(str(err)) from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidRequest(first_error(err, default="body"), param=error_place(err)) from None


Reply = dict[str, Any] | AsyncGenerator[bytes, None]
Respond = Callable[[Runtime, Any], Awaitable[Any]]  # an API module's respond(runtime, request) -> Reply


def reply(result: Reply, stream: str = SSE) -> Response:
    """A whole JSON body, or a stream of bytes (SSE, or `stream`'s content type)."""
    if isinstance(result, dict):
        return Response(json.dumps(result), content_type="application/json")
    response = Response(result, content_type=stream, headers={"Cache-Control": "no-cache"})
    response.timeout = None  # a long generation is not a stalled response
    return response
