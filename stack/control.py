"""The supervisor's control channel: how the router, which decides what is loaded, has the supervisor start and stop
model servers. HTTP on 127.0.0.1 only, every request with `Authorization: Bearer KEY`, where KEY is generated for
this run and handed to the router in its owner-only catalog file (never on a command line or in a log). A node
(stack/node.py) serves the same API on its own address, with the node key the routers it joins hold.

    GET  /models                              every model: {"status": loaded|loading|unloaded, "layers": n}
    POST /start  {"model", "layers", "why"}  start its servers (idempotent); 200 once each is healthy and registered
    POST /stop   {"model", "why"}            stop its servers (idempotent); 200 once every process is gone
    POST /ready  {"notes": [...]}            the router has loaded what it preloads: print the notes and the banner

The supervisor only executes: it never decides on its own to load or unload a model (route/ondemand.py does).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hearth_common.keys import key_matches, presented_key
from stack.errors import StartError


class Executor(Protocol):
    def models_view(self) -> dict[str, dict[str, Any]]: ...
    async def start_model(self, name: str, layers: int, why: str) -> int: ...
    async def stop_model(self, name: str, why: str) -> None: ...
    def router_ready(self, notes: list[str]) -> None: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@dataclass
class ControlServer:
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_control(executor: Executor, key: str, host: str = "127.0.0.1", port: int = 0) -> ControlServer:
    """Serve the control channel on `host`:`port` (default: a free loopback port)."""

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not key_matches(presented_key(request.headers.get("Authorization"), None), key):
            return _error(401, "the control channel needs its key")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # every answer is JSON, the errors too
            return _error(exc.status, exc.text or exc.reason)

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return data

    def model_of(data: dict[str, Any]) -> str:
        name = data.get("model")
        if not isinstance(name, str) or name not in executor.models_view():
            raise web.HTTPNotFound(text=f"no model {name!r} in this stack")
        return name

    def why_of(data: dict[str, Any]) -> str:
        why = data.get("why", "")
        return why[:200] if isinstance(why, str) else ""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"models": executor.models_view()})

    async def start(request: web.Request) -> web.Response:
        data = await body(request)
        name = model_of(data)
        layers = data.get("layers", 0)
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
            return _error(400, "`layers` must be a non-negative integer")
        try:
            used = await executor.start_model(name, layers, why_of(data))
        except StartError as err:
            return _error(503, str(err))
        return web.json_response({"model": name, "status": "loaded", "layers": used})

    async def stop(request: web.Request) -> web.Response:
        data = await body(request)
        name = model_of(data)
        await executor.stop_model(name, why_of(data))
        return web.json_response({"model": name, "status": "unloaded"})

    async def ready(request: web.Request) -> web.Response:
        notes = (await body(request)).get("notes", [])
        executor.router_ready([str(n)[:500] for n in notes] if isinstance(notes, list) else [])
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[auth], client_max_size=64 * 1024)
    app.add_routes(
        [web.get("/models", models), web.post("/start", start), web.post("/stop", stop), web.post("/ready", ready)]
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = runner.addresses[0][1]
    return ControlServer(runner, f"http://{host}:{port}")
