"""Router replicas over one real redis-server (testkit/redis.py): two routers in this event loop (create_app), a fake
transport for their backends (testkit/upstream.py) and a fake supervisor (testkit/supervisor.py) for the stack's
models. The processes and the CLI are tested in tests/route/test_shared_state_procs.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from route.app import create_app
from route.catalog import write_catalog
from route.config import RouterConfig, load_config
from route.errors import BackendUnreachable, ConfigError
from testkit.redis import RedisServer, redis_missing
from testkit.supervisor import FakeSupervisor
from testkit.upstream import FakeResponse, FakeUpstream, ok

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing()))]
KEY = {"Authorization": "Bearer sesame"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis() -> AsyncIterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Replica:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.test_app = app.test_app()
        self.client = app.test_client()

    async def backends(self) -> dict[str, dict[str, Any]]:
        r = await self.client.get("/backends", headers=KEY)
        return {b["name"]: b for b in (await r.get_json())["backends"]}

    async def chat(self, model: str = "m") -> Any:
        return await self.client.post("/v1/chat/completions", json={"model": model, **CHAT})

    async def metric(self, name: str) -> float | None:
        text = (await (await self.client.get("/metrics", headers=KEY)).get_data()).decode()
        for line in text.splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture
async def replicas(redis: RedisServer) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    started: list[Replica] = []

    async def start(upstream: FakeUpstream, **settings: Any) -> Replica:
        cfg = RouterConfig(admin_key="sesame", shared_state=redis.url, allow_backend_hosts=["*"], **settings)
        replica = Replica(create_app(cfg, upstream=lambda _: upstream))
        await replica.test_app.startup()
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.test_app.shutdown()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> float:
    """Seconds until check() is true; fails after `timeout`."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < timeout, "not within the time"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def registration(name: str, models: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "url": f"http://{name}", "model_type": "generic", "models": models or ["m"]}


async def test_a_backend_registered_on_one_router_is_listed_by_both(
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    fake = FakeUpstream()
    fake.behaviour["http://a"] = ok("a")
    one, two = await replicas(fake), await replicas(fake)
    r = await one.client.post("/backends/register", json=registration("a"), headers=KEY)
    assert r.status_code == 200, await r.get_json()
    took = await until(lambda: _has(two, "a"))
    assert took < 1.0  # the sync interval, with room for a loaded machine
    assert (await two.chat()).status_code == 200
    r = await two.client.delete("/backends/a", headers=KEY)
    assert r.status_code == 200
    await until(lambda: _lacks(one, "a"))


async def _has(replica: Replica, name: str) -> bool:
    return name in await replica.backends()


async def _lacks(replica: Replica, name: str) -> bool:
    return name not in await replica.backends()


async def test_an_ejection_on_one_router_is_seen_by_the_other(replicas: Callable[..., Awaitable[Replica]]) -> None:
    """A failed request ejects `a` on one router (passive ejection); the other stops sending to it too, for the same
    time, without a failure of its own."""
    fake = FakeUpstream()
    fake.behaviour["http://a"] = BackendUnreachable("refused")
    fake.behaviour["http://b"] = ok("b")
    one, two = await replicas(fake, strategy="round_robin"), await replicas(fake, strategy="round_robin")
    for name in ("a", "b"):
        assert (await one.client.post("/backends/register", json=registration(name), headers=KEY)).status_code == 200
    await until(lambda: _has(two, "a"))
    for _ in range(2):
        assert (await one.chat()).status_code == 200  # retried on b
    assert not (await one.backends())["a"]["healthy"]
    took = await until(lambda: _ejected(two, "a"))
    assert took < 1.5
    seen = (await two.backends())["a"]
    assert seen["errors"] == 0 and seen["ejected_for"] > 5  # eject_base 10 s, told, not found out
    calls = len(fake.calls)
    for _ in range(4):
        assert (await two.chat()).status_code == 200
    assert fake.calls[calls:] == ["http://b"] * 4


async def _ejected(replica: Replica, name: str) -> bool:
    return not (await replica.backends())[name]["healthy"]


async def test_eight_first_requests_over_two_routers_load_the_model_once(
    replicas: Callable[..., Awaitable[Replica]], tmp_path: Path
) -> None:
    async with FakeSupervisor() as sup:
        sup.start_delay = 0.5
        catalog = tmp_path / "catalog.json"
        write_catalog(sup.catalog(["m"], preload=False), catalog)
        fake = FakeUpstream()
        fake.behaviour["http://s"] = ok("s")
        one, two = await replicas(fake, catalog=catalog), await replicas(fake, catalog=catalog)
        r = await one.client.post("/backends/register", json=registration("s"), headers=KEY)
        assert r.status_code == 200
        await until(lambda: _has(two, "s"))
        answers = await asyncio.gather(*(r.chat() for r in [one, two] * 4))
        assert [a.status_code for a in answers] == [200] * 8
        assert [path for path, _ in sup.calls].count("/start") == 1, sup.calls
        for replica in (one, two):
            listing = (await (await replica.client.get("/v1/models")).get_json())["data"]
            assert {d["id"]: d["status"] for d in listing} == {"m": "loaded"}


class Slow(FakeUpstream):
    """Answers after `delay` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    async def send(self, url: str, body: bytes, headers: object) -> FakeResponse:
        await asyncio.sleep(self.delay)
        return await super().send(url, body, headers)


async def test_a_model_busy_on_one_router_is_not_evicted_by_the_other(
    replicas: Callable[..., Awaitable[Replica]], tmp_path: Path
) -> None:
    """A budget that holds one model: a request in flight for m1 on one router keeps m1 loaded while the other router
    is asked for m2; m2 loads once m1's request has ended (m1 evicted then)."""
    async with FakeSupervisor() as sup:
        catalog = tmp_path / "catalog.json"
        write_catalog(sup.catalog(["m1", "m2"], preload=False, ram=1), catalog)
        fake = Slow()
        fake.behaviour["http://s1"] = ok("s1")
        fake.behaviour["http://s2"] = ok("s2")
        one, two = await replicas(fake, catalog=catalog), await replicas(fake, catalog=catalog)
        for name, model in (("s1", "m1"), ("s2", "m2")):
            r = await one.client.post("/backends/register", json=registration(name, [model]), headers=KEY)
            assert r.status_code == 200
        assert (await one.chat("m1")).status_code == 200
        await until(lambda: _status(two, "m1", "loaded"))
        fake.delay = 2.0
        busy = asyncio.create_task(one.chat("m1"))
        await asyncio.sleep(1.2)  # its count reaches Redis (at once) and the other router (a sync pass)
        fake.delay = 0.0
        began = time.monotonic()
        second = await two.chat("m2")
        assert second.status_code == 200
        assert (await busy).status_code == 200
        assert time.monotonic() - began > 0.5  # it waited for m1's request to end
        stops = [body["model"] for path, body in sup.calls if path == "/stop"]
        assert stops == ["m1"]


async def _status(replica: Replica, model: str, status: str) -> bool:
    listing = (await (await replica.client.get("/v1/models")).get_json())["data"]
    return any(d["id"] == model and d["status"] == status for d in listing)


async def test_without_redis_the_routers_keep_answering_and_agree_once_it_returns(
    replicas: Callable[..., Awaitable[Replica]], redis: RedisServer
) -> None:
    fake = FakeUpstream()
    fake.behaviour["http://a"] = ok("a")
    fake.behaviour["http://b"] = ok("b")
    one, two = await replicas(fake), await replicas(fake)
    assert (await one.client.post("/backends/register", json=registration("a"), headers=KEY)).status_code == 200
    await until(lambda: _has(two, "a"))
    assert await one.metric("hearth_route_shared_state_up") == 1
    redis.stop()
    await asyncio.sleep(1.0)
    for replica in (one, two):
        assert await replica.metric("hearth_route_shared_state_up") == 0
        began = time.monotonic()
        assert (await replica.chat()).status_code == 200
        assert time.monotonic() - began < 0.1  # nothing on the request's path waits on Redis
    assert (await two.client.post("/backends/register", json=registration("b"), headers=KEY)).status_code == 200
    assert "b" not in await one.backends()
    redis.start()  # empty: no persistence
    await until(lambda: _has(one, "b"))
    assert set(await one.backends()) == set(await two.backends()) == {"a", "b"}
    assert await two.metric("hearth_route_shared_state_up") == 1


async def test_a_redis_that_never_answered_does_not_stop_a_router(tmp_path: Path) -> None:
    cfg = RouterConfig(admin_key="sesame", shared_state="redis://127.0.0.1:1/0")
    fake = FakeUpstream()
    replica = Replica(create_app(cfg, upstream=lambda _: fake))
    began = time.monotonic()
    await replica.test_app.startup()
    try:
        assert time.monotonic() - began < 2
        assert (await replica.client.get("/health")).status_code == 503  # no backend yet, but it answers
        assert await replica.metric("hearth_route_shared_state_up") == 0
    finally:
        await replica.test_app.shutdown()


def test_the_redis_password_never_comes_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password"):
        load_config(["--shared-state", "redis://:secret@127.0.0.1:6379/0"], {})
    with pytest.raises(ConfigError):
        load_config(["--shared-state-password", "secret"], {})
    cfg = load_config(["--shared-state", "redis://127.0.0.1:6379/2"], {"HEARTH_ROUTE_SHARED_STATE_PASSWORD": "pw"})
    assert cfg.shared_state_password == "pw"
    with pytest.raises(ConfigError, match="redis://"):
        load_config(["--shared-state", "http://127.0.0.1:6379"], {})


async def _passes(redis: RedisServer, count: int = 2) -> None:
    """Until every replica has begun `count` more sync passes (its heartbeat moved): the passes before the last one
    have ended, whatever they read or wrote."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        first = dict(await client.zrange("hearth:replicas", 0, -1, withscores=True))
        seen = dict.fromkeys(first, 0)

        async def moved() -> bool:
            now = dict(await client.zrange("hearth:replicas", 0, -1, withscores=True))
            for name, score in now.items():
                if name in first and score != first[name]:
                    seen[name] += 1
                    first[name] = score
            return min(seen.values()) >= count

        await until(moved)
    finally:
        await client.aclose()


async def test_the_prefix_index_is_seen_by_both_routers(
    replicas: Callable[..., Awaitable[Replica]], redis: RedisServer
) -> None:
    """A prompt routed by one router (by least connections, to the second backend) is routed by the other to the same
    backend: without the shared index its own least connections would pick the first."""
    fake = FakeUpstream()
    for name in ("a", "b", "c"):
        fake.behaviour[f"http://{name}"] = ok(name)
    one, two = await replicas(fake, strategy="prefix"), await replicas(fake, strategy="prefix")
    for name in ("a", "b", "c"):
        assert (await one.client.post("/backends/register", json=registration(name), headers=KEY)).status_code == 200
    await until(lambda: _has(two, "c"))
    await _passes(redis)  # both routers' prefix strategies exist and share from now on

    def chat(text: str) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": text}]}

    first, second = "the first conversation " * 20, "a second, unrelated one " * 20
    for text in (first, second):
        assert (await one.client.post("/v1/chat/completions", json=chat(text))).status_code == 200
    home = fake.calls[-1]
    assert fake.calls[-2:] == ["http://a", home] and home != "http://a"
    await _passes(redis)
    for _ in range(3):
        assert (await two.client.post("/v1/chat/completions", json=chat(second + " more"))).status_code == 200
    assert fake.calls[-3:] == [home] * 3
