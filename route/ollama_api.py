"""Ollama's API at the router, so an app that speaks only Ollama works with the stack's port
(`OLLAMA_HOST=http://127.0.0.1:8080`).

Forwarded by the body's `model` (client_api.py's hot path, the body unchanged): POST /api/chat, /api/generate,
/api/embed, /api/embeddings, /api/show. `name:latest` is the model `name` (hearth_common/ollama_errors); streams
(NDJSON, on by default for chat and generate) pass through unbuffered, and a stream the backend cuts ends with an
`{"error": ...}` line. `keep_alive` (route/keep_alive.py) sets how long a stack model stays loaded after the request
(route/ondemand.py); a chat or generate with nothing to generate loads the model (`done_reason: load`, the model
server's answer) or, with `keep_alive: 0`, unloads it (`done_reason: unload`, answered here: nothing is loaded for it).

Answered here (`OllamaLocal`): GET /api/tags (every model of the stack, loaded or not, and every registered
backend's), GET /api/ps (the loaded ones), GET /api/version, and `GET /` / `HEAD /` ("Ollama is running", the
liveness check of Ollama clients; a browser's GET / asking for HTML goes on to the app). /api/pull, /push, /create,
/copy, /delete and /api/blobs/* are refused with 400: the stack file says which models exist. Every error on these
paths is Ollama's `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hearth_common import ollama_errors
from hearth_common.version import version
from route.catalog import ModelFacts
from route.config import RouterConfig
from route.errors import BadRequest, MethodNotAllowed, NotFound, RouteError
from route.hops import forward_via
from route.keep_alive import KeepAliveError, parse_keep_alive
from route.lifecycle import LoadState
from route.strategies import RouteRequest

if TYPE_CHECKING:
    from route.ondemand import Entry
    from route.proxy import Proxy

log = logging.getLogger("route")

PROXIED = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"})
STREAMED = frozenset({"/api/chat", "/api/generate"})  # `stream` defaults to true
LISTINGS = frozenset({"/api/tags", "/api/ps", "/api/version"})
REFUSED = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})
BLOBS = "/api/blobs/"
ROOT_TEXT = b"Ollama is running"
# The Ollama release whose API hearth's answers follow (`think`, 0.9): apps that gate a feature on the version parse
# a plain x.y.z; hearth's own version is beside it.
OLLAMA_VERSION = "0.9.0"
FOREVER_NS = 2**63 - 1  # Ollama's "never expires" (Go's largest Duration), added to now for `expires_at`
SHOW_TIMEOUT = 5.0  # seconds to ask a registered backend's /api/show for its details
REFUSAL = (
    "hearth serves the models of its stack file and does not pull, push, create, copy or delete models: add the "
    "model to the stack file (a GGUF file, or a Hugging Face folder that `just convert` or the stack's first start "
    "converts) and restart `just serve`"
)


def answers(scope: Mapping[str, Any]) -> bool:
    """Whether OllamaLocal answers this request itself (every Ollama path but the forwarded ones)."""
    path = scope["path"]
    if path == "/":
        return scope["method"] == "HEAD" or (scope["method"] == "GET" and not wants_html(scope))
    return ollama_errors.owns(path) and path not in PROXIED


def wants_html(scope: Mapping[str, Any]) -> bool:
    return any(n == b"accept" and b"text/html" in v for n, v in scope["headers"])


def owns(path: str) -> bool:
    """Errors on this path take Ollama's shape."""
    return ollama_errors.owns(path) or path == "/"


# -- the forwarded requests ----------------------------------------------------------------------------------------


def keep_alive(body: Mapping[str, Any]) -> float | None:
    """The body's keep_alive in seconds (route/keep_alive.py); a 400 when it is not a duration."""
    try:
        return parse_keep_alive(body.get("keep_alive"))
    except KeepAliveError as exc:
        raise BadRequest(str(exc), param="keep_alive") from None


def streams(path: str, body: Mapping[str, Any]) -> bool:
    stream = body.get("stream")
    return path in STREAMED if stream is None else bool(stream)


def nothing_to_generate(path: str, body: Mapping[str, Any]) -> bool:
    """A chat with no messages or a generate with no prompt: Ollama's load (and, with keep_alive 0, unload) call."""
    if path == "/api/chat":
        return not body.get("messages")
    return path == "/api/generate" and not body.get("prompt")


def unloaded(path: str, written: str) -> bytes:
    """The answer to a keep_alive 0 call with nothing to generate (Ollama's, with done_reason `unload`)."""
    out: dict[str, Any] = {"model": written, "created_at": rfc3339(time.time())}
    if path == "/api/chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason="unload")
    return json.dumps(out).encode()


# -- the listings --------------------------------------------------------------------------------------------------


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tagged(name: str) -> str:
    """The name Ollama lists: with a tag (`:latest` when it has none)."""
    return name if ":" in name else name + ollama_errors.LATEST


def details(family: str = "", parameter_size: str = "", quantization_level: str = "") -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size,
        "quantization_level": quantization_level,
    }


def facts_details(facts: ModelFacts | None) -> dict[str, Any]:
    if facts is None:
        return details()
    return details(facts.family, facts.parameter_size, facts.quantization_level)


def num_ctx(parameters: object) -> int:
    """The context a hearth server runs with, from its /api/show `parameters` ("num_ctx 512"); 0 when not said."""
    for row in str(parameters or "").splitlines():
        key, _, value = row.partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return int(value)
    return 0


def name_digest(name: str) -> str:
    """The digest of a model whose GGUF the router cannot see: the sha256 of its name."""
    return hashlib.sha256(name.encode()).hexdigest()


class OllamaLocal:
    """What the router answers itself on Ollama's paths."""

    def __init__(self, proxy: Any, cfg: RouterConfig, hop: str, started: float) -> None:
        self._proxy = proxy  # () -> Proxy, available once the app is serving
        self._cfg = cfg
        self._hop = hop
        self._started = started
        self._shown: dict[str, dict[str, Any]] = {}  # a registered backend's model -> what its /api/show said

    async def answer(self, scope: Mapping[str, Any], send: Any) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if path == "/":
                await send_bytes(send, 200, ROOT_TEXT, b"text/plain; charset=utf-8", head=method == "HEAD")
                return
            if path in REFUSED or path.startswith(BLOBS):
                raise BadRequest(REFUSAL)
            if path not in LISTINGS:
                raise NotFound(f"{path} is not an Ollama endpoint hearth serves")
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{path} takes GET only", headers={"Allow": "GET, HEAD"})
            if path == "/api/version":
                body: dict[str, Any] = {"version": OLLAMA_VERSION, "hearth": version()}
            elif path == "/api/tags":
                body = {"models": await self.tags()}
            else:
                body = {"models": await self.ps()}
            await send_json(send, 200, body, head=method == "HEAD")
        except RouteError as exc:
            await send_error(send, exc)
        except Exception:
            log.exception("unexpected error answering %s", path)
            await send_json(send, 500, ollama_errors.error_body("internal error"))

    async def tags(self) -> list[dict[str, Any]]:
        proxy: Proxy = self._proxy()
        out = []
        ondemand = proxy.ondemand
        listed: set[str] = set()
        if ondemand is not None:
            for entry in ondemand.entries.values():
                facts = entry.spec.facts
                for name in entry.spec.names:
                    listed.add(name)
                    out.append(
                        {
                            "name": tagged(name),
                            "model": tagged(name),
                            "modified_at": rfc3339(facts.modified_at if facts else self._started),
                            "size": facts.size if facts else 0,
                            "digest": facts.digest if facts else name_digest(entry.name),
                            "details": facts_details(facts),
                        }
                    )
        for model in sorted(proxy.registry.models()):
            if model in listed:
                continue
            shown = await self._show(proxy, model)
            out.append(
                {
                    "name": tagged(model),
                    "model": tagged(model),
                    "modified_at": shown.get("modified_at") or rfc3339(self._started),
                    "size": 0,
                    "digest": name_digest(model),
                    "details": shown.get("details") or details(),
                }
            )
        return out

    async def ps(self) -> list[dict[str, Any]]:
        proxy: Proxy = self._proxy()
        out = []
        listed: set[str] = set()
        ondemand = proxy.ondemand
        if ondemand is not None:
            for entry in ondemand.entries.values():
                listed.update(entry.spec.names)
                if entry.status == LoadState.LOADED:
                    out.append(self._loaded(entry, ondemand.expires_at(entry)))
        forever = rfc3339(time.time() + FOREVER_NS / 1e9)
        for model in sorted(proxy.registry.models()):
            if model in listed:
                continue
            shown = await self._show(proxy, model)
            context = num_ctx(shown.get("parameters"))
            out.append(
                {
                    "name": tagged(model),
                    "model": tagged(model),
                    "size": 0,
                    "digest": name_digest(model),
                    "details": shown.get("details") or details(),
                    "expires_at": forever,  # a registered backend is not the router's to unload
                    "size_vram": 0,
                    "context_length": context,
                }
            )
        return out

    @staticmethod
    def _loaded(entry: Entry, expires: float | None) -> dict[str, Any]:
        facts = entry.spec.facts
        cost = entry.cost
        name = tagged(entry.name)
        return {
            "name": name,
            "model": name,
            "size": cost.vram + cost.ram if cost else 0,
            "digest": facts.digest if facts else name_digest(entry.name),
            "details": facts_details(facts),
            "expires_at": rfc3339(expires if expires is not None else time.time() + FOREVER_NS / 1e9),
            "size_vram": cost.vram if cost else 0,
            "context_length": facts.context_length if facts else 0,
        }

    async def _show(self, proxy: Proxy, model: str) -> dict[str, Any]:
        """A registered backend's own /api/show for its model (cached once answered); {} when it cannot tell."""
        if model in self._shown:
            return self._shown[model]
        headers = {"Content-Type": "application/json", "Via": forward_via([], self._hop)}
        if self._cfg.backend_key:
            headers["Authorization"] = f"Bearer {self._cfg.backend_key}"
        body = json.dumps({"model": model}).encode()
        try:
            async with asyncio.timeout(SHOW_TIMEOUT):
                out = await proxy.forward("/api/show", body, headers, RouteRequest(model), False)
            shown = json.loads(out.body) if out.status == 200 and isinstance(out.body, bytes) else None
        except (RouteError, TimeoutError, ValueError) as exc:
            log.info("no /api/show for %s: %s", model, exc)
            return {}
        if not isinstance(shown, dict):
            return {}
        self._shown[model] = shown
        return shown


# -- sending -------------------------------------------------------------------------------------------------------


async def send_bytes(
    send: Any, status: int, data: bytes, content_type: bytes, head: bool = False, extra: Mapping[str, str] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else data})


async def send_json(
    send: Any, status: int, body: dict[str, Any], head: bool = False, extra: Mapping[str, str] | None = None
) -> None:
    await send_bytes(send, status, json.dumps(body).encode(), b"application/json; charset=utf-8", head, extra)


async def send_error(send: Any, exc: RouteError) -> None:
    await send_json(send, exc.status, ollama_errors.error_body(exc.message), extra=exc.headers)
