"""Nodes: machines that each run a supervisor and its model servers under their own budget, with no router of their
own (`python -m stack --node`). A node registers itself with every router it joins (POST /nodes/register, with the
node key); the router then decides, per node, which of its models are loaded, exactly as it does for its own stack
(route/ondemand.py: one manager per node, whose control channel is the node's HTTP control API).

Placement (`Fleet.acquire`): a model loaded or loading on a live node (by this router's count or the node's own
word) is used there. Otherwise the node where it fits
beside what is loaded, without evicting anything, is chosen (the first such node in registration order; what is
loaded there is the node's own word, GET /models, since another router's load reaches this one a sync later); failing
that, the first node where it fits after evicting idle models there (today's rules, route/residency.py); failing
that, the first node that has it (the request waits for room there, as on one machine).

A node whose control API stops answering (`unhealthy_after` checks in a row, every health interval) is dead: its
models are marked unloaded, its model servers unregistered, and it takes no placement until it answers again (or
registers again); the next request for one of its models loads it on another node. A request for a model whose
server there failed requests since the last look asks the node at once (`Fleet._gone`), so a node that dies under
load is found within a request or two rather than after `unhealthy_after` intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from hearth_common.names import BACKEND_NAME
from hearth_common.registration import Registration
from route.catalog import BudgetEntry, Catalog, CatalogModel, Control as ControlEntry
from route.config import RouterConfig
from route.control import Control, ControlError
from route.errors import ModelNotFound
from route.lifecycle import LoadState
from route.metrics import Metrics
from route.ondemand import Entry, Lease, OnDemand, OnDemandMetrics
from route.registry import Registry
from route.residency import Holder, Load, decide

if TYPE_CHECKING:
    from route.shared.sync import SharedSync

log = logging.getLogger("route.nodes")

PLACEHOLDER = ControlEntry(url="http://127.0.0.1:1", key="-" * 16)  # a node's manager talks to the node's own URL


class NodeRegistration(BaseModel):
    """POST /nodes/register: what a node says of itself (stack/node.py builds it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=BACKEND_NAME)
    url: str = Field(description="its control API, on the node's own address")
    budget: BudgetEntry = Field(default_factory=BudgetEntry)
    load_timeout: float = Field(600.0, gt=0)
    models: list[CatalogModel] = Field(min_length=1, description="the models it can run, with their planned sizes")

    def checked_url(self) -> str:
        return Registration(name=self.name, url=self.url, models=["-"]).url  # the registration's URL rules


@dataclass(eq=False)
class Node:
    spec: NodeRegistration
    manager: OnDemand
    alive: bool = True
    fails: int = 0
    errors_seen: dict[str, int] = field(default_factory=dict)  # model -> its servers' failed requests, last looked
    registered_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.spec.name

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.spec.url,
            "alive": self.alive,
            "budget": self.spec.budget.model_dump(),
            "models": {e.name: e.status.value for e in self.manager.entries.values()},
            "memory": self.manager.memory(),
        }


@dataclass
class Fleet:
    """Every node's manager behind the interface the proxy, the admin API and the web page use of OnDemand."""

    cfg: RouterConfig
    registry: Registry
    metrics: Metrics
    save: Callable[[], Awaitable[None]]
    node_key: str
    cluster: SharedSync | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    _metrics: OnDemandMetrics | None = None
    _watch: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._metrics = OnDemandMetrics(self.metrics)

    # -- nodes ---------------------------------------------------------------------------------------------------

    async def register(self, spec: NodeRegistration) -> Node:
        """Add a node, or take its new word (a node that restarted, or this router did): a node whose URL, budget
        and models are unchanged keeps its manager and what it knows; otherwise a new manager adopts what runs."""
        old = self.nodes.get(spec.name)
        if old is not None and old.spec == spec:
            old.alive, old.fails = True, 0
            return old
        if old is not None:
            await old.manager.close()
        catalog = Catalog(control=PLACEHOLDER, budget=spec.budget, load_timeout=spec.load_timeout, models=spec.models)
        control = Control(spec.url, self.node_key, spec.load_timeout)
        manager = OnDemand(
            catalog,
            self.registry,
            self.metrics,
            self.save,
            control=control,
            cluster=self.cluster,
            node=spec.name,
            ondemand_metrics=self._metrics,
        )
        node = self.nodes[spec.name] = Node(spec, manager)
        manager.start()  # adopts what the node runs; preloads what fits there
        log.info("node %s at %s joined: %s", spec.name, spec.url, ", ".join(m.name for m in spec.models))
        return node

    def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_nodes())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.gather(*(n.manager.close() for n in self.nodes.values()), return_exceptions=True)

    async def _watch_nodes(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval)
            await asyncio.gather(*(self._check(n) for n in list(self.nodes.values())))

    async def _check(self, node: Node) -> None:
        try:
            async with asyncio.timeout(self.cfg.health_timeout):  # not wait_for: 3.11's drops a cancellation
                running = await node.manager.control.models()
        except (ControlError, TimeoutError) as exc:
            node.fails += 1
            if node.alive and node.fails >= self.cfg.unhealthy_after:
                self.died(node, str(exc))
            return
        node.fails = 0
        if not node.alive:
            node.alive = True
            log.info("node %s answers again", node.name)
        for name, seen in running.items():  # what the node says stopped (it restarted): unloaded here too
            entry = node.manager.entries.get(name)
            if entry is not None and entry.status == LoadState.LOADED and seen.get("status") == "unloaded":
                node.manager.lost(entry)

    def died(self, node: Node, why: str) -> None:
        node.alive = False
        log.warning("node %s is gone (%s): its models are unloaded, and load elsewhere when asked for", node.name, why)
        for entry in node.manager.entries.values():
            node.manager.lost(entry)

    # -- the interface of OnDemand -------------------------------------------------------------------------------

    def _managers(self, model: str) -> list[OnDemand]:
        return [n.manager for n in self.nodes.values() if n.alive and n.manager.knows(model)]

    def knows(self, model: str) -> bool:
        return any(n.manager.knows(model) for n in self.nodes.values())

    def _where(self, model: str) -> OnDemand | None:
        """The live node where `model` is loaded, loading or awaited, if any."""
        for m in self._managers(model):
            entry = m.by_name[model]
            if entry.status != LoadState.UNLOADED or entry.load is not None or entry.waiting:
                return m
        return None

    def place(self, model: str, unseen: dict[str, list[Holder]] | None = None) -> OnDemand | None:
        """The node to serve `model` from (module docstring), or None when no live node has it. `unseen`: per node,
        what it runs that its manager here does not count yet (_unseen)."""
        managers = self._managers(model)
        if not managers:
            return None
        where = self._where(model)
        if where is not None:
            return where
        for m in managers:  # another router loads it there (or has): that load is awaited, not a second one elsewhere
            if any(h.name == model for h in (unseen or {}).get(m.node or "", [])):
                return m
        for evict in (False, True):
            for m in managers:
                entry = m.by_name[model]
                holders = m._holders(entry) + (unseen or {}).get(m.node or "", [])
                decision = decide(entry.name, entry.spec.options(), holders, m.budget, evict=evict)
                if isinstance(decision, Load):
                    return m
        return managers[0]

    async def _unseen(self, managers: list[OnDemand]) -> dict[str, list[Holder]]:
        """What each node runs by its own word that its manager here does not count: another router's load there
        reaches this one through the shared state a sync later, while the node's GET /models is current."""

        async def one(m: OnDemand) -> list[Holder]:
            try:
                async with asyncio.timeout(min(self.cfg.health_timeout, 2.0)):
                    running = await m.control.models()
            except (ControlError, TimeoutError):
                return []
            out = []
            for name, seen in running.items():
                entry = m.entries.get(name)
                layers = seen.get("layers") if isinstance(seen, dict) else None
                if entry is None or entry.cost is not None or not isinstance(layers, int):
                    continue
                if seen.get("status") in (LoadState.LOADED, LoadState.LOADING):
                    out.append(Holder(name, entry.spec.cost_for(layers), time.monotonic(), "loaded by another router"))
            return out

        found = await asyncio.gather(*(one(m) for m in managers))
        return {m.node or "": holders for m, holders in zip(managers, found, strict=True) if holders}

    async def _place(self, model: str) -> OnDemand | None:
        """place(), asking the nodes what they run first when `model` needs a load."""
        if self._where(model) is not None or not self._managers(model):
            return self.place(model)
        return self.place(model, await self._unseen(self._managers(model)))

    async def _gone(self, manager: OnDemand, model: str) -> bool:
        """True when the node serving `model` turns out dead: requests to its server failed since this router last
        looked, and its control API does not answer now. The health loop would take `unhealthy_after` intervals,
        and meanwhile the proxy keeps sending to the model's last server, however it fails."""
        node = self.nodes.get(manager.node or "")
        if node is None or not node.alive:
            return False
        prefix = f"{node.name}."
        errors = sum(b.errors for b in self.registry.all_for(model) if b.name.startswith(prefix))
        if errors <= node.errors_seen.get(model, 0):
            return False
        node.errors_seen[model] = errors
        try:
            async with asyncio.timeout(min(self.cfg.health_timeout, 1.0)):
                await manager.control.models()
        except (ControlError, TimeoutError) as exc:
            if node.alive:
                self.died(node, f"{exc or type(exc).__name__}, after failed requests to its {model}")
            return True
        return False

    async def acquire(self, model: str, keep_alive: float | None = None) -> Lease | None:
        manager = await self._place(model)
        if manager is not None and await self._gone(manager, model):
            manager = await self._place(model)
        if manager is None:
            return None
        return await manager.acquire(model, keep_alive)

    @property
    def entries(self) -> dict[str, Entry]:
        return {e.key: e for n in self.nodes.values() for e in n.manager.entries.values()}

    @property
    def by_key(self) -> dict[str, Entry]:
        return self.entries

    def changed(self) -> None:
        for n in self.nodes.values():
            n.manager.changed()

    def apply_remote(self, key: str, status: str, layers: int | None, at: float) -> None:
        node = self.nodes.get(key.split("/", 1)[0])
        if node is not None:
            node.manager.apply_remote(key, status, layers, at)

    def _owner(self, entry: Entry) -> OnDemand:
        return self.nodes[entry.node or ""].manager

    def expires_at(self, entry: Entry) -> float | None:
        return self._owner(entry).expires_at(entry)

    def model_view(self, entry: Entry) -> dict[str, Any]:
        return {**self._owner(entry).model_view(entry), "node": entry.node}

    def listing(self, created: int) -> list[dict[str, Any]]:
        """Each model once: where it is loaded (or loading) if anywhere, else as the first node that has it."""
        out: dict[str, dict[str, Any]] = {}
        rank = {"loaded": 0, "loading": 1, "unloading": 2, "unloaded": 3}
        for node in self.nodes.values():
            for item in node.manager.listing(created):
                if not node.alive:
                    item = {**item, "status": "unloaded"}
                item["node"] = node.name
                seen = out.get(item["id"])
                if seen is None or rank.get(item["status"], 9) < rank.get(seen["status"], 9):
                    out[item["id"]] = item
        return list(out.values())

    def memory(self) -> dict[str, Any]:
        return {n.name: n.manager.memory() for n in self.nodes.values()}

    async def load(self, model: str) -> dict[str, Any]:
        manager = await self._place(model)
        if manager is None:
            raise ModelNotFound(f"no node has the model {model!r}", param="model")
        return {**await manager.load(model), "node": manager.node}

    async def unload(self, model: str, why: str = "asked by an admin", reason: str = "admin") -> dict[str, Any]:
        managers = [m for m in self._managers(model) if m.by_name[model].status != LoadState.UNLOADED]
        if not managers:
            if not self.knows(model):
                raise ModelNotFound(f"no node has the model {model!r}", param="model")
            managers = self._managers(model)[:1]
        out: dict[str, Any] = {}
        for m in managers:
            with contextlib.suppress(ModelNotFound):
                out = {**await m.unload(model, why, reason), "node": m.node}
        return out
