"""create_app(config): the router's HTTP surface. Routing lives in proxy.py, health in health.py."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from route.catalog import read_catalog
from route.client_api import ClientApi
from route.config import BackendSpec, RouterConfig, first_error
from route.errors import BadRequest, NotFound, PayloadTooLarge, RouteError, Unauthorized, error_body
from route.health import run_checks
from route.metrics import Metrics
from route.ondemand import OnDemand
from route.proxy import AiohttpUpstream, Proxy, Upstream
from route.registry import Registry, load_state

log = logging.getLogger("route")


@dataclass
class RouterState:
    """Everything the app owns, built at startup."""

    cfg: RouterConfig
    registry: Registry
    metrics: Metrics
    wake_health: asyncio.Event
    make_upstream: Callable[[RouterConfig], Upstream]
    proxy: Proxy | None = None
    ondemand: OnDemand | None = None
    health_task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.time)

    def save(self) -> None:
        if self.cfg.state_file is not None:
            self.registry.save(self.cfg.state_file)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def create_app(cfg: RouterConfig, upstream: Callable[[RouterConfig], Upstream] = AiohttpUpstream) -> Quart:
    """`upstream` builds the HTTP client at startup; tests pass a fake."""
    app = Quart("route")
    app.config.update(MAX_CONTENT_LENGTH=cfg.max_body, RESPONSE_TIMEOUT=None, BODY_TIMEOUT=cfg.timeout)
    state = RouterState(cfg, Registry(), Metrics(), asyncio.Event(), upstream)

    def proxy() -> Proxy:
        assert state.proxy is not None, "used before serving"
        return state.proxy

    @app.before_serving
    async def start() -> None:
        state.wake_health = asyncio.Event()  # bound to the serving loop
        up = state.make_upstream(cfg)
        state.proxy = Proxy(cfg, state.registry, up, state.metrics, state.wake_health)
        specs, served = load_state(cfg.state_file) if cfg.state_file else ([], set())
        state.registry.served.update(served)
        by_name = {s.name: s for s in [*cfg.backends, *specs]}  # the state file's newer word wins
        errors = await asyncio.gather(*(up.probe(s.url) for s in by_name.values()))
        now = time.monotonic()
        for spec, error in zip(by_name.values(), errors):
            backend = state.registry.register(spec, healthy=error is None)
            backend.next_check = now + cfg.health_interval
            backend.last_check = time.time()
            backend.last_error = error
        state.health_task = asyncio.create_task(run_checks(state.registry, up.probe, cfg, state.wake_health))
        if cfg.catalog is not None:
            state.ondemand = state.proxy.ondemand = OnDemand(read_catalog(cfg.catalog), state.registry, state.metrics,
                                                             state.save)
            state.ondemand.start()

    @app.after_serving
    async def stop() -> None:
        if state.health_task is not None:
            state.health_task.cancel()
            await asyncio.gather(state.health_task, return_exceptions=True)
        if state.ondemand is not None:
            await state.ondemand.close()
        if state.proxy is not None:
            await state.proxy.upstream.close()

    # -- errors: every one leaves as an OpenAI error body --------------------------------------

    @app.errorhandler(RouteError)
    async def route_error(exc: RouteError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return await route_error(PayloadTooLarge(f"request body larger than {cfg.max_body} bytes"))
        type_ = "invalid_request_error" if status < 500 else "server_error"
        return json_response(error_body(exc.description or exc.name, type_, exc.name.lower().replace(" ", "_")), status)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return json_response(error_body(f"internal error: {type(exc).__name__}", "server_error", "internal_error"), 500)

    # -- client API: /v1/chat/completions, /v1/completions and /v1/embeddings are served by ClientApi
    app.asgi_app = ClientApi(app.asgi_app, proxy, cfg.max_body)  # type: ignore[method-assign]

    @app.get("/v1/models")
    async def models() -> Response:
        created = int(state.started)
        data = state.ondemand.listing(created) if state.ondemand is not None else []
        listed = {d["id"] for d in data}
        data += [{"id": m, "object": "model", "created": created, "owned_by": "local", "status": "loaded"}
                 for m in state.registry.models() if m not in listed]
        return json_response({"object": "list", "data": data})

    # -- cluster API -----------------------------------------------------------------------------

    def require_admin() -> None:
        if cfg.admin_key is None:
            return
        given = request.headers.get("Authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), cfg.admin_key.encode()):
            raise Unauthorized("this endpoint needs the admin key: Authorization: Bearer <key>")

    async def json_body() -> dict[str, Any]:
        try:
            body = json.loads(await request.get_data())
        except ValueError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    @app.post("/backends/register")
    async def register() -> Response:
        require_admin()
        try:
            spec = BackendSpec.model_validate(await json_body())
        except ValidationError as exc:
            raise BadRequest(f"invalid registration: {first_error(exc)}") from None
        error = await proxy().upstream.probe(spec.url)
        if error is not None:
            raise BadRequest(f"backend {spec.name!r} at {spec.url} failed its health check: {error}", param="url")
        backend = state.registry.register(spec, healthy=True)
        backend.next_check = time.monotonic() + cfg.health_interval
        backend.last_check = time.time()
        state.save()
        state.wake_health.set()
        log.info("registered %s at %s for %s", spec.name, spec.url, spec.models)
        return json_response(backend.view())

    async def unregister_name(name: str) -> Response:
        backend = state.registry.unregister(name)
        state.save()
        log.info("unregistered %s (%d in flight)", name, backend.active)
        return json_response({"name": name, "draining": backend.active > 0, "active": backend.active})

    @app.post("/backends/unregister")
    async def unregister() -> Response:
        require_admin()
        name = (await json_body()).get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("`name` is required and must be a string", param="name")
        return await unregister_name(name)

    @app.delete("/backends/<path:name>")
    async def delete_backend(name: str) -> Response:
        require_admin()
        return await unregister_name(name)

    # -- the stack's models, loaded on demand (route/ondemand.py) ---------------------------------

    async def model_in_body() -> tuple[OnDemand, str]:
        require_admin()
        if state.ondemand is None:
            raise NotFound("this router loads no model on demand (it was started without a catalog)")
        name = (await json_body()).get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("`model` is required and must be a string", param="model")
        return state.ondemand, name

    @app.post("/models/load")
    async def load_model() -> Response:
        ondemand, name = await model_in_body()
        return json_response(await ondemand.load(name))

    @app.post("/models/unload")
    async def unload_model() -> Response:
        ondemand, name = await model_in_body()
        return json_response(await ondemand.unload(name))

    @app.get("/backends")
    async def list_backends() -> Response:
        require_admin()
        return json_response({"backends": [b.view() for b in state.registry.backends.values()]})

    @app.get("/health")
    async def health() -> Response:
        healthy = sum(1 for b in state.registry.backends.values() if b.healthy and not b.draining)
        ok = healthy > 0 or state.ondemand is not None  # behind the stack, a model not loaded loads when asked for
        return json_response({"status": "ok" if ok else "unavailable", "healthy_backends": healthy}, 200 if ok else 503)

    @app.get("/status")
    async def status() -> Response:
        per_model: dict[str, dict[str, Any]] = {}
        for b in state.registry.backends.values():
            for m in b.spec.models:
                entry = per_model.setdefault(m, {"strategy": cfg.strategy_for(m), "backends": [], "healthy": 0, "active": 0, "total": 0})
                entry["backends"].append(b.name)
                entry["healthy"] += int(b.healthy and not b.draining)
                entry["active"] += b.active
                entry["total"] += b.total
        return json_response({
            "strategy": cfg.strategy,
            "model_strategies": cfg.model_strategies,
            "backends": [b.view() for b in state.registry.backends.values()],
            "models": per_model,
            **({"memory": state.ondemand.memory()} if state.ondemand is not None else {}),
        })

    @app.get("/metrics")
    async def metrics() -> Response:
        m = state.metrics
        m.healthy.clear()
        m.active.clear()
        for b in state.registry.backends.values():
            m.healthy.labels(b.name).set(int(b.healthy and not b.draining))
            m.active.labels(b.name).set(b.active)
        return Response(m.render(), content_type=m.content_type)

    return app
