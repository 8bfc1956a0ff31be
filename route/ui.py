"""The router's web page: /ui/ (static files in route/ui-static/, package data: no CDN, no build step) and the
endpoints it reads.

- GET /ui/ and /ui/app.js, /ui/app.css: the page. It loads without a key; it holds no secret.
- GET /ui/state: one snapshot (JSON): the models with their status, memory, ttl left, requests running and queued,
  recent time to first token and tokens per second; the memory budget; the last requests (route/activity.py);
  the names of the stack's logs.
- GET /ui/events: the same snapshots as server-sent events: one on connect, then one when something changes
  (looked at every TICK seconds) and at least every EVERY seconds.
- GET /logs/stream?source=NAME: a stack log's last lines, then its new lines, as server-sent events
  (route/logstream.py); only the names the catalog lists.

Who may read: the same rule as the cluster API (route/admin.py's admin_refusal): with an admin key, every data
endpoint needs it (Authorization: Bearer; the page sends it from JavaScript and reads event streams with fetch, since
EventSource cannot send headers). Log lines are treated as a write would be: without an admin key they stay closed
unless the router runs with --open-admin. Every response here carries CSP (no inline script or style in the page).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from quart import Quart, Response, redirect, request

from hearth_common.keys import presented_key
from route.activity import Activity, Ring
from route.admin import admin_refusal, json_response
from route.backstats import AiohttpFetch, Scraper
from route.errors import BadRequest, NotFound
from route.lifecycle import LoadState
from route.logstream import follow, log_path
from route.ondemand import OnDemand
from route.state import RouterState

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STREAM_HEADERS = {**PAGE_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
ACTIVITY_SHOWN = 100  # requests in a snapshot
TICK = 0.25  # seconds between looks for a change
EVERY = 1.0  # seconds between snapshots when nothing changed
PING = 15.0  # seconds between keep-alive comments on a quiet log stream


def page_files() -> dict[str, bytes]:
    folder = resources.files("route") / "ui-static"
    return {name: (folder / name).read_bytes() for name in FILES}


def sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class Ui:
    """What the page's endpoints read: the router's state, the ring of recent requests and the servers' metrics."""

    def __init__(self, state: RouterState, ring: Ring, scraper: Scraper) -> None:
        self.state = state
        self.ring = ring
        self.scraper = scraper

    def log_names(self) -> list[str]:
        od = self.state.ondemand
        logs = od.catalog.logs if isinstance(od, OnDemand) else None  # nodes keep their logs
        return list(logs.names) if logs is not None else []

    def _backends(self) -> dict[str, list[Any]]:
        by_model: dict[str, list[Any]] = {}
        for backend in self.state.registry.backends.values():
            for model in backend.spec.models:
                by_model.setdefault(model, []).append(backend)
        return by_model

    async def refresh(self) -> None:
        live = {b.name: b.url for b in self.state.registry.backends.values() if b.healthy and not b.draining}
        await self.scraper.refresh(live)

    def models(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        by_model = self._backends()
        rows = []
        od = self.state.ondemand
        listed: set[str] = set()
        if od is not None:
            for entry in od.entries.values():
                view = od.model_view(entry)
                backends = by_model.get(entry.name, [])
                ttl = entry.spec.ttl
                ttl_left = None
                if ttl > 0 and entry.status == LoadState.LOADED:
                    idle = not entry.active and not entry.waiting
                    ttl_left = round(max(0.0, ttl - (now - entry.last_used)), 1) if idle else ttl
                listed.update(entry.spec.names)
                rows.append(
                    {
                        "name": entry.name,
                        "aliases": [n for n in entry.spec.names if n != entry.name],
                        **view,
                        "ttl_left": ttl_left,
                        "room": entry.room,
                        "backends": [self._backend(b) for b in backends],
                        **self.scraper.stats.model(b.name for b in backends),
                    }
                )
        for model, backends in sorted(by_model.items()):  # registered by hand, not the stack's
            if model in listed:
                continue
            rows.append(
                {
                    "name": model,
                    "aliases": [],
                    "status": LoadState.LOADED.value,
                    "vram_bytes": None,
                    "ram_bytes": None,
                    "ttl": 0,
                    "ttl_left": None,
                    "pinned": False,
                    "active": sum(b.active for b in backends),
                    "waiting": 0,
                    "room": None,
                    "backends": [self._backend(b) for b in backends],
                    **self.scraper.stats.model(b.name for b in backends),
                }
            )
        return rows

    @staticmethod
    def _backend(b: Any) -> dict[str, Any]:
        return {"name": b.name, "healthy": b.healthy, "draining": b.draining, "active": b.active}

    def snapshot(self) -> dict[str, Any]:
        od = self.state.ondemand
        return {
            "time": time.time(),
            "models": self.models(),
            "memory": od.memory() if od is not None else None,
            "activity": self.ring.newest_first(ACTIVITY_SHOWN),
            "logs": self.log_names(),
        }

    def signature(self) -> tuple[Any, ...]:
        """What a change of which the page should hear at once changes (not the clock, not ttl countdowns)."""
        od = self.state.ondemand
        entries = [(e.name, e.status, e.active, e.waiting) for e in od.entries.values()] if od is not None else []
        backends = [(b.name, b.healthy, b.draining, b.active) for b in self.state.registry.backends.values()]
        return self.ring.version, tuple(entries), tuple(backends)

    async def events(self) -> AsyncIterator[bytes]:
        sent: tuple[Any, ...] | None = None
        last = 0.0
        while True:
            now = time.monotonic()
            sig = self.signature()
            if sig != sent or now - last >= EVERY:
                if now - last >= EVERY:
                    await self.refresh()
                sent, last = sig, now
                yield sse(self.snapshot())
            await asyncio.sleep(TICK)


async def log_events(path: Any) -> AsyncIterator[bytes]:
    quiet_since = time.monotonic()
    async for lines in follow(path):
        if lines:
            quiet_since = time.monotonic()
            yield sse({"lines": lines})
        elif time.monotonic() - quiet_since >= PING:
            quiet_since = time.monotonic()
            yield b": ping\n\n"


def add_ui_routes(app: Quart, state: RouterState) -> Ring:
    """The page and its endpoints; returns the ring, which the app's Activity middleware fills."""
    cfg = state.cfg
    files = page_files()
    ring = Ring()
    fetch = AiohttpFetch()
    ui = Ui(state, ring, Scraper(fetch, cfg.backend_key))

    def require(write: bool = False) -> None:
        presented = presented_key(request.headers.get("Authorization"), request.headers.get("x-api-key"))
        refusal = admin_refusal(cfg, presented, write)
        if refusal is not None:
            raise refusal

    @app.after_serving
    async def close_fetch() -> None:
        await fetch.close()

    @app.after_request
    async def page_headers(response: Response) -> Response:
        if request.path == "/ui" or request.path.startswith(("/ui/", "/logs/")):
            for name, value in PAGE_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.get("/ui")
    async def ui_root() -> Any:
        return redirect("/ui/", 308)

    @app.get("/ui/")
    async def ui_index() -> Response:
        return Response(files["index.html"], content_type=FILES["index.html"], headers=PAGE_HEADERS)

    @app.get("/ui/<name>")
    async def ui_file(name: str) -> Response:
        if name not in FILES or name == "index.html":
            raise NotFound(f"no file {name!r} in the page")
        return Response(files[name], content_type=FILES[name], headers=PAGE_HEADERS)

    @app.get("/ui/state")
    async def ui_state() -> Response:
        require()
        await ui.refresh()
        return json_response(ui.snapshot(), headers=PAGE_HEADERS)

    @app.get("/ui/events")
    async def ui_events() -> Response:
        require()
        response = Response(ui.events(), content_type="text/event-stream", headers=STREAM_HEADERS)
        response.timeout = None
        return response

    @app.get("/logs/stream")
    async def logs_stream() -> Response:
        require(write=True)
        source = request.args.get("source")
        if not source:
            raise BadRequest("`source` is required: the name of one of the stack's logs", param="source")
        od = state.ondemand
        logs = od.catalog.logs if isinstance(od, OnDemand) else None  # nodes keep their logs
        if logs is None:
            raise NotFound("this router knows no log folder (it was started without the stack's catalog)")
        path = log_path(logs, source)
        if path is None:
            raise NotFound(f"no log {source[:100]!r}; the stack's logs: {', '.join(logs.names)}", param="source")
        response = Response(log_events(path), content_type="text/event-stream", headers=STREAM_HEADERS)
        response.timeout = None
        return response

    return ring


def with_activity(app: Quart, ring: Ring) -> None:
    """Put the Activity middleware around the app's ASGI handler (after the client API is installed)."""
    # Quart's documented way to wrap its ASGI app in middleware; mypy refuses any assignment to a method
    app.asgi_app = Activity(app.asgi_app, ring)  # type: ignore[method-assign]
