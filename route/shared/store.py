"""The Redis side of shared state: the connection, whether it is up, and every key the replicas share.

Keys (all under `hearth:`; values are JSON; times are Unix seconds, so the routers' clocks should agree, as NTP
keeps them):

    hearth:backends        hash  name -> {"spec": registration, "at": when registered}
    hearth:gone            hash  name -> when unregistered (a tombstone: a replica that still lists it drops it)
    hearth:ejected         hash  name -> {"until": end of the passive ejection, "at": when}
    hearth:models          hash  stack model -> {"status", "layers", "at", "by": replica}
    hearth:replicas        zset  replica -> the time its heartbeat expires
    hearth:busy:REPLICA    hash  stack model -> {"active", "waiting", "used"}: that replica's counts; expires with it
    hearth:load:MODEL      the model's load lock (SET NX PX, refreshed while held; a crashed router's lapses)
    hearth:nodes           hash  node name -> {"spec": node registration, "at": when}
    hearth:prefix          stream  the prefix strategy's index, as a journal: {"r": replica, "m": model, "b": backend,
                           "k": the prefix keys new to that backend, 16 hex digits each}; the last PREFIX_LOG_MAX kept
    hearth:place:NODE      one node's placement lock ("-": the router's own stack), held while a router decides what
                           to load or evict there and publishes it (milliseconds; it lapses after PLACE_TTL)

Every call goes through hearth_common.redis_link: a short timeout, no retry, up and down said once in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from hearth_common.redis_link import RedisLink

log = logging.getLogger("route.shared")

PREFIX = "hearth:"
BACKENDS, GONE, EJECTED, MODELS, REPLICAS, NODES = (
    PREFIX + k for k in ("backends", "gone", "ejected", "models", "replicas", "nodes")
)
LOCK_TTL = 15.0  # seconds a load lock lives unless its holder refreshes it (every LOCK_TTL / 3)
PREFIX_LOG = PREFIX + "prefix"
PREFIX_LOG_MAX = 20_000  # journal records Redis keeps (about 1 KB each for a 4,000-character prompt); approximate
PLACE_TTL = 5.0  # seconds a placement lock lives: its holder keeps it for one decision and one write


def busy_key(replica: str) -> str:
    return f"{PREFIX}busy:{replica}"


def lock_key(model: str) -> str:
    return f"{PREFIX}load:{model}"


def place_key(node: str | None) -> str:
    return f"{PREFIX}place:{node or '-'}"


def _load(raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _decode(table: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for k, v in table.items():
        value = _load(v)
        if value is not None:
            out[k.decode() if isinstance(k, bytes) else str(k)] = value
    return out


@dataclass
class Snapshot:
    """Everything the replicas share, read in two round trips."""

    backends: dict[str, Any] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    ejected: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Any] = field(default_factory=dict)
    busy: dict[str, dict[str, Any]] = field(default_factory=dict)  # replica -> model -> counts (live replicas only)


class SharedStore(RedisLink):
    def __init__(self, url: str, password: str | None, replica: str, on_up: Callable[[bool], None] | None = None):
        super().__init__(url, password, log, on_up=on_up)
        self.replica = replica

    # -- reading -------------------------------------------------------------------------------------------------

    async def snapshot(self, ttl: float) -> Snapshot | None:
        """Everything shared; also this replica's heartbeat (it stays live for `ttl` seconds)."""

        async def read(r: aioredis.Redis) -> Snapshot:
            now = time.time()
            pipe = r.pipeline(transaction=False)
            pipe.zadd(REPLICAS, {self.replica: now + ttl})
            pipe.zremrangebyscore(REPLICAS, "-inf", now)
            pipe.zrange(REPLICAS, 0, -1)
            for key in (BACKENDS, GONE, EJECTED, MODELS, NODES):
                pipe.hgetall(key)
            _, _, replicas, backends, gone, ejected, models, nodes = await pipe.execute()
            names = [x.decode() for x in replicas]
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(busy_key(name))
            busy = await pipe.execute() if names else []
            return Snapshot(
                _decode(backends),
                {k: float(v) for k, v in _decode(gone).items() if isinstance(v, int | float)},
                _decode(ejected),
                _decode(models),
                _decode(nodes),
                {n: _decode(b) for n, b in zip(names, busy, strict=True)},
            )

        return await self.call(read)

    # -- writing -------------------------------------------------------------------------------------------------

    async def put(self, table: str, name: str, value: Any, *, clear_gone: bool = False) -> bool:
        async def write(r: aioredis.Redis) -> bool:
            pipe = r.pipeline(transaction=True)
            pipe.hset(table, name, json.dumps(value))
            if clear_gone:
                pipe.hdel(GONE, name)
            await pipe.execute()
            return True

        return bool(await self.call(write))

    async def put_many(self, table: str, values: dict[str, Any]) -> bool:
        if not values:
            return True

        async def write(r: aioredis.Redis) -> bool:
            await r.hset(table, mapping={k: json.dumps(v) for k, v in values.items()})
            return True

        return bool(await self.call(write))

    async def remove(self, table: str, name: str, at: float) -> bool:
        """Delete from `table` and leave a tombstone, so replicas that still list it drop it."""

        async def write(r: aioredis.Redis) -> bool:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(table, name)
            pipe.hset(GONE, name, json.dumps(at))
            await pipe.execute()
            return True

        return bool(await self.call(write))

    async def counts(self, counts: dict[str, Any], ttl: float) -> bool:
        """Replace this replica's per-model counts; they vanish `ttl` seconds after its last heartbeat."""

        async def write(r: aioredis.Redis) -> bool:
            key = busy_key(self.replica)
            pipe = r.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={"_alive": "1", **{k: json.dumps(v) for k, v in counts.items()}})
            pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()
            return True

        return bool(await self.call(write))

    async def journal(
        self, records: list[dict[str, str]], after: str | None
    ) -> list[tuple[str, dict[str, str]]] | None:
        """Append `records` to the prefix journal and read what follows `after` (a stream id; None: the latest
        PREFIX_LOG_MAX, to start from), ours included, oldest first."""

        async def exchange(r: aioredis.Redis) -> list[tuple[str, dict[str, str]]]:
            pipe = r.pipeline(transaction=False)
            for record in records:
                pipe.xadd(PREFIX_LOG, record, maxlen=PREFIX_LOG_MAX, approximate=True)  # type: ignore[arg-type]
            if after is None:
                pipe.xrevrange(PREFIX_LOG, "+", "-", count=PREFIX_LOG_MAX)
            else:
                pipe.xrange(PREFIX_LOG, f"({after}", "+", count=PREFIX_LOG_MAX)
            found = (await pipe.execute())[-1]
            if after is None:
                found.reverse()
            return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in found]

        return await self.call(exchange)

    # -- the load lock -------------------------------------------------------------------------------------------

    def lock(self, model: str) -> Lock:
        return Lock(self.redis, lock_key(model), timeout=LOCK_TTL, blocking=False, thread_local=False)

    def place_lock(self, node: str | None) -> Lock:
        return Lock(self.redis, place_key(node), timeout=PLACE_TTL, blocking=False, thread_local=False)

    async def models_now(self) -> tuple[dict[str, Any], set[str]] | None:
        """The shared load states and the live replicas, read now (one round trip)."""

        async def read(r: aioredis.Redis) -> tuple[dict[str, Any], set[str]]:
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(MODELS)
            pipe.zrangebyscore(REPLICAS, time.time(), "+inf")
            models, replicas = await pipe.execute()
            return _decode(models), {x.decode() for x in replicas}

        return await self.call(read)

    async def try_lock(self, lock: Lock) -> bool | None:
        """True: held now; False: another replica holds it; None: Redis is down."""
        return await self.call(lambda _: lock.acquire(blocking=False))

    async def refresh(self, lock: Lock) -> None:
        async def extend(_: aioredis.Redis) -> None:
            with contextlib.suppress(LockError):  # lost (lapsed and taken): the load goes on; /start is idempotent
                await lock.reacquire()

        await self.call(extend)

    async def unlock(self, lock: Lock) -> None:
        async def release(_: aioredis.Redis) -> None:
            with contextlib.suppress(LockError):  # lapsed meanwhile
                await lock.release()

        await self.call(release)
