"""create_app(config): the HTTP shell over one model: it wires each path to its API module and does nothing else.

Each wire API is a module of serve/api/ with `respond(runtime, request)`: the body, validated here as the
module's pydantic schema, in; a whole JSON body or a stream of bytes out (SSE; Ollama's newline-delimited JSON).
Every error leaves through one handler as the API's error body (OpenAI's; Anthropic's on the Anthropic paths,
Ollama's on /api/).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from hearth_common import anthropic_errors, ollama_errors
from hearth_common.errors import error_body, error_type
from hearth_common.jsonbody import BodyError, parse_object
from hearth_common.keys import key_matches, presented_key
from hearth_common.logs import note
from hearth_common.prometheus import CONTENT_TYPE
from hearth_common.rerank import RERANK_PATHS
from hearth_common.validation import error_place, first_error
from serve.api import (
    anthropic,
    completions,
    embeddings,
    ollama,
    ollama_embed,
    ollama_show,
    openai_chat,
    rerank,
    responses,
)
from serve.api.anthropic_schemas import CountTokensRequest, MessagesRequest
from serve.api.ollama_schemas import ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, ShowBody
from serve.api.responses_schemas import ResponsesRequest
from serve.arrivals import CountArrivals
from serve.chat import offload
from serve.chat.schemas import ChatRequest, CompletionRequest
from serve.config import ServeConfig
from serve.errors import (
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    RequestTimeout,
    ServeError,
    Unauthorized,
    UnsupportedEndpoint,
)
from serve.router_client import RouterClient
from serve.runtime import Runtime

log = logging.getLogger("serve")

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


class ServeApp(Quart):
    runtime: Runtime
    router: RouterClient | None


def create_app(config: ServeConfig, model_path: Path | None = None, model_name: str | None = None) -> ServeApp:
    """`model_path`: the GGUF to load (default: config.model_path, which must then be a .gguf)."""
    app = ServeApp(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.runtime = Runtime.create(config, model_path or config.model_path, model_name)
    app.router = RouterClient(config) if config.router else None
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = CountArrivals(app.asgi_app, app.runtime.arrivals)  # type: ignore[method-assign]

    @app.before_serving
    async def _load() -> None:
        async def load() -> None:
            rt = app.runtime
            try:
                if config.embeddings or config.rerank:
                    rt.embedder = await asyncio.to_thread(rt.load_embedder)
                    model_type = rt.embedder.model_type
                else:
                    rt.loaded = await asyncio.to_thread(rt.load)
                    model_type = rt.loaded.model_type
            except Exception as err:  # noqa: BLE001 - reported by /health; the process keeps answering 503
                rt.load_error = str(err)
                log.error("loading failed: %s", err)
                return
            if app.router:
                await app.router.register(rt.model_name, model_type, config.alias)

        app.add_background_task(load)

    @app.after_serving
    async def _stop() -> None:
        if app.router:
            await app.router.unregister(app.runtime.model_name)
        await asyncio.to_thread(app.runtime.close)

    @app.errorhandler(ServeError)
    async def _serve_error(err: ServeError) -> Response:
        _count_refused(app, err.status, err.code)
        return _error(err)

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        if err.code == 413:
            too_large = BodyTooLarge(f"request body over {config.max_body_bytes} bytes")
            _count_refused(app, too_large.status, too_large.code)
            return _error(too_large)
        if err.code == 408:
            timeout = RequestTimeout(f"request body not received within {BODY_TIMEOUT} s")
            _count_refused(app, timeout.status, timeout.code)
            return _error(timeout)
        status = err.code or 500
        _count_refused(app, status, str(status))
        message = err.description or str(err)
        if anthropic_errors.owns(request.path):
            body = anthropic_errors.error_body(status, message)
        elif ollama_errors.owns(request.path):
            body = ollama_errors.error_body(message)
        else:
            body = error_body(message, error_type(status), str(status))
        allow = {k: v for k, v in err.get_headers() if k.lower() == "allow"}  # a 405 says what is allowed
        return Response(json.dumps(body), status=status, headers=allow, content_type="application/json")

    @app.before_request
    async def _guard() -> None:
        if not request.path.startswith(("/v1/", ollama_errors.PREFIX)) and request.path not in RERANK_PATHS:
            return
        # Bearer (OpenAI's and Ollama's clients) or x-api-key (Anthropic's)
        presented = presented_key(request.headers.get("Authorization"), request.headers.get("x-api-key"))
        if config.api_key and not key_matches(presented, config.api_key):
            raise Unauthorized("a valid API key is required: 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if (request.content_length or 0) > config.max_body_bytes:
            raise BodyTooLarge(f"request body over {config.max_body_bytes} bytes")

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        rt = app.runtime
        if rt.stopping:
            return {"status": "shutting_down"}, 503
        if rt.embedder is not None:  # an --embeddings or --rerank server
            if not rt.embedder.alive:
                return {"status": "error", "error": "the embeddings thread has stopped"}, 503
            return {"status": "ok", "model": rt.model_name}, 200
        if rt.loaded is None:
            body: dict[str, Any] = {"status": "error" if rt.load_error else "loading"}
            if rt.load_error:
                body["error"] = rt.load_error
            return body, 503
        if not rt.loaded.engine.alive:  # 503 lets a supervisor or router see what no request would finish
            return {"status": "error", "error": "the decode thread has stopped"}, 503
        return {"status": "ok", "model": rt.model_name}, 200

    @app.get("/queue/status")
    async def queue_status() -> dict[str, int]:
        return app.runtime.scheduler.status()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(app.runtime.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        rt = app.runtime
        created = int(rt.model_path.stat().st_mtime)
        names = dict.fromkeys((rt.model_name, *config.alias))
        # what a retrieval client looks for: which model embeds, which reranks (a chat model's entry is OpenAI's)
        kind = (
            {"capabilities": ["rerank"]}
            if config.rerank
            else {"capabilities": ["embeddings"]}
            if config.embeddings
            else {}
        )
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "local", **kind} for n in names],
        }

    def route(
        path: str, endpoint: str, schema: type[BaseModel], respond: Respond, stream: str = SSE, name: str | None = None
    ) -> None:
        """POST `path`: the body validated as `schema`, answered by the API module's `respond` (a stream as
        content type `stream`). `name`: the rule's own name where several paths share one endpoint."""

        async def handle() -> Response:
            async def work() -> Response:
                req = _served(app, await _body(schema), endpoint)
                return _reply(await respond(app.runtime, req), stream)

            return await _counted(app, endpoint, work())

        app.add_url_rule(path, name or endpoint, handle, methods=["POST"])

    route("/v1/chat/completions", "chat", ChatRequest, openai_chat.respond)
    route("/v1/completions", "completions", CompletionRequest, completions.respond)
    route("/v1/embeddings", "embeddings", embeddings.EmbeddingRequest, embeddings.respond)
    route("/v1/messages", "messages", MessagesRequest, anthropic.respond)
    route("/v1/messages/count_tokens", "count_tokens", CountTokensRequest, anthropic.count_tokens)
    route("/v1/responses", "responses", ResponsesRequest, responses.respond)
    route("/api/chat", "ollama_chat", ChatBody, ollama.chat, NDJSON)
    route("/api/generate", "ollama_generate", GenerateBody, ollama.generate, NDJSON)
    route("/api/embed", "ollama_embed", EmbedBody, ollama_embed.embed)
    route("/api/embeddings", "ollama_embeddings", EmbeddingsBody, ollama_embed.embeddings)
    route("/api/show", "ollama_show", ShowBody, ollama_show.show)
    for path in RERANK_PATHS:  # one endpoint (metrics label "rerank"), three spellings
        route(path, "rerank", rerank.RerankRequest, rerank.respond, name=f"rerank:{path}")
    return app


# -- helpers ------------------------------------------------------------------------------------------------


BODY_TIMEOUT = 30  # seconds a client may take to send its body (Quart's default is 60)


def _error(err: ServeError) -> Response:
    if anthropic_errors.owns(request.path):
        body = anthropic_errors.error_body(err.status, err.message, err.details)
    elif ollama_errors.owns(request.path):
        body = ollama_errors.error_body(err.message)
    else:
        body = err.body()
    response = Response(json.dumps(body), status=err.status, content_type="application/json")
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response


async def _counted(app: ServeApp, endpoint: str, work: Any) -> Response:
    try:
        response: Response = await work
    except ServeError as err:
        app.runtime.metrics.request(endpoint, err.status)
        raise
    app.runtime.metrics.request(endpoint, response.status_code)
    return response


def _count_refused(app: ServeApp, status: int, code: str | None) -> None:
    """Requests refused with a 4xx, by endpoint and reason, for /metrics."""
    if 400 <= status < 500:
        app.runtime.metrics.refused(ENDPOINTS.get(request.path, "other"), code or str(status))


def _served(app: ServeApp, req: Any, endpoint: str) -> Any:
    """The request, if this server serves its model (name or alias; none given is fine) on this endpoint."""
    rt, config = app.runtime, app.runtime.config
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


async def _body(model: type[BaseModel]) -> Any:
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


def _reply(result: Reply, stream: str = SSE) -> Response:
    """A whole JSON body, or a stream of bytes (SSE, or `stream`'s content type)."""
    if isinstance(result, dict):
        return Response(json.dumps(result), content_type="application/json")
    response = Response(result, content_type=stream, headers={"Cache-Control": "no-cache"})
    response.timeout = None  # a long generation is not a stalled response
    return response
