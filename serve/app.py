"""create_app(config): the HTTP shell over one model: it wires each path to its API module and does nothing else.

Each wire API is a module of serve/api/ with `respond(runtime, request)`: the body, validated here as the
module's pydantic schema, in; a whole JSON body or a stream of bytes out (SSE; Ollama's newline-delimited JSON).
Every error leaves through one handler as the API's error body (OpenAI's; Anthropic's on the Anthropic paths,
Ollama's on /api/).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from hearth_common import ollama_errors
from hearth_common.capabilities import capabilities
from hearth_common.keys import key_matches, presented_key
from hearth_common.prometheus import CONTENT_TYPE
from hearth_common.rerank import RERANK_PATHS
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
    wire,
)
from serve.api.anthropic_schemas import CountTokensRequest, MessagesRequest
from serve.api.ollama_schemas import ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, ShowBody
from serve.api.responses_schemas import ResponsesRequest
from serve.arrivals import CountArrivals
from serve.chat.schemas import ChatRequest, CompletionRequest
from serve.config import ServeConfig
from serve.errors import (
    BodyTooLarge,
    RequestTimeout,
    ServeError,
    Unauthorized,
)
from serve.router_client import RouterClient
from serve.runtime import Runtime

log = logging.getLogger("serve")


class ServeApp(Quart):
    runtime: Runtime
    router: RouterClient | None


def create_app(config: ServeConfig, model_path: Path | None = None, model_name: str | None = None) -> ServeApp:
    """`model_path`: the GGUF to load (default: config.model_path, which must then be a .gguf)."""
    app = ServeApp(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = wire.BODY_TIMEOUT
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
                caps = capabilities(embeddings=config.embeddings, rerank=config.rerank, vision=rt.vision)
                await app.router.register(rt.model_name, model_type, config.alias, caps)

        app.add_background_task(load)

    @app.after_serving
    async def _stop() -> None:
        if app.router:
            await app.router.unregister(app.runtime.model_name)
        await app.runtime.responses.close()
        await asyncio.to_thread(app.runtime.close)

    @app.errorhandler(ServeError)
    async def _serve_error(err: ServeError) -> Response:
        wire.count_refused(app.runtime, err.status, err.code)
        return wire.serve_error(err)

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        if err.code == 413:
            return await _serve_error(BodyTooLarge(f"request body over {config.max_body_bytes} bytes"))
        if err.code == 408:
            return await _serve_error(RequestTimeout(f"request body not received within {wire.BODY_TIMEOUT} s"))
        status = err.code or 500
        wire.count_refused(app.runtime, status, str(status))
        response = wire.error_response(status, err.description or str(err), code=str(status))
        for key, value in err.get_headers():
            if key.lower() == "allow":  # a 405 says what is allowed
                response.headers[key] = value
        return response

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
        # what a client looks for: which model chats, embeds, reranks, takes images (the router lists the same)
        caps = capabilities(embeddings=config.embeddings, rerank=config.rerank, vision=rt.vision)
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": created, "owned_by": "local", "capabilities": caps}
                for n in names
            ],
        }

    def route(
        path: str,
        endpoint: str,
        schema: type[BaseModel],
        respond: wire.Respond,
        stream: str = wire.SSE,
        name: str | None = None,
    ) -> None:
        """POST `path`: the body validated as `schema`, answered by the API module's `respond` (a stream as
        content type `stream`). `name`: the rule's own name where several paths share one endpoint."""

        async def handle() -> Response:
            async def work() -> Response:
                req = wire.served(app.runtime, await wire.body(schema), endpoint)
                return wire.reply(await respond(app.runtime, req), stream)

            return await wire.counted(app.runtime, endpoint, work())

        app.add_url_rule(path, name or endpoint, handle, methods=["POST"])

    route("/v1/chat/completions", "chat", ChatRequest, openai_chat.respond)
    route("/v1/completions", "completions", CompletionRequest, completions.respond)
    route("/v1/embeddings", "embeddings", embeddings.EmbeddingRequest, embeddings.respond)
    route("/v1/messages", "messages", MessagesRequest, anthropic.respond)
    route("/v1/messages/count_tokens", "count_tokens", CountTokensRequest, anthropic.count_tokens)
    route("/v1/responses", "responses", ResponsesRequest, responses.respond)
    route("/api/chat", "ollama_chat", ChatBody, ollama.chat, wire.NDJSON)
    route("/api/generate", "ollama_generate", GenerateBody, ollama.generate, wire.NDJSON)
    route("/api/embed", "ollama_embed", EmbedBody, ollama_embed.embed)
    route("/api/embeddings", "ollama_embeddings", EmbeddingsBody, ollama_embed.embeddings)
    route("/api/show", "ollama_show", ShowBody, ollama_show.show)
    for path in RERANK_PATHS:  # one endpoint (metrics label "rerank"), three spellings
        route(path, "rerank", rerank.RerankRequest, rerank.respond, name=f"rerank:{path}")
    return app
