"""What the router's app owns, built at start: settings, backends, metrics, the proxy and the health loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from route.config import RouterConfig
from route.metrics import Metrics
from route.proxy import Proxy
from route.registry import Registry, write_state
from route.upstream import Upstream

if TYPE_CHECKING:
    from route.nodes import Fleet
    from route.ondemand import OnDemand
    from route.shared.sync import SharedSync


@dataclass
class RouterState:
    cfg: RouterConfig
    registry: Registry
    metrics: Metrics
    wake_health: asyncio.Event
    make_upstream: Callable[[RouterConfig], Upstream]
    hop: str  # this router's name in Via headers (route/hops.py)
    proxy_: Proxy | None = None
    health_task: asyncio.Task[None] | None = None
    ondemand: OnDemand | Fleet | None = None  # the stack's models, loaded on demand (route/ondemand.py)
    started: float = field(default_factory=time.time)
    save_lock: asyncio.Lock | None = None
    shared: SharedSync | None = None  # the state shared with other routers (--shared-state)

    @property
    def proxy(self) -> Proxy:
        assert self.proxy_ is not None, "used before serving"
        return self.proxy_

    async def probe(self, url: str) -> str | None:
        """A health check that names this router in Via, so a URL that leads back here answers 508."""
        return await self.proxy.upstream.probe(url, {"Via": f"1.1 {self.hop}"})

    async def save(self) -> None:
        """Write the state file in a worker thread (an fsync takes milliseconds), one write at a time, each with
        the registrations as they are when it starts."""
        path = self.cfg.state_file
        if path is None:
            return
        if self.save_lock is None:
            self.save_lock = asyncio.Lock()
        async with self.save_lock:
            await asyncio.to_thread(write_state, path, self.registry.snapshot())
