"""A fake of the stack supervisor's control channel (stack/control.py) for the router's on-demand tests: an aiohttp
app on a loopback port in the test's own event loop, with canned answers, so the router's real Control client and
OnDemand manager run against it without starting model servers.

    async with FakeSupervisor({"m": "loaded"}) as sup:      # what GET /models reports, per model
        sup.start_error = "m did not start; the end of ..."  # POST /start answers 503 with it (as StartError does)
        catalog = sup.catalog(["m"])                       # a route.catalog.Catalog that points at it

`sup.calls` records (path, body) of every call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from route.catalog import BudgetEntry, Catalog, CatalogModel, Control, CostEntry

KEY = "s" * 32


class FakeSupervisor:
    def __init__(
        self,
        running: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        on_start: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`host`: the address it listens on (a node's: 127.0.0.2, ...); `on_start`: awaited with the model's name
        on each /start (a node registers its servers with the routers then)."""
        self.host = host
        self.on_start = on_start
        self.running = dict(running or {})  # model -> "loaded" | "loading" (during a /start); the rest are unloaded
        self.start_error: str | None = None
        self.start_delay = 0.0  # seconds each POST /start takes (a load that takes time)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "the control channel needs its key"}, status=401)
        body = json.loads(await request.read() or b"{}") if request.method == "POST" else {}
        self.calls.append((request.path, body))
        if request.path == "/models":
            view = {name: {"status": status, "layers": 0} for name, status in self.running.items()}
            return web.json_response({"models": view})
        if request.path == "/start":
            if self.running.get(body["model"]) != "loaded":
                self.running[body["model"]] = "loading"  # as a real supervisor reports a start in progress
            await asyncio.sleep(self.start_delay)
            if self.start_error is not None:
                self.running.pop(body["model"], None)
                return web.json_response({"error": self.start_error}, status=503)
            if self.on_start is not None and self.running.get(body["model"]) != "loaded":
                await self.on_start(body["model"])
            self.running[body["model"]] = "loaded"
            return web.json_response({"model": body["model"], "status": "loaded", "layers": body["layers"]})
        if request.path == "/stop":
            self.running.pop(body["model"], None)
            return web.json_response({"model": body["model"], "status": "unloaded"})
        return web.json_response({"ok": True})  # /ready

    def catalog(
        self, models: list[str], load_timeout: float = 10.0, preload: bool = True, ram: int | None = None
    ) -> Catalog:
        """Each model holds 1 byte of RAM; `ram`: the budget (None: no limit)."""
        entries = [
            CatalogModel(name=m, names=[m], preload=preload, costs=[CostEntry(layers=0, vram=0, ram=1)]) for m in models
        ]
        return Catalog(
            control=Control(url=self.url, key=KEY),
            load_timeout=load_timeout,
            models=entries,
            budget=BudgetEntry(ram=ram),
        )

    async def __aenter__(self) -> FakeSupervisor:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
