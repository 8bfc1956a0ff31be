"""On-demand loading: the router decides which of the stack's models are loaded, the supervisor executes.

Why the router decides. Whether a model may be unloaded depends on its requests in flight and waiting, and only
the router sees every request: it counts them exactly (a lease per request, held until the last byte of a stream),
with no polling and no second copy of the counts elsewhere that could go stale. So one process, on one event loop,
owns every decision: a plan and the state change it implies (reserving the room, marking victims `unloading`)
happen in one step with no await in between, which rules out two loads taking the same room, a victim picked up
by a new request after it was chosen, or a second load of a model already loading. The policy itself (what fits,
what to evict) is the pure route/residency.py; the load states and their changes route/lifecycle.py; the channel
to the supervisor route/control.py. The supervisor (stack/control.py) only starts and stops processes
on the router's word over a loopback channel authenticated with a key generated per run; it also keeps restarting
a server that dies, as before. A router that restarts asks the supervisor what runs and adopts it, so nothing is
loaded twice and nothing is left behind.

The life of a model: unloaded -> loading -> loaded -> unloading -> unloaded (route/lifecycle.py: the allowed changes).
- A request for a model that is not loaded waits (its streaming response just starts late) while one load runs:
  every concurrent first request joins the same load task. A load plans against the budget; when busy models hold
  the room it waits for any of them to change, bounded by the load timeout (then 503 naming what holds the room);
  a model too large for the budget even alone gets 400 naming its size and the budget.
- Victims and idle models past their ttl are marked `unloading` at once (no new request is routed to them; a new
  one waits and loads the model again afterwards), their backends leave the registry, then the supervisor stops
  the processes; only then does a load that needed their room start its own.
- A model with requests in flight or waiting is never evicted; a pinned one never; an explicit admin unload waits
  for the requests in flight to finish.
Every load and unload is counted in /metrics and announced on the stack's console by the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from route.catalog import Catalog, CatalogModel
from route.control import Control, ControlError
from route.errors import ModelNotFound, ModelNotLoaded, ModelTooLarge
from route.lifecycle import LoadState, advance
from route.metrics import Metrics
from route.registry import Backend, Registry
from route.residency import Budget, Cost, Decision, Holder, Load, TooLarge, decide, size

if TYPE_CHECKING:
    from route.shared.sync import SharedSync

log = logging.getLogger("route.ondemand")

LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
RETRY_LOAD = "5"  # Retry-After for a model that did not load (in time, or at all): a later try may load it


@dataclass(eq=False)
class Entry:
    """One model of the catalog and what the router knows of it. Mutated only on the event loop."""

    spec: CatalogModel
    status: LoadState = LoadState.UNLOADED  # changed only by OnDemand._set, through lifecycle.advance
    cost: Cost | None = None  # what it holds while loading, loaded or unloading
    active: int = 0  # requests holding a lease: routed, in flight until their last byte
    waiting: int = 0  # requests waiting for it to load
    last_used: float = field(default_factory=time.monotonic)
    load: asyncio.Task[None] | None = None  # the one load in progress: every waiter awaits this task
    unload: asyncio.Task[None] | None = None
    room: str | None = None  # while a load waits for room: who holds it
    keep_alive: float | None = None  # the last request's Ollama keep_alive (seconds; inf: forever); None: the ttl
    changed_at: float = 0.0  # Unix time of its last change of status, here or on another router (shared state)
    node: str | None = None  # the node it runs on (route/nodes.py); None: this router's own stack

    @property
    def key(self) -> str:
        """Its name in the shared state: NODE/MODEL for a node's model."""
        return self.spec.name if self.node is None else f"{self.node}/{self.spec.name}"

    def __post_init__(self) -> None:
        self.status = LoadState(self.status)  # a wire string given for a start state is checked and typed

    @property
    def name(self) -> str:
        return self.spec.name

    def stay(self) -> float | None:
        """Idle seconds before it unloads (0: at once); None: it stays loaded."""
        if self.keep_alive is not None:
            return None if self.keep_alive == math.inf else self.keep_alive
        return self.spec.ttl if self.spec.ttl > 0 else None

    def idle(self) -> bool:
        return self.status == LoadState.LOADED and not self.active and not self.waiting

    def busy(self) -> str | None:
        """Why it may not be evicted now; None when it may."""
        if self.status != LoadState.LOADED:
            return self.status.value
        if self.spec.pinned:
            return "pinned"
        if self.active or self.waiting:
            return f"{self.active} in flight, {self.waiting} waiting"
        return None


class Lease:
    """One request's hold on its model, given back exactly once (when the response, or the stream, ends)."""

    __slots__ = ("_done", "_entry", "_manager")

    def __init__(self, manager: OnDemand, entry: Entry) -> None:
        self._manager = manager
        self._entry = entry
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._entry.active -= 1
            self._entry.last_used = time.monotonic()
            self._manager.changed()
            self._manager.counted(self._entry)
            self._manager.released(self._entry)


class OnDemandMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.loads = Counter("route_model_loads", "Model loads by result (ok, failed)", ["model", "result"], registry=r)
        self.unloads = Counter(
            "route_model_unloads",
            "Model unloads by reason (ttl, keep_alive, evicted, admin)",
            ["model", "reason"],
            registry=r,
        )
        self.load_seconds = Histogram(
            "route_model_load_seconds",
            "Seconds from starting a model's servers to healthy",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.loaded_bytes = Gauge(
            "route_model_loaded_bytes",
            "Bytes a loaded model holds, planned from its GGUF",
            ["model", "memory"],
            registry=r,
        )
        self.status = Gauge("route_model_status", "1 for the model's current status", ["model", "status"], registry=r)


class OnDemand:
    def __init__(
        self,
        catalog: Catalog,
        registry: Registry,
        metrics: Metrics,
        save: Callable[[], Awaitable[None]],
        control: Control | None = None,
        cluster: SharedSync | None = None,
        node: str | None = None,
        ondemand_metrics: OnDemandMetrics | None = None,
    ) -> None:
        """`node`: the node whose models these are (route/nodes.py), which names them in the shared state; `ondemand_
        metrics`: the metrics every node's manager shares."""
        self.catalog = catalog
        self.budget: Budget = catalog.budget.budget()
        self.registry = registry
        self.save = save
        self.control = control or Control(catalog.control.url, catalog.control.key, catalog.load_timeout)
        self.metrics = ondemand_metrics or OnDemandMetrics(metrics)
        self.node = node
        self.cluster = cluster  # the other routers' word (route/shared/sync.py); None: this router alone
        self.entries = {m.name: Entry(m, node=node) for m in catalog.models}
        self.by_name = {n: e for e in self.entries.values() for n in e.spec.names}
        self.by_key = {e.key: e for e in self.entries.values()}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        for entry in self.entries.values():
            self._gauges(entry)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt what runs, preload, then watch the ttls (background tasks; the app serves meanwhile)."""
        self._tasks = [asyncio.create_task(self._startup()), asyncio.create_task(self._expire())]

    async def close(self) -> None:
        tasks = [*self._tasks, *(t for e in self.entries.values() for t in (e.load, e.unload) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.control.close()

    def changed(self) -> None:
        """Something a waiting load or unload may care about changed: wake them all."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until_changed(self, deadline: float | None) -> bool:
        """False when the deadline passed first."""
        event = self._changed
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return False
        try:
            async with asyncio.timeout(timeout):  # not wait_for: 3.11's can drop a cancellation (route/health.py)
                await event.wait()
        except TimeoutError:
            return False
        return True

    # -- the request path ------------------------------------------------------------------------------------------

    def knows(self, model: str) -> bool:
        """A name (or alias) of the catalog's models."""
        return model in self.by_name

    async def acquire(self, model: str, keep_alive: float | None = None) -> Lease | None:
        """A lease on the model once it is loaded (loading it if needed); None for a name the catalog lacks.
        `keep_alive` (Ollama's, in seconds; inf: forever) sets how long it stays loaded once idle again, until the
        next request sets it anew; None: its ttl."""
        entry = self.by_name.get(model)
        if entry is None:
            return None
        entry.last_used = time.monotonic()
        entry.keep_alive = keep_alive
        if entry.status != LoadState.LOADED:
            entry.waiting += 1
            try:
                await self._until_loaded(entry, "a request is waiting")
            except BaseException:
                entry.waiting -= 1
                self.changed()
                raise
            entry.waiting -= 1  # and active += 1 below, with no await in between: never seen idle
        entry.active += 1
        self.counted(entry)
        return Lease(self, entry)

    def counted(self, entry: Entry) -> None:
        """Its counts changed: other routers hear at once when it turns busy or idle (else within a heartbeat)."""
        if self.cluster is not None and entry.active + entry.waiting <= 1:
            self.cluster.counts_changed()

    async def _until_loaded(self, entry: Entry, why: str) -> None:
        timeout = self.catalog.load_timeout
        deadline = time.monotonic() + timeout
        while entry.status != LoadState.LOADED:
            if entry.status == LoadState.UNLOADING:
                if not await self._until_changed(deadline):
                    raise ModelNotLoaded(
                        f"model {entry.name!r} was still unloading after {timeout:g} s",
                        headers={"Retry-After": RETRY_LOAD},
                    )
                continue
            if entry.load is None:
                entry.load = self._task(self._load(entry, why), entry)
            try:
                await asyncio.wait_for(asyncio.shield(entry.load), max(deadline - time.monotonic(), 0))
            except TimeoutError:
                detail = f": waiting for room, {entry.room}" if entry.room else ""
                raise ModelNotLoaded(
                    f"model {entry.name!r} did not load within {timeout:g} s{detail}",
                    headers={"Retry-After": RETRY_LOAD},
                ) from None

    def _task(self, coro: Any, entry: Entry) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)

        def done(t: asyncio.Task[None]) -> None:
            if entry.load is t:
                entry.load = None
            if not t.cancelled():
                t.exception()  # retrieved here too: a load nobody waits for any more must not warn

        task.add_done_callback(done)
        return task

    # -- loading ---------------------------------------------------------------------------------------------------

    def _busy(self, entry: Entry) -> str | None:
        """Why it may not be evicted now, here or on another router."""
        return entry.busy() or (self.cluster.remote_of(entry.key).busy() if self.cluster is not None else None)

    def _last_used(self, entry: Entry) -> float:
        """Monotonic time it was last used, here or on another router."""
        if self.cluster is None:
            return entry.last_used
        used = self.cluster.remote_of(entry.key).used
        return max(entry.last_used, time.monotonic() - (time.time() - used)) if used else entry.last_used

    def _holders(self, but: Entry) -> list[Holder]:
        return [
            Holder(e.name, e.cost, self._last_used(e), self._busy(e))
            for e in self.entries.values()
            if e is not but and e.cost is not None
        ]

    async def _load(self, entry: Entry, why: str) -> None:
        deadline = time.monotonic() + self.catalog.load_timeout
        if self.cluster is None:
            return await self._load_here(entry, why, deadline)
        while (claim := await self.cluster.claim(entry.name)) is None:
            # Another router loads it: its LOADED reaches this one through the shared state (apply_remote).
            if entry.status == LoadState.LOADED:
                return None
            if not await self._until_changed(min(deadline, time.monotonic() + 0.1)) and time.monotonic() >= deadline:
                raise ModelNotLoaded(
                    f"model {entry.name!r} did not load within {self.catalog.load_timeout:g} s (on another router)",
                    headers={"Retry-After": RETRY_LOAD},
                )
        try:
            seen = await self.cluster.shared_status(entry.key)  # it may have loaded just before the lock was free
            if seen is not None and seen[2] > entry.changed_at:
                self.apply_remote(entry.key, *seen)
            if entry.status == LoadState.UNLOADED:
                await self._load_here(entry, why, deadline)
                await self.cluster.publish_now(entry)  # before the lock goes: the next holder sees it loaded
        finally:
            await self.cluster.release(claim)
        return None

    async def _load_here(self, entry: Entry, why: str, deadline: float) -> None:
        while True:
            if entry.status == LoadState.LOADED:  # another router loaded it meanwhile (shared state)
                entry.room = None
                return
            decision = await self._decide(entry, deadline)
            if decision is None:
                continue
            if isinstance(decision, Load):
                break
            if isinstance(decision, TooLarge):
                raise ModelTooLarge(decision.reason, param="model")
            entry.room = decision.reason
            if not await self._until_changed(deadline):
                entry.room = None
                raise ModelNotLoaded(
                    f"{decision.reason}; still so after {self.catalog.load_timeout:g} s",
                    headers={"Retry-After": RETRY_LOAD},
                )
        entry.room = None
        victims = [self.entries[name] for name in decision.evict]
        try:
            for victim in victims:
                self._begin_unload(victim, f"evicted to make room for {entry.name}", "evicted")
            await asyncio.gather(*(asyncio.shield(v.unload) for v in victims if v.unload is not None))
        except BaseException:
            self._set(entry, LoadState.UNLOADED, None)  # a victim's unload failed: it holds nothing, nothing waits
            raise
        await self._start(entry, why if not victims else f"{why}; unloaded {', '.join(v.name for v in victims)}")

    async def _decide(self, entry: Entry, deadline: float) -> Decision | None:
        """Where it fits now; a Load is marked LOADING at once (its room taken). With other routers, under this
        node's placement lock and counting what they load or hold here that this router has not heard of yet; the
        LOADING is published before the lock goes, so the next router to decide counts it. None: it was loaded by
        another router meanwhile."""
        if self.cluster is None:
            decision = decide(entry.name, entry.spec.options(), self._holders(entry), self.budget)
            if isinstance(decision, Load):
                self._set(entry, LoadState.LOADING, decision.cost)
            return decision
        async with self.cluster.placing(self.node, deadline) as reserved:
            if entry.status == LoadState.LOADED:  # adopted while the lock was awaited
                return None
            unseen = [
                Holder(e.name, e.spec.cost_for(layers), time.monotonic(), f"{status} by another router")
                for key, (status, layers) in reserved.items()
                if (e := self.by_key.get(key)) is not None and e is not entry and e.cost is None
            ]
            decision = decide(entry.name, entry.spec.options(), self._holders(entry) + unseen, self.budget)
            if isinstance(decision, Load):
                self._set(entry, LoadState.LOADING, decision.cost)
                await self.cluster.publish_now(entry)
            return decision

    async def _start(self, entry: Entry, why: str) -> None:
        """Have the supervisor start the model's servers (they register themselves), then mark it loaded."""
        assert entry.cost is not None
        began = time.monotonic()
        placement = f"{entry.cost.layers} GPU layers, " if entry.cost.vram else ""
        log.info("loading %s (%s)", entry.name, why)
        try:
            layers = await self.control.start(entry.name, entry.cost.layers, f"{why}; {placement}{size(entry.cost)}")
        except BaseException as exc:
            self._set(entry, LoadState.UNLOADED, None)
            self.metrics.loads.labels(entry.name, "failed").inc()
            if isinstance(exc, ControlError):
                # The supervisor's reason ends with the server's own log (paths, command lines, other clients'
                # requests): it is for the operator, in this log. The client hears a short reason.
                log.error("loading %s failed: %s", entry.name, exc)
                raise ModelNotLoaded(
                    f"model {entry.name!r} failed to load; the stack's log says why",
                    headers={"Retry-After": RETRY_LOAD},
                ) from exc
            raise
        if layers != entry.cost.layers:
            entry.cost = entry.spec.cost_for(layers)
        entry.last_used = time.monotonic()
        self._set(entry, LoadState.LOADED, entry.cost)
        self.metrics.loads.labels(entry.name, "ok").inc()
        self.metrics.load_seconds.labels(entry.name).observe(time.monotonic() - began)
        log.info("loaded %s in %.1f s", entry.name, time.monotonic() - began)

    # -- unloading -------------------------------------------------------------------------------------------------

    def _begin_unload(self, entry: Entry, why: str, reason: str) -> None:
        """Stop routing to it now; the processes stop once its requests in flight have finished."""
        self._set(entry, LoadState.UNLOADING, entry.cost)
        entry.unload = task = asyncio.create_task(self._unload(entry, why, reason))

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("unloading %s failed: %r", entry.name, t.exception())

        task.add_done_callback(done)

    async def _unload(self, entry: Entry, why: str, reason: str) -> None:
        try:
            while entry.active:
                await self._until_changed(None)
            for backend in self._servers(entry):
                self.registry.unregister(backend.name)
            await self.save()
            log.info("unloading %s (%s)", entry.name, why)
            try:
                await self.control.stop(entry.name, why)
            except ControlError as exc:
                log.error("unloading %s: %s", entry.name, exc)
            self.metrics.unloads.labels(entry.name, reason).inc()
        finally:
            entry.unload = None
            self._set(entry, LoadState.UNLOADED, None)

    def _tick(self) -> float:
        stays = [s for e in self.entries.values() if (s := e.stay())]
        return min(max(min(stays) / 4, 0.1), 1.0) if stays else 1.0

    async def _expire(self) -> None:
        """Unload each loaded model idle past its ttl, or past the keep_alive its last request gave."""
        while True:
            await asyncio.sleep(self._tick())
            now = time.monotonic()
            for entry in self.entries.values():
                stay = entry.stay()
                if stay is not None and entry.idle() and not self._busy(entry) and now - self._last_used(entry) >= stay:
                    self._expired(entry, stay)

    def _expired(self, entry: Entry, stay: float) -> None:
        if entry.keep_alive is None:
            self._begin_unload(entry, f"idle for {stay:g} s, its ttl", "ttl")
        else:
            self._begin_unload(entry, f"idle for {stay:g} s, its last request's keep_alive", "keep_alive")

    def released(self, entry: Entry) -> None:
        """A request ended: a keep_alive of 0 unloads the model now that nothing uses it."""
        if entry.stay() == 0 and entry.idle():
            self._expired(entry, 0)

    def expires_at(self, entry: Entry) -> float | None:
        """When it would unload if no request came (Unix seconds; counted from now while requests hold it); None:
        never."""
        stay = entry.stay()
        if stay is None:
            return None
        idle_for = time.monotonic() - entry.last_used if entry.idle() else 0.0
        return time.time() + max(stay - idle_for, 0.0)

    # -- start-up --------------------------------------------------------------------------------------------------

    async def _startup(self) -> None:
        """Adopt what the supervisor already runs (a restarted router), preload the rest in the stack file's order
        as long as it fits beside what is loaded (nothing is evicted for a preload), then tell the supervisor."""
        try:
            running = await self.control.models()
        except ControlError as exc:
            log.error("cannot ask the supervisor what runs: %s", exc)
            running = {}
        for entry in self.entries.values():
            seen = running.get(entry.name) or {}
            status, layers = seen.get("status"), seen.get("layers")
            # Only a model nothing has touched yet: a request that came first already loads it (/start is idempotent).
            if entry.status != LoadState.UNLOADED:
                continue
            if status in (LoadState.LOADED, LoadState.LOADING) and isinstance(layers, int):
                cost = entry.spec.cost_for(layers)
                if status == LoadState.LOADED:
                    self._set(entry, LoadState.LOADED, cost)
                else:  # /start is idempotent: this waits for the start in progress
                    self._set(entry, LoadState.LOADING, cost)
                    entry.load = self._task(self._start(entry, "start in progress"), entry)
        notes: list[str] = []
        starts: list[tuple[Entry, asyncio.Task[None]]] = []
        for entry in self.entries.values():
            if not entry.spec.preload or entry.status != LoadState.UNLOADED:
                continue
            layers = entry.spec.preload_layers
            options = [entry.spec.cost_for(layers)] if layers is not None else entry.spec.options()
            decision = decide(entry.name, options, self._holders(entry), self.budget, evict=False)
            if isinstance(decision, Load):
                self._set(entry, LoadState.LOADING, decision.cost)
                entry.load = self._task(self._start(entry, "preload"), entry)
                starts.append((entry, entry.load))
            else:
                notes.append(f"{entry.name} is not loaded at start: {decision.reason}")
        results = await asyncio.gather(*(asyncio.shield(load) for _, load in starts), return_exceptions=True)
        for (entry, _), result in zip(starts, results, strict=True):
            if isinstance(result, Exception):  # the supervisor's own words, not the short one a client gets
                notes.append(f"{entry.name} did not load at start: {result.__cause__ or result}")
        try:
            await self.control.ready(notes)
        except ControlError as exc:
            log.error("cannot tell the supervisor the preloads are done: %s", exc)

    # -- state, views and admin ------------------------------------------------------------------------------------

    def _set(self, entry: Entry, status: LoadState, cost: Cost | None, at: float | None = None) -> None:
        """`at`: the time another router made this change (shared state); None: made here, now."""
        entry.status = advance(entry.name, entry.status, status)
        entry.cost = cost
        entry.changed_at = time.time() if at is None else at
        self._gauges(entry)
        self.changed()
        if self.cluster is not None and at is None:
            self.cluster.model_changed(entry)

    def lost(self, entry: Entry) -> None:
        """Its servers are gone with their node (route/nodes.py): unloaded, nothing to stop."""
        if entry.status != LoadState.LOADED:
            return
        self._set(entry, LoadState.UNLOADING, entry.cost)
        for backend in self._servers(entry):
            self.registry.unregister(backend.name)
        self._set(entry, LoadState.UNLOADED, None)

    def _servers(self, entry: Entry) -> list[Backend]:
        """Its model servers in the registry, on this manager's node only: the same model may run on other nodes
        too (route/nodes.py), whose servers an unload here must leave alone."""
        prefix = f"{self.node}." if self.node is not None else ""
        return [b for b in self.registry.all_for(entry.name) if not b.draining and b.name.startswith(prefix)]

    def apply_remote(self, name: str, status: str, layers: int | None, at: float) -> None:
        """Another router's newer word on a model: adopt a model it loaded, or stop routing to one it unloads.
        What this router is doing itself (a load or unload task running) goes on and has the last word."""
        entry = self.by_key.get(name)
        if entry is None or at <= entry.changed_at or entry.unload is not None:
            return
        if entry.load is not None and entry.status != LoadState.UNLOADED:
            return  # its own load runs (a load still waiting for the lock or for room may adopt)
        if status == LoadState.LOADED and entry.status == LoadState.UNLOADED and isinstance(layers, int):
            self._set(entry, LoadState.LOADED, entry.spec.cost_for(layers), at)
            entry.last_used = time.monotonic()
            log.info("%s is loaded (by another router)", name)
        elif status in (LoadState.UNLOADING, LoadState.UNLOADED) and entry.status == LoadState.LOADED:
            self._set(entry, LoadState.UNLOADING, entry.cost, at)
            log.info("%s is unloading (by another router)", name)
        if status == LoadState.UNLOADED and entry.status == LoadState.UNLOADING:
            self._set(entry, LoadState.UNLOADED, None, at)

    def _gauges(self, entry: Entry) -> None:
        for status in LoadState:
            self.metrics.status.labels(entry.name, status.value).set(int(entry.status == status))
        held = entry.cost if entry.status == LoadState.LOADED else None
        self.metrics.loaded_bytes.labels(entry.name, "vram").set(held.vram if held else 0)
        self.metrics.loaded_bytes.labels(entry.name, "ram").set(held.ram if held else 0)

    def _planned(self, entry: Entry) -> Cost:
        """What it holds, or would hold if it loaded alone now."""
        if entry.cost is not None:
            return entry.cost
        options = entry.spec.options()
        return next((c for c in options if self.budget.holds(c.vram, c.ram)), options[-1])

    def model_view(self, entry: Entry) -> dict[str, Any]:
        cost = self._planned(entry)
        status = entry.status.value
        if self.cluster is not None and entry.status == LoadState.UNLOADED:
            status = self.cluster.remote_of(entry.key).status or status  # another router may be loading it
        return {
            "status": status,
            "vram_bytes": cost.vram,
            "ram_bytes": cost.ram,
            "ttl": entry.spec.ttl,
            "keep_alive": None
            if entry.keep_alive is None
            else (-1 if entry.keep_alive == math.inf else entry.keep_alive),
            "pinned": entry.spec.pinned,
            "active": entry.active,
            "waiting": entry.waiting,
        }

    def listing(self, created: int) -> list[dict[str, Any]]:
        """/v1/models entries for every name and alias of every catalog model."""
        out = []
        for entry in self.entries.values():
            view = self.model_view(entry)
            caps = {} if entry.spec.capabilities is None else {"capabilities": entry.spec.capabilities}
            for name in entry.spec.names:
                out.append({"id": name, "object": "model", "created": created, "owned_by": "local", **caps, **view})
        return out

    def memory(self) -> dict[str, Any]:
        held = [e.cost for e in self.entries.values() if e.cost is not None]
        return {
            "budget": {"vram_bytes": self.budget.vram, "ram_bytes": self.budget.ram},
            "held": {"vram_bytes": sum(c.vram for c in held), "ram_bytes": sum(c.ram for c in held)},
        }

    def _entry(self, model: str) -> Entry:
        entry = self.by_name.get(model)
        if entry is None:
            raise ModelNotFound(f"no model {model!r} in this stack", param="model")
        return entry

    async def load(self, model: str) -> dict[str, Any]:
        """POST /models/load: returns once it is loaded (or raises as a request for it would)."""
        entry = self._entry(model)
        entry.last_used = time.monotonic()
        entry.waiting += 1
        try:
            await self._until_loaded(entry, "asked by an admin")
        finally:
            entry.waiting -= 1
            self.changed()
        return {"model": entry.name, **self.model_view(entry)}

    async def unload(self, model: str, why: str = "asked by an admin", reason: str = "admin") -> dict[str, Any]:
        """POST /models/unload (and Ollama's keep_alive 0 with nothing to generate): returns once its servers are
        stopped (after its requests in flight)."""
        entry = self._entry(model)
        while entry.status != LoadState.UNLOADED:
            if entry.status == LoadState.LOADED:
                self._begin_unload(entry, why, reason)
            task = entry.unload or entry.load
            if task is not None:
                await asyncio.gather(asyncio.shield(task), return_exceptions=True)
            else:
                await self._until_changed(time.monotonic() + 1.0)
        return {"model": entry.name, **self.model_view(entry)}
