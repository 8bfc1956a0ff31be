"""Chaos: 32 clients for 20 s, streamed and whole requests over both demo models, while one demo-think server is
SIGKILLed and the supervisor restarts it.

Every request that had not started streaming succeeds with the trained answer (the router retries it on the other
replica); every stream cut mid-way ends with an error event and [DONE]; nothing hangs past its timeout; afterwards
every backend is healthy and every queue is empty. Streams are read as raw SSE (httpx), so the test sees the
error event and the [DONE] line themselves rather than what a client library makes of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from models.demo.data import ITEMS, Item
from testkit.stack import StackProcess

pytestmark = pytest.mark.slow

CLIENTS = 32
DURATION = 20.0
KILL_AT = 5.0
REQUEST_TIMEOUT = 45.0
MODELS = ("demo-think", "demo-harmony")


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def bad(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        self.problems.append(f"{kind}: {detail}")


async def whole(client: httpx.AsyncClient, model: str, item: Item, tally: Tally) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": item.question}],
        "temperature": 0,
        "max_tokens": 200,
    }
    r = await client.post("/chat/completions", json=body)
    if r.status_code != 200:
        return tally.bad("whole_failed", f"{model} {r.status_code} {r.text[:200]}")
    content = r.json()["choices"][0]["message"]["content"]
    if content != item.answer:
        return tally.bad("wrong_answer", f"{model} {item.question!r}: {content!r}")
    tally.counts["whole_ok"] += 1


async def streamed(client: httpx.AsyncClient, model: str, item: Item, tally: Tally) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": item.question}],
        "temperature": 0,
        "max_tokens": 200,
        "stream": True,
    }
    async with client.stream("POST", "/chat/completions", json=body) as r:
        if r.status_code != 200:
            return tally.bad("stream_refused", f"{model} {r.status_code} {(await r.aread())[:200]!r}")
        chunks, error, done, content = 0, None, False, []
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                error = event["error"]
                continue
            chunks += 1
            for choice in event.get("choices", []):
                content.append(choice.get("delta", {}).get("content") or "")
    if error is not None:
        if chunks == 0:  # nothing had reached the client: the router should have retried it
            return tally.bad("stream_failed_before_start", f"{model} {error}")
        if not done:
            return tally.bad("cut_without_done", f"{model} {error}")
        tally.counts["stream_cut_cleanly"] += 1
    elif not done:
        tally.bad("stream_ended_without_done", model)
    elif "".join(content) != item.answer:
        tally.bad("wrong_answer", f"{model} {item.question!r}: {''.join(content)!r}")
    else:
        tally.counts["stream_ok"] += 1


async def client_loop(n: int, api: str, stop_at: float, tally: Tally) -> None:
    i = n
    async with httpx.AsyncClient(base_url=api, timeout=REQUEST_TIMEOUT) as client:
        while time.monotonic() < stop_at:
            model, item = MODELS[i % 2], ITEMS[(i * 7) % len(ITEMS)]
            call = streamed if (i // 2) % 2 else whole
            try:
                await asyncio.wait_for(call(client, model, item, tally), REQUEST_TIMEOUT + 5)
            except (TimeoutError, httpx.TimeoutException):
                tally.bad("hung", f"{model} {call.__name__}")
            except httpx.HTTPError as err:
                tally.bad("transport_error", f"{model} {call.__name__} {err!r}")
            i += 1


async def chaos(stack: StackProcess, victim: str) -> tuple[Tally, int]:
    tally = Tally()
    start = time.monotonic()
    clients = [asyncio.create_task(client_loop(n, stack.api, start + DURATION, tally)) for n in range(CLIENTS)]
    await asyncio.sleep(KILL_AT)
    server = stack.server(victim)
    async with httpx.AsyncClient(base_url=server["url"], timeout=5) as probe:
        for _ in range(100):  # kill it while it is generating, so there is something to cut and to retry
            if (await probe.get("/queue/status")).json()["active"] > 0:
                break
            await asyncio.sleep(0.02)
    os.kill(server["pid"], signal.SIGKILL)
    pid = server["pid"]
    await asyncio.gather(*clients)
    return tally, pid


def test_kill_a_server_under_32_clients(chaos_stack: StackProcess) -> None:
    victim = "demo-think-1"
    chaos_stack.wait_healthy()
    tally, killed = asyncio.run(chaos(chaos_stack, victim))
    counts = dict(tally.counts)
    metrics = httpx.get(chaos_stack.router + "/metrics", headers=chaos_stack.admin, timeout=5).text
    retries = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("route_retries_total{")
    )
    print(
        f"\nchaos counts ({CLIENTS} clients, {DURATION:.0f} s, SIGKILL {victim} at {KILL_AT:.0f} s): {counts}; "
        f"router retries: {retries:.0f}"
    )
    for line in tally.problems[:20]:
        print("  ", line)

    # The supervisor restarted the victim and the router has it back; nothing is left in flight anywhere.
    chaos_stack.wait_healthy(timeout=60)
    after = chaos_stack.server(victim)
    assert after["restarts"] >= 1 and after["pid"] != killed and after["last_exit"] == -signal.SIGKILL
    for server in chaos_stack.state()["servers"]:
        queue = httpx.get(server["url"] + "/queue/status", timeout=5).json()
        assert (queue["active"], queue["waiting"]) == (0, 0), (server["name"], queue)
    assert "demo-think-1 is back" in chaos_stack.console()

    assert tally.problems == []
    assert counts.get("whole_ok", 0) > 0 and counts.get("stream_ok", 0) > 0


def test_hung_server_is_restarted(chaos_stack: StackProcess) -> None:
    """SIGSTOP a server: alive but silent. The supervisor notices within its watch window and restarts it."""
    victim = "demo-harmony"
    before = chaos_stack.server(victim)
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while chaos_stack.server(victim)["pid"] == before["pid"]:
            assert time.monotonic() < deadline, "the hung server was not restarted"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(before["pid"], signal.SIGCONT)
    chaos_stack.wait_healthy(timeout=60)
    after = chaos_stack.server(victim)
    assert after["restarts"] == before["restarts"] + 1
    assert f"{victim} has not answered /health" in chaos_stack.console()
    r = httpx.post(
        chaos_stack.api + "/chat/completions",
        timeout=60,
        json={"model": victim, "messages": [{"role": "user", "content": ITEMS[0].question}], "temperature": 0},
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ITEMS[0].answer


def test_router_restart_gets_every_server_back(chaos_stack: StackProcess) -> None:
    """SIGKILL the router: the supervisor starts it again on the same port and registers every server anew."""
    before = chaos_stack.state()["router"]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (now := chaos_stack.state()["router"])["pid"] == before["pid"] or now["status"] != "healthy":
        assert time.monotonic() < deadline, "the router was not restarted"
        time.sleep(0.2)
    chaos_stack.wait_healthy(timeout=30)  # every server registered again and healthy at the new router
    assert now["url"] == before["url"] and now["restarts"] == before["restarts"] + 1
    for model in MODELS:
        r = httpx.post(
            chaos_stack.api + "/chat/completions",
            timeout=60,
            json={"model": model, "messages": [{"role": "user", "content": ITEMS[1].question}], "temperature": 0},
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ITEMS[1].answer
