"""Nodes with real processes (issue 22): Redis, two routers sharing state in it, and two nodes (`python -m stack
--node`) on 127.0.0.2 and 127.0.0.3 whose RAM budgets hold one demo model each (ram_gb = 0.15, as
tests/e2e/test_ondemand.py), both with both demo models and nothing preloaded.

One test, in steps, since each step's processes are the next one's starting point: a node with the wrong key is
refused; both routers list the same models; demo-think through router 1 loads on one node; demo-harmony through
router 2 loads on the other rather than evicting it; router 1 is SIGKILLed and router 2 serves both; then, under
load, the node holding demo-think dies (SIGKILL of it and its servers) and demo-think answers again from the other
node, with nothing failing but what was in flight on the dead node."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.demo.data import ITEMS
from testkit.cluster import ADMIN, NodeProcess, RouterProcess
from testkit.procs import wait_until
from testkit.redis import RedisServer, redis_missing
from testkit.stack import DEMO, demo_models_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
    pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing())),
]

THINK, HARMONY = "demo-think", "demo-harmony"
STACK = "".join(
    f'[[models]]\nname = "{name}"\nsource = "{DEMO / name}"\nctx_size = 512\nmax_concurrent = 2\nthreads = 1\n'
    "preload = false\n\n"
    for name in (THINK, HARMONY)
)


def ask(router: RouterProcess, model: str, timeout: float = 60) -> tuple[int, str]:
    """(status, backend that answered) of one chat request whose answer is checked."""
    item = ITEMS[0]
    body = {"model": model, "messages": [{"role": "user", "content": item.question}], "temperature": 0}
    r = httpx.post(router.url + "/v1/chat/completions", json=body, timeout=timeout)
    if r.status_code != 200:
        return r.status_code, ""
    data = r.json()
    assert data["choices"][0]["message"]["content"] == item.answer
    return 200, data["_routing"]["backend"]


def listing(router: RouterProcess) -> dict[str, tuple[str, str]]:
    data = httpx.get(router.url + "/v1/models", timeout=10).json()["data"]
    return {d["id"]: (d["status"], d.get("node")) for d in data}


def nodes(router: RouterProcess) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in httpx.get(router.url + "/nodes", headers=ADMIN, timeout=10).json()["nodes"]}


class Load:
    """Clients asking `model` through `router` in a loop, each request noted as (start, end, status)."""

    def __init__(self, router: RouterProcess, model: str, clients: int = 2) -> None:
        self.router, self.model = router, model
        self.done: list[tuple[float, float, int, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                status, backend = ask(self.router, self.model)
            except httpx.HTTPError:
                status, backend = 0, ""
            self.done.append((began, time.monotonic(), status, backend))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_nodes_share_models_and_survive_a_router_and_a_node(tmp_path: Path, redis: RedisServer) -> None:
    stack = tmp_path / "node.toml"
    stack.write_text("[budget]\nram_gb = 0.15\n\n" + STACK)
    args = ("--health-interval", "1", "--health-timeout", "2")
    one = RouterProcess(redis.url, tmp_path / "router-1.log", *args)
    two = RouterProcess(redis.url, tmp_path / "router-2.log", *args)
    procs: list[Any] = [one, two]
    try:
        one.start()
        two.start()
        joins = [one.url, two.url]
        a = NodeProcess(stack, "127.0.0.2", joins, tmp_path / "node-a")
        b = NodeProcess(stack, "127.0.0.3", joins, tmp_path / "node-b")
        intruder = NodeProcess(stack, "127.0.0.4", joins, tmp_path / "intruder", key="x" * 32)
        procs += [a, b, intruder]
        for proc in (a, b, intruder):
            proc.start()

        # a node without the right key is refused, by both routers
        assert intruder.log_text().count("answered 401") == 2, intruder.tail()
        intruder.stop()
        assert set(nodes(one)) == set(nodes(two)) == {"127.0.0.2", "127.0.0.3"}

        # both routers list the same models, from the nodes' registrations
        want = {THINK: ("unloaded", "127.0.0.2"), HARMONY: ("unloaded", "127.0.0.2")}
        assert wait_until(lambda: listing(one) == listing(two) == want, 10), (listing(one), listing(two))

        # demo-think through router 1 loads on one node; demo-harmony through router 2 on the other, no eviction
        status, think_at = ask(one, THINK)
        assert status == 200 and think_at == "127.0.0.2.demo-think"
        status, harmony_at = ask(two, HARMONY)
        assert status == 200 and harmony_at == "127.0.0.3.demo-harmony"
        both = {THINK: ("loaded", "127.0.0.2"), HARMONY: ("loaded", "127.0.0.3")}
        assert wait_until(lambda: listing(one) == listing(two) == both, 10), (listing(one), listing(two))
        assert "unloading" not in a.log_text() + b.log_text()

        # router 1 dies: router 2 serves every model
        one.kill()
        assert ask(two, THINK) == (200, "127.0.0.2.demo-think")
        assert ask(two, HARMONY) == (200, "127.0.0.3.demo-harmony")

        # node a dies under load: demo-think answers again from node b within a minute
        load = Load(two, THINK)
        try:
            assert wait_until(lambda: len(load.done) >= 4, 30)
            killed = time.monotonic()
            a.kill_all()
            assert wait_until(lambda: any(d[3] == "127.0.0.3.demo-think" for d in load.done), 60), load.done
            back = next(d[1] for d in load.done if d[3] == "127.0.0.3.demo-think")
            wait_until(lambda: sum(1 for d in load.done if d[0] > back) >= 4, 30)
        finally:
            load.close()
        failed = [d for d in load.done if d[2] != 200]
        late = [d for d in failed if d[0] > killed]  # begun after the node died: not in flight there
        assert not late, f"{len(late)} requests begun after the kill failed: {late}; back after {back - killed:.1f} s"
        assert len(failed) <= 2  # the two clients' requests in flight on the dead node at most
        print(f"demo-think answered again from node b {back - killed:.1f} s after node a died; {len(failed)} failed")
    finally:
        for proc in reversed(procs):
            proc.close()
