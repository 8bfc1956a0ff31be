"""Nodes joining routers (route/nodes.py): two routers over one real redis-server in this event loop, and two fake
nodes (testkit/supervisor.py) on 127.0.0.2 and 127.0.0.3 whose budgets hold one model each. A fake node registers a
model's server with the routers when told to start it, as a real one does (stack/node.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from route.app import create_app
from route.config import RouterConfig
from testkit.redis import RedisServer, redis_missing
from testkit.supervisor import KEY as NODE_KEY, FakeSupervisor
from testkit.upstream import FakeUpstream, ok
from tests.route.test_shared_state import KEY, Replica, until

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing()))]
NODE = {"Authorization": f"Bearer {NODE_KEY}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Cluster:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.fake = FakeUpstream()
        self.routers: list[Replica] = []
        self.nodes: dict[str, FakeSupervisor] = {}
        self.stack = contextlib.AsyncExitStack()

    async def router(self) -> Replica:
        cfg = RouterConfig(
            admin_key="sesame",
            node_key=NODE_KEY,
            shared_state=self.redis.url,
            allow_backend_hosts=["127.0.0.0/8"],
            health_interval=0.2,
            health_timeout=0.5,
            unhealthy_after=1,
        )
        replica = Replica(create_app(cfg, upstream=lambda _: self.fake))
        await replica.test_app.startup()
        self.routers.append(replica)
        return replica

    async def node(self, name: str, host: str, models: list[str]) -> FakeSupervisor:
        async def started(model: str) -> None:  # the node registers the model's server with every router
            server = f"http://{host}:{10000 + int(model.lstrip('m'))}"  # what the fake transport answers as
            self.fake.behaviour[server] = ok(f"{name}.{model}")
            body = {"name": f"{name}.{model}", "url": server, "models": [model]}
            for router in self.routers:
                r = await router.client.post("/backends/register", json=body, headers=NODE)
                assert r.status_code == 200, await r.get_json()

        sup = await self.stack.enter_async_context(FakeSupervisor(host=host, on_start=started))
        self.nodes[name] = sup
        for router in self.routers:
            r = await self.join(router, name, models)
            assert r.status_code == 200, await r.get_json()
        return sup

    async def join(self, router: Replica, name: str, models: list[str], headers: dict[str, str] = NODE) -> Any:
        sup = self.nodes[name]
        body = {
            "name": name,
            "url": sup.url,
            "budget": {"ram": 1},  # one model at a time
            "load_timeout": 10,
            "models": [
                {"name": m, "names": [m], "preload": False, "costs": [{"layers": 0, "vram": 0, "ram": 1}]}
                for m in models
            ],
        }
        return await router.client.post("/nodes/register", json=body, headers=headers)

    def starts(self, node: str) -> list[str]:
        return [body["model"] for path, body in self.nodes[node].calls if path == "/start"]

    def stops(self, node: str) -> list[str]:
        return [body["model"] for path, body in self.nodes[node].calls if path == "/stop"]

    async def close(self) -> None:
        for router in self.routers:
            await router.test_app.shutdown()
        await self.stack.aclose()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    with RedisServer() as redis:
        c = Cluster(redis)
        try:
            yield c
        finally:
            await c.close()


async def listing(router: Replica) -> dict[str, tuple[str, str]]:
    data = (await (await router.client.get("/v1/models")).get_json())["data"]
    return {d["id"]: (d["status"], d.get("node")) for d in data}


async def test_a_node_without_the_right_key_is_refused(cluster: Cluster) -> None:
    router = await cluster.router()
    cluster.nodes["n"] = await cluster.stack.enter_async_context(FakeSupervisor(host="127.0.0.2"))
    r = await cluster.join(router, "n", ["m1"], headers={"Authorization": "Bearer " + "x" * 32})
    assert r.status_code == 401
    r = await cluster.join(router, "n", ["m1"], headers=KEY)  # the admin key will do
    assert r.status_code == 200
    assert [n["name"] for n in (await (await router.client.get("/nodes", headers=KEY)).get_json())["nodes"]] == ["n"]


async def test_a_node_outside_the_allowed_hosts_is_refused(cluster: Cluster) -> None:
    cluster.nodes["n"] = await cluster.stack.enter_async_context(FakeSupervisor(host="127.0.0.2"))
    cfg = RouterConfig(admin_key="sesame", node_key=NODE_KEY, allow_backend_hosts=["127.0.0.1"])
    other = Replica(create_app(cfg, upstream=lambda _: cluster.fake))
    await other.test_app.startup()
    cluster.routers.append(other)
    r = await cluster.join(other, "n", ["m1"])
    assert r.status_code == 400 and "not allowed" in (await r.get_json())["error"]["message"]


async def test_models_spread_over_nodes_and_a_dead_node_s_models_load_elsewhere(cluster: Cluster) -> None:
    one, two = await cluster.router(), await cluster.router()
    await cluster.node("node-a", "127.0.0.2", ["m1", "m2"])
    await cluster.node("node-b", "127.0.0.3", ["m1", "m2"])
    assert (await one.chat("m1")).status_code == 200
    assert cluster.starts("node-a") == ["m1"]
    await until(lambda: _listed(two, "m1", ("loaded", "node-a")))  # both routers list the same models
    # a second model goes to the node with room rather than evicting the first
    assert (await two.chat("m2")).status_code == 200
    assert cluster.starts("node-b") == ["m2"] and not cluster.stops("node-a")
    await until(lambda: _listed(one, "m2", ("loaded", "node-b")))
    assert await listing(one) == await listing(two) == {"m1": ("loaded", "node-a"), "m2": ("loaded", "node-b")}
    # node-a dies: m1 is marked unloaded and loads on node-b (evicting the idle m2 there) at its next request
    await cluster.nodes["node-a"].__aexit__(None, None, None)
    await until(lambda: _listed(one, "m1", ("unloaded", "node-a")))
    assert (await one.chat("m1")).status_code == 200
    assert cluster.starts("node-b") == ["m2", "m1"] and cluster.stops("node-b") == ["m2"]
    answer = await one.chat("m1")
    assert (await answer.get_json())["who"] == "node-b.m1"


async def _listed(router: Replica, model: str, want: tuple[str, str]) -> bool:
    return (await listing(router)).get(model) == want


async def test_two_routers_load_a_model_once_over_nodes(cluster: Cluster) -> None:
    one, two = await cluster.router(), await cluster.router()
    await cluster.node("node-a", "127.0.0.2", ["m1", "m2"])
    await cluster.node("node-b", "127.0.0.3", ["m1", "m2"])
    for sup in cluster.nodes.values():
        sup.start_delay = 0.5
    answers = await asyncio.gather(*(r.chat("m1") for r in [one, two] * 4))
    assert [a.status_code for a in answers] == [200] * 8
    assert cluster.starts("node-a") + cluster.starts("node-b") == ["m1"]


async def test_two_routers_loading_different_models_onto_one_node_never_overcommit_it(cluster: Cluster) -> None:
    """The node's budget holds one model: m1 asked of one router and m2 of the other at the same moment load one
    after the other (the second evicting the first once its request is done), never side by side."""
    one, two = await cluster.router(), await cluster.router()
    sup = await cluster.node("node-a", "127.0.0.2", ["m1", "m2"])
    starting: set[str] = set()
    overcommits: list[tuple[str, set[str]]] = []
    registered = sup.on_start
    assert registered is not None

    async def watched(model: str) -> None:  # a start that takes a while, checked at its start and its end
        starting.add(model)
        try:
            for _ in range(2):
                if held := (set(sup.running) | starting) - {model}:
                    overcommits.append((model, held))
                await asyncio.sleep(0.4)
            await registered(model)
        finally:
            starting.discard(model)

    sup.on_start = watched
    answers = await asyncio.gather(one.chat("m1"), two.chat("m2"))
    assert [a.status_code for a in answers] == [200, 200]
    assert overcommits == []
    assert sorted(cluster.starts("node-a")) == ["m1", "m2"] and len(cluster.stops("node-a")) == 1


async def test_evicting_a_model_on_one_node_leaves_its_servers_on_another(cluster: Cluster) -> None:
    """m1 runs on both nodes; m2 (only node-a has it) evicts node-a's m1: node-b's m1 server stays registered and
    answers the next m1 request, with no load."""
    router = await cluster.router()
    for name, host, models in (("node-a", "127.0.0.2", ["m1", "m2"]), ("node-b", "127.0.0.3", ["m1"])):
        sup = await cluster.stack.enter_async_context(FakeSupervisor({"m1": "loaded"}, host=host))
        cluster.nodes[name] = sup
        assert (await cluster.join(router, name, models)).status_code == 200
        server = f"http://{host}:10001"
        cluster.fake.behaviour[server] = ok(f"{name}.m1")
        body = {"name": f"{name}.m1", "url": server, "models": ["m1"]}
        assert (await router.client.post("/backends/register", json=body, headers=NODE)).status_code == 200
    await until(lambda: _listed(router, "m1", ("loaded", "node-a")))
    cluster.fake.behaviour["http://127.0.0.2:10002"] = ok("node-a.m2")
    started = cluster.nodes["node-a"]

    async def register_m2(model: str) -> None:
        body = {"name": "node-a.m2", "url": "http://127.0.0.2:10002", "models": ["m2"]}
        assert (await router.client.post("/backends/register", json=body, headers=NODE)).status_code == 200

    started.on_start = register_m2
    assert (await router.chat("m2")).status_code == 200
    assert cluster.stops("node-a") == ["m1"] and not cluster.stops("node-b")
    assert set(await router.backends()) == {"node-a.m2", "node-b.m1"}
    answer = await router.chat("m1")
    assert answer.status_code == 200 and (await answer.get_json())["who"] == "node-b.m1"
    assert cluster.starts("node-a") == ["m2"] and not cluster.starts("node-b")


async def test_a_model_loading_on_one_node_by_one_router_is_not_loaded_on_another_by_the_other(
    cluster: Cluster,
) -> None:
    """Router two is asked for m1 while router one's load of it on node-a runs (node-a says so; router two has not
    heard yet): it waits for that load rather than loading m1 on node-b, which has room."""
    one, two = await cluster.router(), await cluster.router()
    for name, host in (("node-a", "127.0.0.2"), ("node-b", "127.0.0.3")):
        sup = await cluster.node(name, host, ["m1"])
        sup.start_delay = 1.0
    first = asyncio.create_task(one.chat("m1"))
    await until(lambda: _running(cluster.nodes["node-a"], "m1"))
    second = await two.chat("m1")
    assert [second.status_code, (await first).status_code] == [200, 200]
    assert cluster.starts("node-a") == ["m1"] and cluster.starts("node-b") == []
    assert (await second.get_json())["who"] == "node-a.m1"


async def _running(sup: FakeSupervisor, model: str) -> bool:
    return model in sup.running


async def test_a_request_right_after_a_node_dies_is_served_by_another_node(cluster: Cluster) -> None:
    """The node and its model's server die together, and the next request comes before any health check could
    notice: its first try fails to connect, and that failure (counted) makes the router probe the node, find it
    dead and load the model on the other node: the client gets its answer, not a 502."""
    from route.errors import BackendError

    router = await cluster.router()
    await cluster.node("node-a", "127.0.0.2", ["m1"])
    await cluster.node("node-b", "127.0.0.3", ["m1"])
    assert (await (await router.chat("m1")).get_json())["who"] == "node-a.m1"
    await cluster.nodes["node-a"].__aexit__(None, None, None)  # its control API is gone
    cluster.fake.behaviour["http://127.0.0.2:10001"] = BackendError("connection refused")  # and its model's server
    answer = await router.chat("m1")
    assert answer.status_code == 200 and (await answer.get_json())["who"] == "node-b.m1"
    assert cluster.starts("node-b") == ["m1"]
