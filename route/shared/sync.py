"""What each kind of shared state does, between this router's memory and Redis (store.py).

One loop per replica, every SYNC_INTERVAL seconds or at once when something local changed, reads everything shared
(two round trips), applies what is newer than what this replica knows, writes what Redis lacks and refreshes this
replica's heartbeat and per-model counts:

- backends (and nodes): a registration carries the time it was made; the newer one wins, an unregistration leaves a
  tombstone that drops older registrations everywhere. A registration Redis lacks (it restarted empty, or this
  replica registered while it was down) is written back: the replicas converge on the union.
- passive ejections: written at once by the replica that ejected; every other replica ejects the backend until the
  same time (never the last healthy backend of a model, as locally).
- the stack's models: each load state change is written with its time; a replica applies a newer LOADED (adopting the
  model) or UNLOADING/UNLOADED (another replica evicted or expired it). A load first takes the model's lock
  (store.LOCK_TTL, refreshed while it runs): one load per model across replicas; the others wait for the LOADED.
  What to load or evict on one node is decided under that node's placement lock (`placing`), counting the other
  replicas' loads there read fresh: two replicas loading different models onto one node never share its free room.
- the prefix strategy's index: a journal of what each replica learned, read into every replica's own copy (prefix.py).
- counts: each replica's requests in flight and waiting per model, and when it last used each, under a key that
  expires with its heartbeat (3 s): no replica evicts or expires a model another one is using, and a dead replica's
  counts vanish.

Redis down: each replica goes on with what it knows (a load goes ahead without the lock: the supervisor's start is
idempotent), `hearth_route_shared_state_up` is 0, and once Redis answers again the loop's next pass converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge
from pydantic import ValidationError
from redis.asyncio.lock import Lock

from route.config import BackendSpec, RouterConfig
from route.metrics import Metrics
from route.registry import Backend, Registry
from route.shared.prefix import PrefixShare
from route.shared.store import BACKENDS, EJECTED, LOCK_TTL, MODELS, SharedStore, Snapshot

if TYPE_CHECKING:
    from route.ondemand import Entry

log = logging.getLogger("route.shared")

SYNC_INTERVAL = 0.5  # seconds between passes: an ejection or a registration reaches every replica within this
HEARTBEAT_TTL = 3.0  # a replica not heard from for this long is gone, and its counts with it
PLACE_POLL = 0.02  # seconds between tries of a node's placement lock (another router holds it for milliseconds)


def replica_name(cfg: RouterConfig) -> str:
    return f"{socket.gethostname()}:{cfg.port}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Remote:
    """Other replicas' word on one stack model."""

    status: str | None = None  # its last load state, as shared
    at: float = 0.0
    by: str = ""
    layers: int | None = None
    active: int = 0  # in flight on the other replicas
    waiting: int = 0
    used: float = 0.0  # Unix time another replica last used it

    def busy(self) -> str | None:
        if self.active or self.waiting:
            return f"{self.active} in flight, {self.waiting} waiting on other routers"
        return None


@dataclass
class Claim:
    """A held load lock, refreshed until released."""

    lock: Lock | None  # None: Redis was down, the load goes on alone
    refresher: asyncio.Task[None] | None = None


@dataclass
class SharedSync:
    store: SharedStore
    registry: Registry
    cfg: RouterConfig
    metrics: Metrics
    wake_health: Callable[[], None]
    ondemand: Any = None  # route.ondemand.OnDemand when the router has a catalog (set after start)
    prefix: PrefixShare | None = None  # the prefix strategy's index (prefix.py; set at start)
    remote: dict[str, Remote] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _pending: set[asyncio.Task[Any]] = field(default_factory=set)
    _closing: bool = False
    _seen_ejections: dict[str, float] = field(default_factory=dict)
    _gauge: Gauge | None = None

    def __post_init__(self) -> None:
        self._gauge = Gauge(
            "hearth_route_shared_state_up",
            "1 while the shared state (Redis) answers, 0 while this router serves from what it knows",
            registry=self.metrics.registry,
        )
        self._gauge.set(0)
        self.store._on_up = lambda up: self._gauge.set(int(up)) if self._gauge is not None else None
        self.registry.listener = self

    # -- life ----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """One pass now (bounded by Redis' timeout), then the loop in the background."""
        self._wake = asyncio.Event()  # bound to the serving loop
        await self.sync_once()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        # the flag as well as the cancel: redis' client can turn a cancellation that lands inside a command into a
        # ConnectionError, which the loop survives (the task is then left cancelling, waiting forever)
        self._closing = True
        self._wake.set()
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.counts({}, 0.001)  # a clean stop: its counts go at once
        await self.store.close()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation that arrives as the event is
            # set, and the loop then outlives the router's shutdown (route/health.py says the same)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self.sync_once()
            except Exception:  # a bug here must not end sharing for good
                log.exception("shared state pass failed")

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- one pass ------------------------------------------------------------------------------------------------

    async def sync_once(self) -> None:
        snap = await self.store.snapshot(HEARTBEAT_TTL)
        if snap is None:
            return
        now = time.time()
        self._apply_backends(snap)
        self._apply_ejections(snap, now)
        if self.ondemand is not None:
            self._apply_models(snap)
        await self._write_missing(snap)
        await self.store.counts(self._counts(), HEARTBEAT_TTL)
        if self.prefix is not None:
            await self.prefix.exchange()

    def _apply_backends(self, snap: Snapshot) -> None:
        for name, item in snap.backends.items():
            try:
                spec = BackendSpec.model_validate(item["spec"])
                at = float(item["at"])
            except (KeyError, TypeError, ValueError, ValidationError):
                continue
            if snap.gone.get(name, -math.inf) >= at:
                continue
            local = self.registry.backends.get(name)
            if local is not None and local.registered_at >= at:
                continue
            backend = self.registry.register(spec, healthy=True, at=at, announce=False)
            backend.next_check = time.monotonic()  # checked by this replica at once
            log.info("registered %s at %s for %s (from another router)", name, spec.url, spec.models)
            self.wake_health()
        for name, at in snap.gone.items():
            local = self.registry.backends.get(name)
            if local is not None and not local.draining and local.registered_at <= at:
                self.registry.unregister(name, announce=False)
                log.info("unregistered %s (by another router)", name)

    def _apply_ejections(self, snap: Snapshot, now: float) -> None:
        for name, item in snap.ejected.items():
            try:
                at, until = float(item["at"]), float(item["until"])
            except (KeyError, TypeError, ValueError):
                continue
            backend = self.registry.backends.get(name)
            if backend is None or self._seen_ejections.get(name, 0.0) >= at or until <= now:
                continue
            self._seen_ejections[name] = at
            if not backend.healthy or self.registry.is_last_healthy(backend):
                continue
            mono = time.monotonic()
            backend.healthy = False
            backend.passes_in_row = 0
            backend.ejected_at = mono
            backend.ejected_until = backend.next_check = mono + (until - now)
            backend.last_error = "ejected by another router"
            log.info("%s ejected for %.1f s (by another router)", name, until - now)
            self.wake_health()

    def _apply_models(self, snap: Snapshot) -> None:
        live = set(snap.busy)
        totals: dict[str, list[float]] = {}
        for replica, counts in snap.busy.items():
            if replica == self.store.replica:
                continue
            for model, c in counts.items():
                if isinstance(c, dict):
                    t = totals.setdefault(model, [0, 0, 0.0])
                    t[0] += int(c.get("active", 0))
                    t[1] += int(c.get("waiting", 0))
                    t[2] = max(t[2], float(c.get("used", 0.0)))
        remote = {}
        for name in self.ondemand.by_key:
            item = snap.models.get(name) or {}
            status, by = item.get("status"), str(item.get("by", ""))
            if status in ("loading", "unloading") and by not in live:
                status = None  # its router died in the middle: the lock lapses and the next request loads it
            active, waiting, used = totals.get(name, [0, 0, 0.0])
            layers = item.get("layers")
            remote[name] = Remote(
                status,
                float(item.get("at", 0.0)),
                by,
                layers if isinstance(layers, int) else None,
                int(active),
                int(waiting),
                used,
            )
        if remote != self.remote:
            self.remote = remote
            self.ondemand.changed()  # a load waiting for room another router held may go on
        for name, r in remote.items():
            if r.by != self.store.replica and r.status is not None:
                self.ondemand.apply_remote(name, r.status, r.layers, r.at)

    async def _write_missing(self, snap: Snapshot) -> None:
        """What this replica knows and Redis lacks (Redis restarted, or it was down when it changed)."""
        backends = {
            b.name: {"spec": b.spec.model_dump(), "at": b.registered_at}
            for b in self.registry.backends.values()
            if not b.draining
            and snap.gone.get(b.name, -math.inf) < b.registered_at
            and float((snap.backends.get(b.name) or {}).get("at", -math.inf)) < b.registered_at
        }
        await self.store.put_many(BACKENDS, backends)
        if self.ondemand is not None:
            models = {
                e.key: self._model_record(e)
                for e in self.ondemand.by_key.values()
                if e.changed_at > float((snap.models.get(e.key) or {}).get("at", 0.0))
            }
            await self.store.put_many(MODELS, models)

    def _counts(self) -> dict[str, Any]:
        if self.ondemand is None:
            return {}
        return {
            e.key: {"active": e.active, "waiting": e.waiting, "used": time.time() - (time.monotonic() - e.last_used)}
            for e in self.ondemand.by_key.values()
            if e.active or e.waiting or e.status.value != "unloaded"
        }

    # -- local events (never awaited by a request) ---------------------------------------------------------------

    def registered(self, backend: Backend) -> None:
        self.wake()

    def unregistered(self, name: str, at: float) -> None:
        self._background(self.store.remove(BACKENDS, name, at))

    def ejected(self, backend: Backend) -> None:
        now = time.time()
        self._seen_ejections[backend.name] = now
        until = now + max(backend.ejected_until - time.monotonic(), 0.0)
        self._background(self.store.put(EJECTED, backend.name, {"at": now, "until": until}))

    def model_changed(self, entry: Entry) -> None:
        self._background(self.store.put(MODELS, entry.key, self._model_record(entry)))

    def _model_record(self, entry: Entry) -> dict[str, Any]:
        layers = entry.cost.layers if entry.cost is not None else None
        return {"status": entry.status.value, "layers": layers, "at": entry.changed_at, "by": self.store.replica}

    def counts_changed(self) -> None:
        self.wake()

    def remote_of(self, model: str) -> Remote:
        return self.remote.get(model) or Remote()

    # -- the load lock -------------------------------------------------------------------------------------------

    async def claim(self, model: str) -> Claim | None:
        """The model's load lock: a Claim once held (or when Redis is down), None while another replica holds it."""
        lock = self.store.lock(model)
        held = await self.store.try_lock(lock)
        if held is None:
            return Claim(None)
        if not held:
            return None
        return Claim(lock, asyncio.create_task(self._refresh(lock)))

    async def shared_status(self, model: str) -> tuple[str, int | None, float] | None:
        """The model's shared load state read now (status, layers, at)."""
        raw = await self.store.call(lambda r: r.hget(MODELS, model))
        if raw is None:
            return None
        try:
            item = json.loads(raw)
            return str(item["status"]), item.get("layers"), float(item["at"])
        except (TypeError, ValueError, KeyError):
            return None

    async def publish_now(self, entry: Entry) -> None:
        await self.store.put(MODELS, entry.key, self._model_record(entry))

    async def release(self, claim: Claim) -> None:
        if claim.refresher is not None:
            claim.refresher.cancel()
        if claim.lock is not None:
            await self.store.unlock(claim.lock)

    # -- placing on one node ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def placing(self, node: str | None, deadline: float) -> AsyncIterator[dict[str, tuple[str, int]]]:
        """Hold the node's placement lock while a load there is decided and published, so two routers loading
        different models onto one node at once cannot both count the same free room. Yields what other routers
        have loading or loaded there now ({key: (status, layers)}), read under the lock. Redis down: no lock (as
        without shared state), nothing seen."""
        lock = self.store.place_lock(node)
        while (held := await self.store.try_lock(lock)) is False:
            if time.monotonic() >= deadline:
                break  # a holder that takes this long is stuck: decide with what is known (the lock lapses anyway)
            await asyncio.sleep(PLACE_POLL)
        try:
            found = await self.store.models_now() if held else None
            reserved: dict[str, tuple[str, int]] = {}
            if found is not None:
                models, live = found
                prefix = f"{node}/" if node is not None else ""
                for key, item in models.items():
                    status, layers, by = item.get("status"), item.get("layers"), item.get("by")
                    if (node is None) == ("/" in key) or not key.startswith(prefix) or by == self.store.replica:
                        continue
                    if isinstance(layers, int) and (status == "loaded" or (status == "loading" and by in live)):
                        reserved[key] = (str(status), layers)
            yield reserved
        finally:
            if held:
                await self.store.unlock(lock)

    async def _refresh(self, lock: Lock) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL / 3)
            await self.store.refresh(lock)
