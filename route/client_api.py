"""The client API (POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages,
/v1/messages/count_tokens, /v1/responses, /v1/rerank with /rerank and /v2/rerank, and Ollama's /api/ paths:
route/ollama_api.py) as a plain ASGI handler in front of Quart.

This is the router's hot path. Quart's request and response objects, routing and the two tasks it runs
per request cost about as much CPU as the whole proxying (bench/route.py measured bare Quart at half
uvicorn's raw rate), so these routes skip it; everything else goes on to the Quart app. Installed
as `app.asgi_app`, so Quart's test client exercises it too.

In front of every path it also refuses a request that has passed this router already (508, hops.py) and, when
the router has an API key, a /v1/ or /api/ request without it (401). The client's own key never goes on to a backend: the
router sends its backend key instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from hearth_common import anthropic_errors, ollama_errors
from hearth_common.errors import error_body
from hearth_common.fields import type_error
from hearth_common.jsonbody import BodyError, parse_object
from hearth_common.keys import key_matches, presented_key
from hearth_common.logs import note
from hearth_common.rerank import RERANK_PATHS
from route import ollama_api
from route.config import RouterConfig
from route.errors import (
    BadRequest,
    LoopDetected,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    RouteError,
    Unauthorized,
)
from route.hops import forward_via, looped
from route.proxy import Proxy, Routed
from route.strategies import RouteRequest

log = logging.getLogger("route")

# Routed by the body's `model`; the model server itself says 400 when the model does not serve that endpoint.
CLIENT_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        *RERANK_PATHS,
        *anthropic_errors.PATHS,
    }
)
ROUTED_PATHS = CLIENT_PATHS | ollama_api.PROXIED  # and Ollama's, by the same `model`
PROTECTED = ("/v1/", ollama_errors.PREFIX)  # paths that need the API key when the router has one
# What a backend may see of the client's headers. Never `authorization` or `x-api-key`: those are the client's key.
FORWARDED_HEADERS = frozenset(
    {b"accept", b"x-request-id", b"openai-organization", b"openai-project", b"anthropic-version", b"anthropic-beta"}
)
JSON = (b"content-type", b"application/json")
CLOSE = {"Connection": "close"}  # the rest of the body is still on the wire


def prompt_text(body: dict[str, Any]) -> str:
    """The text a prefix cache would see: the prompt, or the messages' contents in order."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):  # text parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"{message.get('role')}:{content}\n")
    return "".join(parts)


class ClientDisconnected(Exception):
    pass


def header_values(scope: Mapping[str, Any], name: bytes) -> list[str]:
    return [v.decode("latin-1") for n, v in scope["headers"] if n == name]


class ClientApi:
    def __init__(self, inner: Any, proxy: Any, cfg: RouterConfig, hop: str, started: float = 0.0) -> None:
        self._inner = inner  # the Quart app's own asgi_app
        self._proxy = proxy  # () -> Proxy, available once the app is serving
        self._ollama = ollama_api.OllamaLocal(proxy, cfg, hop, started)
        self._cfg = cfg
        self._max_body = cfg.max_body
        self._hop = hop  # this router's name in Via headers

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        try:
            self._guard(scope)
        except RouteError as exc:
            await self._send_error(send, exc, scope["path"])
            return
        if ollama_api.answers(scope):
            await self._ollama.answer(scope, send)
            return
        if scope["path"] not in ROUTED_PATHS:
            await self._inner(scope, receive, send)
            return
        try:
            raw = await self._read_body(scope, receive)
        except ClientDisconnected:
            return
        except RouteError as exc:
            await self._send_error(send, exc, scope["path"])
            return
        await self._handle(scope, raw, receive, send)

    def _guard(self, scope: Mapping[str, Any]) -> None:
        """Checks that need only the request line and headers."""
        via = header_values(scope, b"via")
        if via and looped(via, self._hop):
            raise LoopDetected("this request has passed through this router already: a backend points back at it")
        path = scope["path"]
        if path in ROUTED_PATHS and scope["method"] != "POST":
            raise MethodNotAllowed(f"{path} takes POST only", headers={"Allow": "POST"})
        key = self._cfg.api_key
        if key is not None and (path.startswith(PROTECTED) or path in RERANK_PATHS):
            auth, api_key = header_values(scope, b"authorization"), header_values(scope, b"x-api-key")
            if not key_matches(presented_key(auth[0] if auth else None, api_key[0] if api_key else None), key):
                raise Unauthorized("a valid API key is required: 'Authorization: Bearer <key>'")

    async def _read_body(self, scope: Mapping[str, Any], receive: Any) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                raise PayloadTooLarge(f"request body larger than {self._max_body} bytes", headers=CLOSE)
        chunks = []
        size = 0
        try:
            async with asyncio.timeout(self._cfg.body_timeout):  # a slow or lying client holds nothing for long
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnected
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self._max_body:
                        raise PayloadTooLarge(f"request body larger than {self._max_body} bytes", headers=CLOSE)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise RequestTimeout(
                f"request body not received within {self._cfg.body_timeout:g} s", headers=CLOSE
            ) from None

    async def _handle(self, scope: Mapping[str, Any], raw: bytes, receive: Any, send: Any) -> None:
        # A client that hangs up cancels this task, which closes the backend request (proxy.py's finally
        # blocks and Relay.aclose) so the backend frees its slot at once.
        task = asyncio.current_task()
        assert task is not None
        state = {"finishing": False, "gone": False}

        def on_message(watch: asyncio.Task[Any]) -> None:
            if watch.cancelled() or state["finishing"]:
                return
            if watch.exception() is None and watch.result().get("type") == "http.disconnect":
                state["gone"] = True
                task.cancel()

        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)
        out: Routed | None = None
        try:
            try:
                out = await self._route(scope, raw)
            except RouteError as exc:
                state["finishing"] = True
                await self._send_error(send, exc, scope["path"])
                return
            except Exception:
                log.exception("unexpected error routing %s", scope["path"])
                state["finishing"] = True
                await self._send_error(send, None, scope["path"])
                return
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out.headers.items()]
            if isinstance(out.body, bytes):
                headers.append((b"content-length", str(len(out.body)).encode()))
                await send({"type": "http.response.start", "status": out.status, "headers": headers})
                state["finishing"] = True
                await send({"type": "http.response.body", "body": out.body})
                return
            await send({"type": "http.response.start", "status": out.status, "headers": headers})
            async for chunk in out.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["finishing"] = True
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
        finally:
            watcher.cancel()
            if out is not None and not isinstance(out.body, bytes):
                await out.body.aclose()

    async def _route(self, scope: Mapping[str, Any], raw: bytes) -> Routed:
        try:
            body = parse_object(raw)
        except BodyError as exc:
            raise BadRequest(str(exc)) from None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("`model` is required and must be a string", param="model")
        written = model  # as the client wrote it: Ollama's answers echo it
        path = scope["path"]
        ollama = path in ollama_api.PROXIED
        if ollama:
            model = ollama_errors.model_name(model)  # demo-think:latest is demo-think
        note(model=model)  # the access line's model
        wrong = type_error(body)
        if wrong is not None:
            raise BadRequest(wrong[1], param=wrong[0])
        stream = ollama_api.streams(path, body) if ollama else bool(body.get("stream"))
        keep_alive = ollama_api.keep_alive(body) if ollama else None
        headers = {"Content-Type": "application/json"}
        if self._cfg.backend_key:
            headers["Authorization"] = f"Bearer {self._cfg.backend_key}"
        session = None
        via = []
        for name, value in scope["headers"]:
            if name in FORWARDED_HEADERS:
                headers[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"x-session-id":
                session = value.decode("latin-1")
            elif name == b"via":
                via.append(value.decode("latin-1"))
        headers["Via"] = forward_via(via, self._hop)
        user = body.get("user")
        if isinstance(user, str) and user:
            session = user
        proxy: Proxy = self._proxy()
        if not ollama:
            info = RouteRequest(model, session, prompt_text(body) if proxy.wants_prompt(model) else "")
            return await proxy.forward(path, raw, headers, info, stream)
        ondemand = proxy.ondemand
        if keep_alive == 0 and ollama_api.nothing_to_generate(path, body) and ondemand and ondemand.knows(model):
            await ondemand.unload(model, "keep_alive 0", "keep_alive")  # loads nothing to unload it
            return Routed(200, {"Content-Type": "application/json"}, ollama_api.unloaded(path, written))
        info = RouteRequest(model, session, prompt_text(body) if proxy.wants_prompt(model) else "")
        try:
            return await proxy.forward(path, raw, headers, info, stream, keep_alive)
        except ModelNotFound:
            raise ModelNotFound(ollama_errors.not_found(written), param="model") from None

    @staticmethod
    async def _send_error(send: Any, exc: RouteError | None, path: str) -> None:
        if exc is None:
            status, body, extra = 500, error_body("internal error", "server_error", "internal_error"), {}
        else:
            status, body, extra = exc.status, exc.body(), exc.headers
        if anthropic_errors.owns(path):  # the Anthropic SDK reads its own error shape
            body = anthropic_errors.error_body(status, body["error"]["message"])
        elif ollama_api.owns(path):  # and Ollama clients theirs
            body = ollama_errors.error_body(body["error"]["message"])
        data = json.dumps(body).encode()
        headers = [JSON, (b"content-length", str(len(data)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
