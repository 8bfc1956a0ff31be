"""On-demand loading with real processes and the demo models: a RAM budget that holds one of the two demo models, so
asking for one unloads the other; one load for concurrent first requests; a request in flight blocks eviction and
the request that needs the room waits; a model too large for the budget gets 400; ttl expiry; Ctrl-C during a load.

Each demo model's server takes about 100 MiB by the stack's count (mostly the Python process), so `ram_gb = 0.15`
holds one and not two; `test_budget_holds_one_model` checks that premise from the router's own listing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from models.demo.data import ITEMS, Item
from testkit.stack import DEMO, StackProcess, alive, demo_models_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(demo_models_missing() is not None, reason=str(demo_models_missing())),
]

THINK, HARMONY, BIG = "demo-think", "demo-harmony", "demo-big"
RAM_GB = 0.15


def model(name: str, source: str, **extra: Any) -> str:
    lines = [
        f'[[models]]\nname = "{name}"\nsource = "{DEMO / source}"\nctx_size = 512\nmax_concurrent = 2\nthreads = 1'
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def start(folder: Path, budget: str, *models: str, args: tuple[str, ...] = ()) -> StackProcess:
    path = folder / "stack.toml"
    path.write_text(f"[router]\nport = 0\n{budget}\n" + "".join(models))  # the stack makes the admin key
    return StackProcess([str(path), *args], folder / "state")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    proc = start(
        tmp_path_factory.mktemp("ondemand"),
        f"[budget]\nram_gb = {RAM_GB}",
        model(THINK, "demo-think", preload=False),
        model(HARMONY, "demo-harmony", preload=False),
        model(BIG, "demo-think", preload=False, replicas=2),
    )
    yield proc
    proc.stop()
    assert proc.orphans == []


def listing(stack: StackProcess) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in httpx.get(stack.api + "/models", timeout=10).json()["data"]}


def status(stack: StackProcess) -> dict[str, str]:
    return {name: m["status"] for name, m in listing(stack).items()}


def ask(stack: StackProcess, name: str, item: Item = ITEMS[0]) -> None:
    client = OpenAI(base_url=stack.api, api_key="unused", max_retries=0, timeout=60)
    r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": item.question}], temperature=0)
    assert r.choices[0].message.content == item.answer


def loads(stack: StackProcess, name: str) -> float:
    text = httpx.get(stack.router + "/metrics", headers=stack.admin, timeout=10).text
    found = re.search(rf'^route_model_loads_total{{model="{name}",result="ok"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def unload(stack: StackProcess, name: str) -> None:
    r = httpx.post(stack.router + "/models/unload", json={"model": name}, headers=stack.admin, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "unloaded", r.text


def test_budget_holds_one_model(stack: StackProcess) -> None:
    models = listing(stack)
    budget = RAM_GB * 2**30
    think, harmony = models[THINK]["ram_bytes"], models[HARMONY]["ram_bytes"]
    assert think <= budget and harmony <= budget < think + harmony
    assert models[BIG]["ram_bytes"] > budget
    assert {m["status"] for m in models.values()} == {"unloaded"}
    assert "no model is loaded at start" in stack.console()


def test_one_model_at_a_time(stack: StackProcess) -> None:
    """A answers, then B (A unloads, B loads and answers), then A again; each unloaded server's process is gone."""
    ask(stack, THINK)
    assert status(stack) == {THINK: "loaded", HARMONY: "unloaded", BIG: "unloaded"}
    think_pid = stack.server(THINK)["pid"]
    ask(stack, HARMONY, ITEMS[1])
    assert status(stack) == {THINK: "unloaded", HARMONY: "loaded", BIG: "unloaded"}
    assert stack.server(THINK)["status"] == "unloaded" and not alive(think_pid)
    harmony_pid = stack.server(HARMONY)["pid"]
    ask(stack, THINK, ITEMS[2])
    assert status(stack) == {THINK: "loaded", HARMONY: "unloaded", BIG: "unloaded"}
    assert not alive(harmony_pid)
    console = stack.console()
    assert f"stack: unloading {THINK} (evicted to make room for {HARMONY})" in console
    assert f"stack: unloading {HARMONY} (evicted to make room for {THINK})" in console
    metrics = httpx.get(stack.router + "/metrics", headers=stack.admin, timeout=10).text
    assert f'route_model_unloads_total{{model="{THINK}",reason="evicted"}} 1.0' in metrics
    assert f'route_model_load_seconds_count{{model="{HARMONY}"}} 1.0' in metrics
    assert re.search(rf'^route_model_loaded_bytes{{memory="ram",model="{THINK}"}} [1-9]', metrics, re.M)
    assert f'route_model_loaded_bytes{{memory="ram",model="{HARMONY}"}} 0.0' in metrics


def test_concurrent_first_requests_share_one_load(stack: StackProcess) -> None:
    """5 requests at once (2 of them streamed) for a model that is not loaded: one load, 5 right answers."""
    unload(stack, HARMONY)
    before = loads(stack, HARMONY)

    async def one(client: AsyncOpenAI, item: Item, stream: bool) -> str | None:
        ask: Any = {"model": HARMONY, "messages": [{"role": "user", "content": item.question}], "temperature": 0}
        if not stream:
            r = await client.chat.completions.create(**ask)
            return r.choices[0].message.content
        parts = []  # a streamed request just starts late
        async for chunk in await client.chat.completions.create(**ask, stream=True):
            parts += [c.delta.content or "" for c in chunk.choices]
        return "".join(parts)

    async def five() -> list[str | None]:
        async with AsyncOpenAI(base_url=stack.api, api_key="unused", max_retries=0, timeout=60) as client:
            return await asyncio.gather(*(one(client, item, i % 2 == 1) for i, item in enumerate(ITEMS[:5])))

    assert asyncio.run(five()) == [item.answer for item in ITEMS[:5]]
    assert loads(stack, HARMONY) == before + 1
    assert status(stack)[HARMONY] == "loaded"


def test_request_in_flight_blocks_eviction_and_the_newcomer_waits(stack: StackProcess) -> None:
    """A stream on demo-harmony is caught half-way (its server stopped with SIGSTOP); a request for demo-think, which
    needs its room, waits instead of failing or cutting the stream; once the stream ends, demo-harmony unloads and
    demo-think loads and answers."""
    item = ITEMS[3]
    ask(stack, HARMONY, item)  # loaded, and demo-think unloaded
    pid = stack.server(HARMONY)["pid"]
    stream_events: list[str] = []
    first = threading.Event()

    def read_stream() -> None:
        body = {
            "model": HARMONY,
            "messages": [{"role": "user", "content": item.question}],
            "temperature": 0,
            "stream": True,
            "reasoning": "high",
        }
        with httpx.stream("POST", stack.api + "/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    stream_events.append(line[6:])
                    first.set()

    for _ in range(5):  # stop the server while it is streaming (an answer takes tens of milliseconds)
        stream_events.clear()
        first.clear()
        reader = threading.Thread(target=read_stream)
        reader.start()
        assert first.wait(30)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)
        if "[DONE]" not in stream_events:
            break
        os.kill(pid, signal.SIGCONT)
        reader.join(30)
    else:
        pytest.fail("could not catch a stream half-way in 5 tries")
    answer: dict[str, Any] = {}

    def ask_think() -> None:
        r = httpx.post(
            stack.api + "/chat/completions",
            timeout=60,
            json={"model": THINK, "messages": [{"role": "user", "content": ITEMS[4].question}], "temperature": 0},
        )
        answer["status"], answer["body"] = r.status_code, r.json()

    waiter = threading.Thread(target=ask_think)
    try:
        waiter.start()
        time.sleep(1.5)
        models = listing(stack)
        assert not answer and models[HARMONY]["status"] == "loaded" and models[HARMONY]["active"] == 1
        assert models[THINK]["status"] == "unloaded" and models[THINK]["waiting"] == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    reader.join(30)
    waiter.join(60)
    assert stream_events[-1] == "[DONE]" and not any('"error"' in e for e in stream_events)
    content = "".join(c["delta"].get("content") or "" for e in stream_events[:-1] for c in json.loads(e)["choices"])
    assert content == item.answer
    assert answer["status"] == 200 and answer["body"]["choices"][0]["message"]["content"] == ITEMS[4].answer
    assert status(stack)[HARMONY] == "unloaded" and not alive(pid)


def test_model_too_large_for_the_budget_gets_400(stack: StackProcess) -> None:
    r = httpx.post(
        stack.api + "/chat/completions",
        timeout=30,
        json={"model": BIG, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "model_too_large" and error["param"] == "model"
    assert "MiB of RAM" in error["message"] and "budget RAM 153.6 MiB" in error["message"]
    assert status(stack)[BIG] == "unloaded" and all(
        s["pid"] is None for s in stack.state()["servers"] if s["name"].startswith(BIG)
    )
    ask(stack, THINK)  # and the stack goes on


def test_admin_load_and_unload(stack: StackProcess) -> None:
    assert httpx.post(stack.router + "/models/load", json={"model": THINK}, timeout=10).status_code == 401
    assert httpx.post(stack.router + "/models/unload", json={"model": THINK}, timeout=10).status_code == 401
    r = httpx.post(stack.router + "/models/load", json={"model": "nope"}, headers=stack.admin, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(stack.router + "/models/load", json={"model": BIG}, headers=stack.admin, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_too_large"
    r = httpx.post(stack.router + "/models/load", json={"model": HARMONY}, headers=stack.admin, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "loaded"
    assert status(stack) == {THINK: "unloaded", HARMONY: "loaded", BIG: "unloaded"}
    unload(stack, HARMONY)
    unload(stack, HARMONY)  # idempotent
    assert set(status(stack).values()) == {"unloaded"}
    assert not any(s["pid"] for s in stack.state()["servers"])


def test_idle_model_unloads_after_its_ttl(tmp_path: Path) -> None:
    """Preloaded (loaded at start as today), then unloaded once idle for its ttl; a request loads it again."""
    proc = start(tmp_path, "", model(THINK, "demo-think", ttl=1))
    try:
        assert status(proc)[THINK] == "loaded"
        pid = proc.server(THINK)["pid"]
        deadline = time.monotonic() + 30
        while status(proc)[THINK] != "unloaded":
            assert time.monotonic() < deadline, "not unloaded after its ttl"
            time.sleep(0.2)
        assert not alive(pid) and f"stack: unloading {THINK} (idle for 1 s, its ttl)" in proc.console()
        ask(proc, THINK)
    finally:
        proc.stop()
    assert proc.orphans == []


def test_ctrl_c_during_a_load_leaves_nothing(tmp_path: Path) -> None:
    proc = start(tmp_path, "", model(THINK, "demo-think", preload=False))
    router_pid = proc.state()["router"]["pid"]
    threading.Thread(
        target=lambda: httpx.post(
            proc.api + "/chat/completions",
            timeout=60,
            json={"model": THINK, "messages": [{"role": "user", "content": "hi"}]},
        ),
        daemon=True,
    ).start()
    deadline = time.monotonic() + 30
    while not (server := proc.server(THINK))["pid"]:  # its server process exists, not yet healthy
        assert time.monotonic() < deadline, "the load did not start"
        time.sleep(0.01)
    assert server["status"] == "starting"
    assert proc.stop() == 0 and proc.orphans == []
    assert not alive(server["pid"]) and not alive(router_pid)
    state = tmp_path / "state"
    assert {s["status"] for s in proc.state()["servers"]} == {"stopped"}
    assert [p.name for p in state.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"] == []
    assert "stack: stopped" in proc.console()
