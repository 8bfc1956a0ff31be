"""create_app(config): the router's HTTP surface. The client API is client_api.py, the cluster API admin.py,
forwarding proxy.py, health health.py; this module builds them and runs start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from hearth_common.errors import error_body, error_type
from route.admin import add_admin_routes, json_response
from route.catalog import read_catalog
from route.client_api import ClientApi
from route.config import RouterConfig
from route.errors import PayloadTooLarge, RequestTimeout, RouteError
from route.health import probe_all, run_checks, spread
from route.hops import new_hop
from route.lifecycle import LoadState
from route.metrics import Metrics
from route.nodes import Fleet
from route.ondemand import OnDemand
from route.proxy import Proxy
from route.registry import Registry, load_state
from route.shared.prefix import PrefixShare
from route.shared.store import SharedStore
from route.shared.sync import SharedSync, replica_name
from route.state import RouterState
from route.ui import add_ui_routes, with_activity
from route.upstream import AiohttpUpstream, Upstream

log = logging.getLogger("route")

ADMIN_MAX_BODY = 1 << 20  # the cluster API's bodies are registrations: small


def create_app(cfg: RouterConfig, upstream: Callable[[RouterConfig], Upstream] = AiohttpUpstream) -> Quart:
    """`upstream` builds the HTTP client at startup; tests pass a fake."""
    app = Quart("route")
    app.config.update(
        MAX_CONTENT_LENGTH=min(cfg.max_body, ADMIN_MAX_BODY), RESPONSE_TIMEOUT=None, BODY_TIMEOUT=cfg.body_timeout
    )
    state = RouterState(cfg, Registry(), Metrics(), asyncio.Event(), upstream, new_hop())

    @app.before_serving
    async def start() -> None:
        state.wake_health = asyncio.Event()  # bound to the serving loop
        up = state.make_upstream(cfg)
        state.proxy_ = Proxy(cfg, state.registry, up, state.metrics, state.wake_health)
        if cfg.shared_state is not None:  # other routers' word, over Redis (route/shared/)
            store = SharedStore(cfg.shared_state, cfg.shared_state_password, replica_name(cfg))
            state.shared = SharedSync(store, state.registry, cfg, state.metrics, state.wake_health.set)
            state.proxy_.on_eject = state.shared.ejected
            state.shared.prefix = PrefixShare(store, state.proxy_.strategies, state.proxy_.strategy)
            state.proxy_.share_prefixes = True
        specs, served = load_state(cfg.state_file) if cfg.state_file else ([], set())
        state.registry.served.update(served)
        by_name = {s.name: s for s in [*cfg.backends, *specs]}  # the state file's newer word wins
        errors = await probe_all([s.url for s in by_name.values()], state.probe)
        now = time.monotonic()
        for i, (spec, error) in enumerate(zip(by_name.values(), errors, strict=True)):
            # at 0: a registration another router made since (in the shared state) is newer
            backend = state.registry.register(spec, healthy=error is None, at=0.0)
            backend.next_check = spread(i, len(by_name), now, cfg.health_interval)
            backend.last_check = time.time()
            backend.last_error = error
        state.health_task = asyncio.create_task(run_checks(state.registry, state.probe, cfg, state.wake_health))
        if cfg.catalog is not None:  # the stack's models, loaded on demand
            state.ondemand = state.proxy.ondemand = OnDemand(
                read_catalog(cfg.catalog), state.registry, state.metrics, state.save, cluster=state.shared
            )
        elif cfg.node_key is not None:  # nodes join (route/nodes.py): their models, loaded on demand on them
            state.ondemand = state.proxy.ondemand = Fleet(
                cfg, state.registry, state.metrics, state.save, cfg.node_key, cluster=state.shared
            )
        if state.shared is not None:
            state.shared.ondemand = state.ondemand
        if state.shared is not None:
            await state.shared.start()  # one pass first: what the other routers know is served from the start
        if state.ondemand is not None:
            state.ondemand.start()

    @app.after_serving
    async def stop() -> None:
        if state.health_task is not None:
            state.health_task.cancel()
            await asyncio.gather(state.health_task, return_exceptions=True)
        if state.ondemand is not None:
            await state.ondemand.close()
        if state.shared is not None:
            await state.shared.close()
        if state.proxy_ is not None:
            await state.proxy_.upstream.close()

    # -- errors: every one leaves as an OpenAI error body --------------------------------------

    @app.errorhandler(RouteError)
    async def route_error(exc: RouteError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return await route_error(
                PayloadTooLarge(
                    f"request body larger than {app.config['MAX_CONTENT_LENGTH']} bytes",
                    headers={"Connection": "close"},
                )
            )
        if status == 408:
            return await route_error(
                RequestTimeout(
                    f"request body not received within {cfg.body_timeout:g} s", headers={"Connection": "close"}
                )
            )
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}  # 405 says what is allowed
        body = error_body(exc.description or exc.name, error_type(status), exc.name.lower().replace(" ", "_"))
        return json_response(body, status, headers)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)  # the handler's own exception, not the ambient one
        return json_response(error_body(f"internal error: {type(exc).__name__}", "server_error", "internal_error"), 500)

    # -- client API: /v1/chat/completions, /v1/completions and /v1/embeddings are served by ClientApi
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = ClientApi(  # type: ignore[method-assign]
        app.asgi_app, lambda: state.proxy, cfg, state.hop, state.started
    )

    @app.get("/v1/models")
    async def models() -> Response:
        created = int(state.started)
        data = state.ondemand.listing(created) if state.ondemand is not None else []
        listed = {d["id"] for d in data}
        for m in state.registry.models():
            if m in listed:
                continue
            entry = {"id": m, "object": "model", "created": created, "owned_by": "local"}
            caps = state.registry.capabilities(m)  # as its servers registered (None: they did not say)
            data.append(
                {**entry, **({"capabilities": caps} if caps is not None else {}), "status": LoadState.LOADED.value}
            )
        return json_response({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> Response:
        healthy = sum(1 for b in state.registry.backends.values() if b.healthy and not b.draining)
        ok = healthy > 0 or state.ondemand is not None  # behind the stack, a model not loaded loads when asked for
        return json_response({"status": "ok" if ok else "unavailable", "healthy_backends": healthy}, 200 if ok else 503)

    add_admin_routes(app, state)
    with_activity(app, add_ui_routes(app, state))  # the web page (/ui/) and the ring of recent requests it shows
    return app
