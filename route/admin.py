"""The cluster API: /backends/* (register, unregister, list), /models/load and /models/unload (the stack's models,
route/ondemand.py), /status and /metrics.

Who may use it (`admin_refusal`, pure): with an admin key, every one of these routes needs it. Without one,
reads are open but writes are refused (403) unless the router was started with --open-admin: an open
registration endpoint lets anyone put a server of theirs in the path of other clients' prompts.

Registration accepts http(s) URLs on --allow-backend-hosts only (loopback by default), probes the URL's /health
and tells the caller only "unreachable" or "not a model server" (a detailed reason would make the router a port
scanner); a URL that leads back to this router is refused too.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from quart import Quart, Response, request

from hearth_common.jsonbody import BodyError, parse_object
from hearth_common.keys import key_matches, presented_key
from hearth_common.validation import error_place, first_error
from route.config import BackendSpec, RouterConfig
from route.control import Control, ControlError
from route.errors import BadRequest, Forbidden, NotFound, RouteError, Unauthorized
from route.hops import LOOP
from route.hosts import host_allowed
from route.nodes import Fleet, NodeRegistration
from route.state import RouterState
from route.upstream import TIMED_OUT, UNREACHABLE, answered

log = logging.getLogger("route")


def admin_refusal(cfg: RouterConfig, presented: str | None, write: bool) -> RouteError | None:
    """Why a request to the cluster API is refused, or None when it may go on."""
    if cfg.admin_key is not None:
        if key_matches(presented, cfg.admin_key):
            return None
        return Unauthorized("this endpoint needs the admin key: Authorization: Bearer <key>")
    if write and not cfg.open_admin:
        return Forbidden(
            "the router's admin API is closed: give it an admin key (--admin-key-file or HEARTH_ROUTE_ADMIN_KEY), "
            "or start it with --open-admin on a machine where every user is trusted"
        )
    return None


def probe_refusal(name: str, url: str, error: str) -> BadRequest:
    """The registration error for a failed probe: which of three, never the low-level reason."""
    if error.startswith(UNREACHABLE) or error == TIMED_OUT:
        what = "is unreachable"
    elif error == answered(LOOP):
        what = "leads back to this router"
    else:
        what = "is not a model server (its /health does not answer 200)"
    return BadRequest(f"backend {name!r} at {url} {what}", param="url")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def node_refusal(cfg: RouterConfig, presented: str | None) -> RouteError | None:
    """Why a node's call is refused (None: it may go on). Nodes use the node key; the admin key also does."""
    if cfg.node_key is not None and key_matches(presented, cfg.node_key):
        return None
    if cfg.admin_key is not None and key_matches(presented, cfg.admin_key):
        return None
    if cfg.node_key is None:
        return Forbidden("this router takes no nodes: give it a node key (--node-key-file or HEARTH_ROUTE_NODE_KEY)")
    return Unauthorized("a node needs the node key: Authorization: Bearer <key>")


def add_admin_routes(app: Quart, state: RouterState) -> None:
    cfg = state.cfg

    def presented() -> str | None:
        return presented_key(request.headers.get("Authorization"), request.headers.get("x-api-key"))

    def require_admin(write: bool = False, node: bool = False) -> None:
        """`node`: a node's key will do as well (a node registers its own model servers)."""
        if node and cfg.node_key is not None and key_matches(presented(), cfg.node_key):
            return
        refusal = admin_refusal(cfg, presented(), write)
        if refusal is not None:
            raise refusal

    async def json_body() -> dict[str, Any]:
        try:
            # all three arguments spelled: only that overload of Quart's get_data is typed as bytes
            return parse_object(await request.get_data(cache=True, as_text=False, parse_form_data=False))
        except BodyError as exc:
            raise BadRequest(str(exc)) from None

    @app.post("/backends/register")
    async def register() -> Response:
        require_admin(write=True, node=True)
        try:
            spec = BackendSpec.model_validate(await json_body())
        except ValidationError as exc:
            raise BadRequest(f"invalid registration: {first_error(exc)}", param=error_place(exc)) from None
        host = urlsplit(spec.url).hostname or ""
        if not host_allowed(host, cfg.allow_backend_hosts):
            raise BadRequest(f"backend host {host!r} is not allowed here (--allow-backend-hosts)", param="url")
        error = await state.probe(spec.url)
        if error is not None:
            raise probe_refusal(spec.name, spec.url, error)
        backend = state.registry.register(spec, healthy=True)
        backend.next_check = time.monotonic() + cfg.health_interval
        backend.last_check = time.time()
        await state.save()
        state.wake_health.set()
        log.info("registered %s at %s for %s", spec.name, spec.url, spec.models)
        return json_response(backend.view())

    async def unregister_name(name: str) -> Response:
        backend = state.registry.unregister(name)
        await state.save()
        log.info("unregistered %s (%d in flight)", name, backend.active)
        return json_response({"name": name, "draining": backend.active > 0, "active": backend.active})

    @app.post("/backends/unregister")
    async def unregister() -> Response:
        require_admin(write=True, node=True)
        name = (await json_body()).get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("`name` is required and must be a string", param="name")
        return await unregister_name(name)

    @app.delete("/backends/<path:name>")
    async def delete_backend(name: str) -> Response:
        require_admin(write=True)
        return await unregister_name(name)

    async def model_in_body() -> str:
        require_admin(write=True)
        if state.ondemand is None:
            raise NotFound("this router loads no model on demand (it was started without a catalog)")
        name = (await json_body()).get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("`model` is required and must be a string", param="model")
        return name

    @app.post("/models/load")
    async def load_model() -> Response:
        name = await model_in_body()
        assert state.ondemand is not None
        return json_response(await state.ondemand.load(name))

    @app.post("/models/unload")
    async def unload_model() -> Response:
        name = await model_in_body()
        assert state.ondemand is not None
        return json_response(await state.ondemand.unload(name))

    @app.post("/nodes/register")
    async def register_node() -> Response:
        refusal = node_refusal(cfg, presented())
        if refusal is not None:
            raise refusal
        if not isinstance(state.ondemand, Fleet):
            raise NotFound("this router takes no nodes (it runs its own stack)")
        try:
            spec = NodeRegistration.model_validate(await json_body())
            url = spec.checked_url()
        except (ValidationError, ValueError) as exc:
            message = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise BadRequest(f"invalid node registration: {message}") from None
        host = urlsplit(url).hostname or ""
        if not host_allowed(host, cfg.allow_backend_hosts):
            raise BadRequest(f"node host {host!r} is not allowed here (--allow-backend-hosts)", param="url")
        try:  # the router's word must reach it too: its control API answers the same key
            await Control(url, cfg.node_key or "", 10).models_once()
        except ControlError as exc:
            raise BadRequest(f"node {spec.name!r}: its control API at {url} did not answer: {exc}") from None
        node = await state.ondemand.register(spec.model_copy(update={"url": url}))
        return json_response(node.view())

    @app.get("/nodes")
    async def list_nodes() -> Response:
        require_admin()
        fleet = state.ondemand
        return json_response({"nodes": [n.view() for n in fleet.nodes.values()] if isinstance(fleet, Fleet) else []})

    @app.get("/nodes/<name>")
    async def one_node(name: str) -> Response:
        """A node asks whether this router still knows it (it registers again when not)."""
        refusal = node_refusal(cfg, presented())
        if refusal is not None:
            raise refusal
        fleet = state.ondemand
        node = fleet.nodes.get(name) if isinstance(fleet, Fleet) else None
        if node is None:
            raise NotFound(f"no node named {name!r}", param="name")
        return json_response(node.view())

    @app.get("/backends")
    async def list_backends() -> Response:
        require_admin()
        return json_response({"backends": [b.view() for b in state.registry.backends.values()]})

    @app.get("/status")
    async def status() -> Response:
        require_admin()
        per_model: dict[str, dict[str, Any]] = {}
        for b in state.registry.backends.values():
            for m in b.spec.models:
                entry = per_model.setdefault(
                    m, {"strategy": cfg.strategy_for(m), "backends": [], "healthy": 0, "active": 0, "total": 0}
                )
                entry["backends"].append(b.name)
                entry["healthy"] += int(b.healthy and not b.draining)
                entry["active"] += b.active
                entry["total"] += b.total
        return json_response(
            {
                "strategy": cfg.strategy,
                "model_strategies": cfg.model_strategies,
                "backends": [b.view() for b in state.registry.backends.values()],
                "models": per_model,
                **({"memory": state.ondemand.memory()} if state.ondemand is not None else {}),
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        require_admin()
        m = state.metrics
        m.healthy.clear()
        m.active.clear()
        for b in state.registry.backends.values():
            m.healthy.labels(b.name).set(int(b.healthy and not b.draining))
            m.active.labels(b.name).set(b.active)
        return Response(m.render(), content_type=m.content_type)
