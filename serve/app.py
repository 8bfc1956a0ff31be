"""create_app(config): the OpenAI-compatible HTTP API over one model.

Routes validate with pydantic; chat requests then go through the API-neutral chat core (serve/chat.py), whose
events whole responses collect and streams turn into SSE chunks as they arrive (serve/responses.py shapes
both). Anthropic Messages (serve/anthropic_api.py) and OpenAI Responses (serve/responses_api.py) are
translations onto the same chat core. Every error leaves through one handler as the API's error body (OpenAI's;
Anthropic's on the Anthropic paths).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from hearth_common import anthropic_errors
from hearth_common.errors import error_body, error_type
from hearth_common.jsonbody import BodyError, parse_object
from hearth_common.keys import key_matches, presented_key
from hearth_common.logs import note, note_usage
from hearth_common.prometheus import CONTENT_TYPE
from hearth_common.validation import error_place, first_error
from serve import anthropic_api, embeddings_api, ids, logprobs, offload, responses, responses_api, sse
from serve.anthropic_schemas import CountTokensRequest, MessagesRequest
from serve.arrivals import CountArrivals
from serve.chat import Chat, Error, Finish, Text, collect, open_chat, sampling_params
from serve.config import ServeConfig
from serve.embeddings import load_embedder
from serve.engine import Event, Failed, Finished, Piece, TokenLogprob
from serve.errors import (
    BodyTooLarge,
    InvalidRequest,
    Loading,
    ModelNotFound,
    RequestTimeout,
    ServeError,
    Unauthorized,
    UnsupportedEndpoint,
)
from serve.responses_schemas import ResponsesRequest
from serve.responses_store import ResponseStore
from serve.router_client import RouterClient
from serve.runtime import Loaded, Runtime
from serve.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("serve")

# request path -> the endpoint label of metrics (any other path counts as "other": labels stay bounded)
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
}


class ServeApp(Quart):
    runtime: Runtime
    router: RouterClient | None
    responses_store: ResponseStore  # /v1/responses with store: true, for previous_response_id


def create_app(config: ServeConfig, model_path: Path | None = None, model_name: str | None = None) -> ServeApp:
    """`model_path`: the GGUF to load (default: config.model_path, which must then be a .gguf)."""
    app = ServeApp(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.runtime = Runtime.create(config, model_path or config.model_path, model_name)
    app.router = RouterClient(config) if config.router else None
    app.responses_store = ResponseStore()
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = CountArrivals(app.asgi_app, app.runtime.arrivals)  # type: ignore[method-assign]

    @app.before_serving
    async def _load() -> None:
        async def load() -> None:
            rt = app.runtime
            try:
                if config.embeddings:
                    rt.embedder = await asyncio.to_thread(load_embedder, config, rt.model_path)
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
        else:
            body = error_body(message, error_type(status), str(status))
        allow = {k: v for k, v in err.get_headers() if k.lower() == "allow"}  # a 405 says what is allowed
        return Response(json.dumps(body), status=status, headers=allow, content_type="application/json")

    @app.before_request
    async def _guard() -> None:
        if not request.path.startswith("/v1/"):
            return
        # Bearer (OpenAI's SDK) or x-api-key (Anthropic's)
        presented = presented_key(request.headers.get("Authorization"), request.headers.get("x-api-key"))
        if config.api_key and not key_matches(presented, config.api_key):
            raise Unauthorized("a valid API key is required: 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        if (request.content_length or 0) > config.max_body_bytes:
            raise BodyTooLarge(f"request body over {config.max_body_bytes} bytes")

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        rt = app.runtime
        if rt.embedder is not None:  # an --embeddings server
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
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "local"} for n in names],
        }

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        async def work() -> Response:
            return await _chat(app, _served(app, await _body(ChatRequest), "chat"))

        return await _counted(app, "chat", work())

    @app.post("/v1/completions")
    async def completions() -> Response:
        async def work() -> Response:
            return await _completion(app, _served(app, await _body(CompletionRequest), "completions"))

        return await _counted(app, "completions", work())

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        async def work() -> Response:
            req = _served(app, await _body(embeddings_api.EmbeddingRequest), "embeddings")
            body = await embeddings_api.respond(app.runtime, req)
            note_usage(body.get("usage"))  # the access line's tokens
            return Response(json.dumps(body), content_type="application/json")

        return await _counted(app, "embeddings", work())

    @app.post("/v1/messages")
    async def messages() -> Response:
        async def work() -> Response:
            req = _served(app, await _body(MessagesRequest), "messages")
            return _reply(await anthropic_api.respond(app.runtime, req))

        return await _counted(app, "messages", work())

    @app.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        async def work() -> Response:
            req = _served(app, await _body(CountTokensRequest), "count_tokens")
            return _reply(await anthropic_api.count_tokens(app.runtime, req))

        return await _counted(app, "count_tokens", work())

    @app.post("/v1/responses")
    async def responses_() -> Response:
        async def work() -> Response:
            req = _served(app, await _body(ResponsesRequest), "responses")
            return _reply(await responses_api.respond(app.runtime, app.responses_store, req))

        return await _counted(app, "responses", work())

    return app


# -- helpers ------------------------------------------------------------------------------------------------


BODY_TIMEOUT = 30  # seconds a client may take to send its body (Quart's default is 60)


def _error(err: ServeError) -> Response:
    body = anthropic_errors.error_body(err.status, err.message) if anthropic_errors.owns(request.path) else err.body()
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
    if req.model and req.model not in (rt.model_name, *config.alias):
        raise ModelNotFound(
            f"the model {req.model!r} does not exist here; this server serves {rt.model_name!r}", param="model"
        )
    if config.embeddings and endpoint != "embeddings":
        raise UnsupportedEndpoint(
            f"{rt.model_name!r} is an embeddings model (the server runs with --embeddings): use /v1/embeddings",
            param="model",
        )
    if endpoint == "embeddings" and not config.embeddings:
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


def _loaded(app: ServeApp) -> Loaded:
    if app.runtime.loaded is None:
        raise Loading("the model is still loading" if not app.runtime.load_error else "the model failed to load")
    return app.runtime.loaded


async def _chat(app: ServeApp, req: ChatRequest) -> Response:
    chat = await open_chat(app.runtime, req)
    meta = {"id": f"chatcmpl-{ids.hex_id()}", "created": int(time.time()), "model": app.runtime.model_name}
    if req.stream:
        return _sse(_chat_chunks(chat, req, meta))
    result = await collect(chat)
    assert result.finish is not None
    message = responses.chat_message(result, req.separate_thinking, req.include_channels, chat.turn.harmony, chat.raw)
    body = {
        **meta,
        "object": "chat.completion",
        "reasoning_level": chat.level,
        "choices": [
            {
                "index": 0,
                "finish_reason": result.finish.reason,
                "message": message,
                "logprobs": logprobs.chat(chat.logprobs if req.logprob_count is not None else None),
            }
        ],
        "usage": responses.usage(result.finish),
    }
    return Response(json.dumps(body), content_type="application/json")


async def _completion(app: ServeApp, req: CompletionRequest) -> Response:
    loaded = _loaded(app)
    rt = app.runtime
    tokens = await offload.run(loaded.model.tokenize, req.prompt, True)
    params = sampling_params(req, len(tokens), loaded.engine.ctx_per_seq)
    run = rt.start(tokens, params)
    meta = {"id": f"cmpl-{ids.hex_id()}", "created": int(time.time()), "model": rt.model_name}
    events = run.events()
    if req.stream:
        return _sse(_completion_chunks(events, req, meta))
    text = ""
    logged: list[TokenLogprob] | None = [] if req.logprob_count is not None else None
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, Piece):
                text += event.text
                if logged is not None and event.logprob is not None:
                    logged.append(event.logprob)
            elif isinstance(event, Failed):
                raise ServeError(event.message)
            else:
                finish = event
                break
        else:
            raise ServeError("generation ended without a result")
    done = _finish(finish)
    body = {
        **meta,
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": done.reason,
                "logprobs": logprobs.completion(logged, len(req.prompt)),
            }
        ],
        "usage": responses.usage(done, per_channel=False),
    }
    return Response(json.dumps(body), content_type="application/json")


def _finish(event: Finished) -> Finish:
    """The engine's end as the chat core's Finish (reason stop or length; no channels in completions), its token
    counts noted for the access line."""
    note(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens)
    reason = "length" if event.reason == "length" else "stop"
    return Finish(reason, event.prompt_tokens, event.completion_tokens, cached_tokens=event.cached_tokens)


def _reply(result: dict[str, Any] | AsyncGenerator[tuple[str, dict[str, Any]], None]) -> Response:
    """A whole JSON body, or a stream of named SSE events (Anthropic's and Responses' streams: no [DONE])."""
    if isinstance(result, dict):
        return Response(json.dumps(result), content_type="application/json")

    async def body() -> AsyncGenerator[bytes, None]:
        async with aclosing(result) as events:
            async for name, data in events:
                yield sse.event(name, data)

    return _sse(body())


def _sse(body: AsyncGenerator[bytes, None]) -> Response:
    response = Response(body, content_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    response.timeout = None  # a long generation is not a stalled response
    return response


TEXT_FIELDS = frozenset({"content", "reasoning_content", "reasoning"})  # a chat delta's text (stream_delta)


async def _chat_chunks(chat: Chat, req: ChatRequest, meta: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """The chat stream's SSE bytes: a token's text through a Frame, the end (finish, usage, [DONE]) in one write."""
    sent = 0  # chat.logprobs already out in a chunk: each chunk carries the tokens generated since the last
    want_logprobs = req.logprob_count is not None
    frames: dict[tuple[str, ...], sse.Frame] = {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        nonlocal sent
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if want_logprobs and len(chat.logprobs) > sent:
            choice["logprobs"] = logprobs.chat(chat.logprobs[sent:])
            sent = len(chat.logprobs)
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}

    def text(delta: dict[str, Any]) -> bytes:
        """A text delta through its Frame: {"content": t}, or the reasoning fields (t twice, and the channel,
        which is part of the frame's shape)."""
        value = delta.get("content", delta.get("reasoning_content"))
        if want_logprobs or not isinstance(value, str):
            return sse.data(chunk(delta))
        shape = (*delta, delta.get("channel", ""))
        frame = frames.get(shape)
        if frame is None:
            slotted = {k: sse.SLOT if k in TEXT_FIELDS else v for k, v in delta.items()}
            frame = frames[shape] = sse.Frame(chunk(slotted))
        return frame.fill(value)

    inline = responses.Inline(chat.turn.harmony)
    yield sse.data(chunk({"role": "assistant"}))
    async with aclosing(chat.events()) as events:
        async for event in events:
            if isinstance(event, Error):
                failed = {**meta, "object": "chat.completion.chunk", "choices": []}
                yield sse.data({**failed, **error_body(event.message, "server_error", "generation_failed")}) + sse.DONE
                return
            if isinstance(event, Finish):
                end = sse.data(chunk({}, event.reason))
                if req.include_usage:
                    usage = {**meta, "object": "chat.completion.chunk", "choices": [], "usage": responses.usage(event)}
                    end += sse.data(usage)
                yield end + sse.DONE
                return
            delta = responses.stream_delta(event, req.separate_thinking, inline)
            yield text(delta) if isinstance(event, Text) else sse.data(chunk(delta))
    yield sse.DONE


async def _completion_chunks(
    events: AsyncGenerator[Event, None], req: CompletionRequest, meta: dict[str, Any]
) -> AsyncGenerator[bytes, None]:
    """The completion stream's SSE bytes: a token's text through a Frame, the end (finish, usage, [DONE]) in one
    write."""
    pending: list[TokenLogprob] = []  # tokens whose text has not left in a chunk yet
    offset = len(req.prompt)  # text_offset counts characters from the prompt's start

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        nonlocal offset
        block = logprobs.completion(pending, offset) if pending else None
        if block:
            offset = block["text_offset"][-1] + len(block["tokens"][-1])
            pending.clear()
        return {
            **meta,
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": block}],
        }

    frame = sse.Frame(chunk(sse.SLOT))
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, Piece):
                if event.logprob is not None:
                    pending.append(event.logprob)
                if event.text:
                    yield sse.data(chunk(event.text)) if pending else frame.fill(event.text)
            elif isinstance(event, Failed):
                failed = {**meta, "object": "text_completion", "choices": []}
                yield sse.data({**failed, **error_body(event.message, "server_error", "generation_failed")}) + sse.DONE
                return
            else:
                done = _finish(event)
                end = sse.data(chunk("", done.reason))
                if req.include_usage:
                    usage = {**meta, "object": "text_completion", "choices": []}
                    end += sse.data({**usage, "usage": responses.usage(done, per_channel=False)})
                yield end + sse.DONE
                return
    yield sse.DONE
